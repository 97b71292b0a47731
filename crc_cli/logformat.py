"""Log lines as JSON objects (one per record) for log shippers, and the switch between them and plain text.

Shared by every command (``crc``, ``crc hub``, ``crc-daemon``). The record carries its own time, so no clock (nor
``datetime``) is read here.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_OWN_KEYS = frozenset({"ts", "level", "logger", "message", "exc", "stack"})


def iso_utc(seconds: float, millis: int | None = None) -> str:
    """``seconds`` since the epoch as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (``millis`` overrides the fraction)."""
    whole = int(seconds // 1)
    ms = int((seconds - whole) * 1000) if millis is None else millis
    days, rest = divmod(whole, 86400)
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    # Howard Hinnant's civil_from_days: the proleptic Gregorian date of a day count, in integers only.
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{ms:03d}Z"


def _serialisable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, ``exc`` / ``stack`` if any, and the ``extra`` fields.

    Extra fields that JSON cannot encode are left out rather than failing the log call.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": iso_utc(record.created, int(record.msecs)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:  # cached as logging.Formatter does: handlers share a record
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key in _STANDARD_ATTRS or key in _OWN_KEYS or key.startswith("_"):
                continue
            if _serialisable(value):
                entry[key] = value
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: int | str, fmt: str, text_format: str) -> None:
    """Log to stderr at ``level``, as JSON lines or as ``text_format``, replacing the root logger's handlers.

    Raises:
        ValueError: ``fmt`` is neither "text" nor "json".
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (expected one of {', '.join(LOG_FORMATS)})")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
