"""Errors the hub answers a request with (as an ERROR message carrying the code), under ``CrcError``."""

from __future__ import annotations

import re
from typing import Any

from protocol import CrcError, ErrorCode


class RequestError(CrcError):
    """A request cannot be served as asked: not found, forbidden, invalid... The peer gets code and message."""

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.details = details


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def check_name(what: str, name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise RequestError(
            ErrorCode.INVALID_REQUEST,
            f"{what} name {name!r} must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
