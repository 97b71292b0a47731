"""Errors the hub answers a request with (as an ERROR message carrying the code), under ``CrcError``."""

from __future__ import annotations

from typing import Any

from protocol import CrcError, ErrorCode


class RequestError(CrcError):
    """A request cannot be served as asked: not found, forbidden, invalid... The peer gets code and message."""

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.details = details
