"""The CRC wire protocol: envelope, typed messages, identities, secure sessions and signed orders.

Pure: no asyncio, no sockets, no clock or environment reads. Time and randomness are passed in by callers.
"""

from protocol.envelope import DEFAULT_MAX_FRAME, PROTOCOL_VERSION, Envelope, decode_envelope, encode_envelope
from protocol.errors import CrcError, ErrorCode, ProtocolError, RemoteError
from protocol.identity import Identity, PublicKey, fingerprint
from protocol.messages import MsgType
from protocol.orders import Order, OrderKind, OrderState, SignedResult
from protocol.session import Authenticated, ClientSession, HubSession, Role, SessionState

__all__ = [
    "DEFAULT_MAX_FRAME",
    "PROTOCOL_VERSION",
    "Authenticated",
    "ClientSession",
    "CrcError",
    "Envelope",
    "ErrorCode",
    "HubSession",
    "Identity",
    "MsgType",
    "Order",
    "OrderKind",
    "OrderState",
    "ProtocolError",
    "PublicKey",
    "RemoteError",
    "Role",
    "SessionState",
    "SignedResult",
    "decode_envelope",
    "encode_envelope",
    "fingerprint",
]
