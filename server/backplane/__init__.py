"""How hub replicas tell each other things: deliveries, cancels, revocations, events, output, presence."""

from server.backplane.base import Backplane, BackplaneUnavailable, Handler
from server.backplane.local import LocalBackplane

__all__ = ["Backplane", "BackplaneUnavailable", "Handler", "LocalBackplane"]
