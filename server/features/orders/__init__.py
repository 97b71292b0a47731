"""Orders: what masters submit and cancel, what daemons report on them, their results. ``handlers`` (the
protocol side and the service other features use: ``queue_order``, ``cancel_order``...), ``rest`` (results and
operators' commands over REST)."""

from __future__ import annotations

from dataclasses import replace

from server.features.orders import handlers, rest
from server.features.orders.handlers import cancel_order, order_summary, queue_order, refuse_long_lived

FEATURE = replace(handlers.FEATURE, routes=rest.routes)

__all__ = [
    "FEATURE",
    "cancel_order",
    "order_summary",
    "queue_order",
    "refuse_long_lived",
]
