"""One codec for the records a backend keeps as a blob: a msgpack map from field name to value.

A record is a frozen dataclass of ``server.store.records``. ``encode_record`` writes every field under its name;
``decode_record`` reads by name, so fields can be added anywhere in a record (with a default), reordered or dropped
without misreading data already stored: a field the class no longer has is ignored, one the blob does not have
takes the dataclass default, and a required one that is missing is a ``StoredRecordError`` naming it.

Blobs written before this codec were msgpack lists in the field order of their day. ``decode_record`` still reads them
when given that order as ``legacy`` (a frozen tuple of names, never the class's current field order, which is
exactly what may change); ``is_positional`` says a blob is one, so the backend can rewrite it by name.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Sequence
from typing import Any, TypeVar

import msgpack

from server.store.records import StoredRecordError

R = TypeVar("R")

# msgpack's array markers: fixarray (0x90-0x9f), array 16 (0xdc), array 32 (0xdd).
_ARRAY_MARKERS = frozenset([*range(0x90, 0xA0), 0xDC, 0xDD])


def encode_record(record: Any) -> bytes:
    """The record as a msgpack map by field name (bytes stay bytes, enums become their values).

    Args:
        record: a dataclass instance.

    Returns:
        The packed map.

    Raises:
        TypeError: ``record`` is not a dataclass instance.
    """
    if not dataclasses.is_dataclass(record) or isinstance(record, type):
        raise TypeError(f"the store codec encodes record dataclasses, not {type(record).__name__}")
    fields = {f.name: _plain(getattr(record, f.name)) for f in dataclasses.fields(record)}
    packed: bytes = msgpack.packb(fields, use_bin_type=True)
    return packed


def decode_record(cls: type[R], blob: bytes, *, legacy: Sequence[str] = ()) -> R:
    """The record of class ``cls`` stored in ``blob``, read by field name.

    Args:
        cls: the record dataclass.
        blob: what ``encode_record`` wrote, or (with ``legacy``) an older positional list.
        legacy: the field names of a positional blob, in the order they were written; a shorter list leaves the
            last fields to their defaults (fields were only ever appended to positional records).

    Returns:
        The record; fields of the blob that ``cls`` does not have are ignored.

    Raises:
        StoredRecordError: the blob is not msgpack, not a map (or a list with ``legacy``), or lacks a field
            ``cls`` requires.
    """
    name = cls.__name__
    try:
        value = msgpack.unpackb(blob, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise StoredRecordError(name, f"not msgpack ({exc})") from exc
    if isinstance(value, list) and legacy:
        if len(value) > len(legacy):
            raise StoredRecordError(name, f"a positional blob of {len(value)} fields; the old layout has {len(legacy)}")
        value = dict(zip(legacy, value, strict=False))
    if not isinstance(value, dict):
        raise StoredRecordError(name, f"a stored {type(value).__name__}, not a map of fields")
    record_class: type = cls  # a plain class for the caches (a bare TypeVar's type is not known to be hashable)
    known = _fields(record_class)
    missing = [f for f, required in known.items() if required and f not in value]
    if missing:
        raise StoredRecordError(name, f"the required field(s) {', '.join(missing)} are missing", missing=missing)
    enums = _enum_fields(record_class)
    kwargs = {k: enums[k](v) if k in enums and v is not None else v for k, v in value.items() if k in known}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise StoredRecordError(name, str(exc)) from exc


def is_positional(blob: bytes) -> bool:
    """Whether ``blob`` is a list (the positional form before this codec) rather than a map: cheap, no decoding."""
    return bool(blob) and blob[0] in _ARRAY_MARKERS


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


@functools.cache
def _fields(cls: type) -> dict[str, bool]:
    """Field name -> whether it is required (has no default)."""
    missing = dataclasses.MISSING
    return {f.name: f.default is missing and f.default_factory is missing for f in dataclasses.fields(cls) if f.init}


@functools.cache
def _enum_fields(cls: type) -> dict[str, type[enum.Enum]]:
    """The fields typed as an enum (or an optional one): msgpack gives back their values, the record wants them."""
    found: dict[str, type[enum.Enum]] = {}
    for name, hint in typing.get_type_hints(cls).items():
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        enums = [t for t in options if isinstance(t, type) and issubclass(t, enum.Enum)]
        if len(enums) == 1:
            found[name] = enums[0]
    return found
