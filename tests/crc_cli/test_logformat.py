"""JSON log lines: one object per record with time, level, logger and message, exceptions and extras."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crc_cli.logformat import JsonFormatter, configure_logging, iso_utc


def record(msg: str = "hello %s", args: tuple[Any, ...] = ("world",), **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("crc.test", logging.WARNING, __file__, 10, msg, args, None)
    rec.created, rec.msecs = 1_700_000_000.25, 250.0
    rec.__dict__.update(extra)
    return rec


def test_a_record_becomes_one_json_object_on_one_line() -> None:
    line = JsonFormatter().format(record())
    assert "\n" not in line
    assert json.loads(line) == {
        "ts": "2023-11-14T22:13:20.250Z",
        "level": "WARNING",
        "logger": "crc.test",
        "message": "hello world",
    }


def test_exception_info_is_in_exc() -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        rec = record()
        rec.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(rec))
    assert entry["exc"].startswith("Traceback (most recent call last):")
    assert entry["exc"].rstrip().endswith("ValueError: bad value")
    assert entry["message"] == "hello world"


def test_serialisable_extras_are_kept_and_others_left_out() -> None:
    rec = record(machine="web", count=3, tags=["a", "b"], blob=object(), level="not-overriding")
    entry = json.loads(JsonFormatter().format(rec))
    assert (entry["machine"], entry["count"], entry["tags"]) == ("web", 3, ["a", "b"])
    assert "blob" not in entry
    assert entry["level"] == "WARNING"


def test_extras_given_through_the_logging_api(capsys: pytest.CaptureFixture[str], root_restored: None) -> None:
    configure_logging(logging.INFO, "json", "%(message)s")
    logging.getLogger("crc.hub").info("machine %s ready", "web", extra={"scenario": "shop"})
    logging.getLogger("crc.hub").debug("below the level")
    (line,) = capsys.readouterr().err.splitlines()
    entry = json.loads(line)
    assert {k: entry[k] for k in ("level", "logger", "message", "scenario")} == {
        "level": "INFO", "logger": "crc.hub", "message": "machine web ready", "scenario": "shop",
    }  # fmt: skip


def test_text_format_replaces_the_handlers_and_keeps_the_given_format(root_restored: None) -> None:
    root = logging.getLogger()
    root.addHandler(logging.StreamHandler(io.StringIO()))
    configure_logging("WARNING", "text", "%(levelname)s %(name)s: %(message)s")
    (handler,) = root.handlers
    assert root.level == logging.WARNING
    assert handler.formatter is not None
    assert handler.formatter.format(record()) == "WARNING crc.test: hello world"


def test_an_unknown_format_is_refused(root_restored: None) -> None:
    with pytest.raises(ValueError, match="xml"):
        configure_logging(logging.INFO, "xml", "%(message)s")


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@given(st.integers(min_value=-(10**10), max_value=10**11), st.integers(min_value=0, max_value=999))
def test_iso_utc_matches_datetime(seconds: int, millis: int) -> None:
    expected = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds, milliseconds=millis)
    assert iso_utc(seconds + millis / 1000, millis) == expected.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis:03d}Z"
