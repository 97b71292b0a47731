"""Reconnection policy: backoff with jitter as a pure generator, and which errors are worth retrying."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from protocol.errors import ErrorCode, ProtocolError, RemoteError

# Retrying cannot fix these: the peer does not know us or we are not allowed. Anything else (network errors,
# a hub restarting, a stale clock that NTP will fix) is worth another try.
_PERMANENT = {ErrorCode.UNKNOWN_IDENTITY.value, ErrorCode.REVOKED.value, ErrorCode.UNSUPPORTED_VERSION.value}


def backoff_delays(
    random_unit: Callable[[], float],
    *,
    initial: float = 0.5,
    factor: float = 2.0,
    maximum: float = 30.0,
) -> Iterator[float]:
    """Endless delays growing ``initial * factor**n`` up to ``maximum``, with "full jitter".

    Full jitter (a uniform draw between half and all of the step) spreads a crowd of daemons that lost the same
    hub so they do not all come back in the same instant.

    Args:
        random_unit: returns a float in [0, 1) (``random.random``).
    """
    step = initial
    while True:
        yield step * (0.5 + random_unit() / 2)
        step = min(step * factor, maximum)


def is_retryable(error: BaseException) -> bool:
    """Whether reconnecting after this error can succeed without a human changing something."""
    if isinstance(error, ProtocolError):
        return error.code.value not in _PERMANENT
    if isinstance(error, RemoteError):
        return error.code not in _PERMANENT
    return isinstance(error, OSError | EOFError | ConnectionError | TimeoutError)
