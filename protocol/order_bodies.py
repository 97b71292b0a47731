"""The body of each order kind, typed: what a master signs into an order and what a daemon then does.

An order's body travels as a plain map (it is signed as one, ``protocol.orders.canonical``); a master builds it
from one of these dataclasses' ``to_wire()``, and a daemon reads it back with ``parse_body`` after checking the
signature, before anything runs. Parsing is strict: a field of the wrong type, a missing one, or one this
version does not know is refused with BAD_FIELD naming it, so a daemon older than its master says so instead of
silently ignoring, say, a new option; nothing runs on a body it does not fully understand.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import PublicKey
from protocol.orders import FILE_CHUNK_SIZE, OrderKind, file_chunks
from protocol.sealed_files import (
    CHUNK_BYTES,
    DIGEST_BYTES,
    KEY_BYTES,
    MAX_CHUNK_BYTES,
    PUT_ID_BYTES,
    chunk_count,
    sealed_size,
)
from protocol.sealing import OVERHEAD, Purpose, SealContext

SHELLS = ("sh", "powershell")

# Secret parameters of a command (``ExecBody.secrets``): each is handed to it as an environment variable, so its
# name is one; a value is at least MIN_SECRET_BYTES long (a shorter one could not be redacted from output without
# masking ordinary text: ``clients.daemon.redaction``) and at most MAX_SECRET_BYTES (a password, a token, a key;
# whole files are for ``crc put``).
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_SECRETS = 32
MIN_SECRET_BYTES = 4
MAX_SECRET_BYTES = 8192
MAX_SEALED_SECRET = MAX_SECRET_BYTES + OVERHEAD

T = TypeVar("T")


def _refuse(kind: OrderKind, name: str, wanted: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FIELD, f"{kind.value} order field {name!r} must be {wanted}", field=name)


class _Fields:
    """Reads one raw body, remembering which fields were read, so the rest can be refused as unknown."""

    def __init__(self, kind: OrderKind, raw: Mapping[str, Any]) -> None:
        if not isinstance(raw, Mapping):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"a {kind.value} order's body must be a map", field="body")
        self.kind, self.raw, self.read = kind, raw, set[str]()

    def get(self, name: str, check: Callable[[Any], bool], wanted: str, default: Any = ...) -> Any:
        self.read.add(name)
        if name not in self.raw or (self.raw[name] is None and default is None):
            if default is ...:
                raise ProtocolError(
                    ErrorCode.BAD_FIELD, f"{self.kind.value} order lacks field {name!r} ({wanted})", field=name
                )
            return default
        value = self.raw[name]
        if (isinstance(value, bool) and "bool" not in wanted) or not check(value):
            raise _refuse(self.kind, name, wanted)
        return value

    def done(self, body: T) -> T:
        unknown = sorted(str(name) for name in self.raw if name not in self.read)
        if unknown:
            raise ProtocolError(
                ErrorCode.BAD_FIELD,
                f"{self.kind.value} order has fields this daemon does not know: {', '.join(unknown)} "
                "(a newer master? update the daemon)",
                field=unknown[0],
            )
        return body


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


def _is_int(value: Any) -> bool:
    return isinstance(value, int)


def _is_hex_digest(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _without_none(wire: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in wire.items() if value is not None}


def secret_context(scenario: str, machine: str, order_id: str, name: str) -> SealContext:
    """What a secret parameter named ``name`` of order ``order_id`` for ``machine`` is sealed under."""
    return SealContext(Purpose.SECRET, scenario, machine, order_id, name)


def _are_secrets(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) <= MAX_SECRETS
        and all(
            isinstance(name, str) and SECRET_NAME.match(name) is not None and isinstance(sealed, bytes)
            and OVERHEAD < len(sealed) <= MAX_SEALED_SECRET
            for name, sealed in value.items()
        )
    )  # fmt: skip


@dataclass(frozen=True)
class ExecBody:
    """Run a command in a shell: the platform's own (``shell`` None), ``sh`` or ``powershell``. ``job`` and
    ``job_version`` mark a stored job's script, ``plan_step`` the plan step the order belongs to.

    ``secrets`` maps environment variable names to values sealed to the one machine the order is for
    (``protocol.sealing``, context ``secret_context``): the daemon opens them, hands them to the command in its
    environment only, and redacts them from its output. Sealed under the order's id and inside the order's
    signature, a ciphertext neither opens nor verifies anywhere else."""

    command: str
    shell: str | None = None
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None  # the command's own limit on the machine; None (or <= 0 as sent): none
    job: str | None = None
    job_version: int | None = None
    plan_step: str | None = None
    secrets: Mapping[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ProtocolError(
                ErrorCode.BAD_FIELD, f"{both[0]} is both a plain and a secret variable of the command", field="env"
            )

    def to_wire(self) -> dict[str, Any]:
        return _without_none({
            "command": self.command, "shell": self.shell, "cwd": self.cwd, "env": dict(self.env),
            "timeout": self.timeout, "job": self.job, "job_version": self.job_version, "plan_step": self.plan_step,
            # Left out when there are none, so that a daemon from before secrets still takes every other command.
            "secrets": dict(self.secrets) or None,
        })  # fmt: skip

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> ExecBody:
        fields = _Fields(OrderKind.EXEC, raw)
        env = fields.get("env", lambda v: isinstance(v, Mapping), "a map of names to strings", None) or {}
        if not all(isinstance(k, str) and isinstance(v, str | int | float) for k, v in env.items()):
            raise _refuse(OrderKind.EXEC, "env", "a map of names to strings")
        timeout = fields.get("timeout", _is_number, "a number of seconds or null", None)
        return fields.done(cls(
            command=fields.get("command", _is_str, "a string"),
            shell=fields.get("shell", lambda v: v in SHELLS or v == "", f"one of {', '.join(SHELLS)} or null", None)
            or None,
            cwd=fields.get("cwd", _is_str, "a path or null", None) or None,
            env={k: str(v) for k, v in env.items()},
            timeout=float(timeout) if timeout is not None and timeout > 0 else None,
            job=fields.get("job", _is_str, "a job name or null", None) or None,
            job_version=fields.get("job_version", _is_int, "an integer or null", None),
            plan_step=fields.get("plan_step", _is_str, "a step id or null", None) or None,
            secrets=dict(fields.get(
                "secrets", _are_secrets,
                f"a map of at most {MAX_SECRETS} variable names (letters, digits, _) to sealed values of at most "
                f"{MAX_SEALED_SECRET} bytes", None,
            ) or {}),
        ))  # fmt: skip


def file_context(scenario: str, machine: str, order_id: str, path: str) -> SealContext:
    """What the content key of a sealed file written to ``path`` by order ``order_id`` is sealed under."""
    return SealContext(Purpose.FILE, scenario, machine, order_id, path)


SEALED_CONTENT_KEY = KEY_BYTES + DIGEST_BYTES + OVERHEAD  # a ``ContentKey`` sealed with HPKE


@dataclass(frozen=True)
class SealedContent:
    """How a sealed file's content travels (``protocol.sealed_files``): ``key`` is its ``ContentKey`` sealed to
    the one machine of the order (``file_context``), ``put`` the put's random id, ``size`` the content's own size
    and ``chunk_size`` the content bytes per chunk (the last one may be shorter)."""

    key: bytes
    put: bytes
    size: int
    chunk_size: int = CHUNK_BYTES

    def to_wire(self) -> dict[str, Any]:
        return {"key": self.key, "put": self.put, "size": self.size, "chunk_size": self.chunk_size}

    @classmethod
    def from_wire(cls, raw: Any) -> SealedContent:
        fields = _Fields(OrderKind.PUT_FILE, raw)
        return fields.done(cls(
            key=fields.get("key", lambda v: isinstance(v, bytes) and len(v) == SEALED_CONTENT_KEY,
                           f"a sealed content key of {SEALED_CONTENT_KEY} bytes"),
            put=fields.get("put", lambda v: isinstance(v, bytes) and len(v) == PUT_ID_BYTES,
                           f"a put id of {PUT_ID_BYTES} bytes"),
            size=fields.get("size", lambda v: _is_int(v) and v >= 0, "a size in bytes"),
            chunk_size=fields.get("chunk_size", lambda v: _is_int(v) and 0 < v <= MAX_CHUNK_BYTES,
                                  f"a chunk size of 1 to {MAX_CHUNK_BYTES} bytes"),
        ))  # fmt: skip


@dataclass(frozen=True)
class PutFileBody:
    """Write a file atomically; its content travels in ``chunks`` chunks beside the order, bound by its size and
    SHA-256 (``for_content``).

    A sealed file (``sealed`` set, ``for_sealed``) travels encrypted: ``sha256``, ``size`` and ``chunks`` are
    then those of the ciphertext, which is what the hub holds and checks the upload against; the content's own
    SHA-256 is sealed with its key, and its size is ``sealed.size``. A daemon from before sealed files refuses
    such a body (a field it does not know) instead of writing ciphertext."""

    path: str
    sha256: str
    size: int
    chunks: int
    mode: int = 0o644
    sealed: SealedContent | None = None

    def __post_init__(self) -> None:
        sealed = self.sealed
        if sealed is not None and (
            self.chunks != chunk_count(sealed.size, sealed.chunk_size)
            or self.size != sealed_size(sealed.size, sealed.chunk_size)
        ):
            raise ProtocolError(
                ErrorCode.BAD_FIELD,
                f"a sealed file of {sealed.size} bytes in chunks of {sealed.chunk_size} travels as "
                f"{chunk_count(sealed.size, sealed.chunk_size)} chunks, "
                f"{sealed_size(sealed.size, sealed.chunk_size)} bytes",
                field="chunks",
            )

    @classmethod
    def for_content(cls, path: str, data: bytes, mode: int, chunk_size: int = FILE_CHUNK_SIZE) -> PutFileBody:
        return cls(path, hashlib.sha256(data).hexdigest(), len(data), len(file_chunks(data, chunk_size)), mode)

    @classmethod
    def for_sealed(cls, path: str, mode: int, sealed: SealedContent, sealed_sha256: str) -> PutFileBody:
        """The body of a sealed file whose ciphertext (as uploaded) has SHA-256 ``sealed_sha256``."""
        count, size = chunk_count(sealed.size, sealed.chunk_size), sealed_size(sealed.size, sealed.chunk_size)
        return cls(path, sealed_sha256, size, count, mode, sealed)

    def to_wire(self) -> dict[str, Any]:
        # A plain file's body is exactly what it was before sealed files, so older daemons take it as before.
        wire = {"path": self.path, "mode": self.mode, "size": self.size, "sha256": self.sha256, "chunks": self.chunks}
        if self.sealed is not None:
            wire["sealed"] = self.sealed.to_wire()
        return wire

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> PutFileBody:
        fields = _Fields(OrderKind.PUT_FILE, raw)
        sealed = fields.get("sealed", lambda v: isinstance(v, Mapping), "a map (the sealed content) or null", None)
        return fields.done(cls(
            path=fields.get("path", lambda v: isinstance(v, str) and v != "", "a path"),
            sha256=fields.get("sha256", _is_hex_digest, "a SHA-256 in lower-case hex"),
            size=fields.get("size", lambda v: _is_int(v) and v >= 0, "a size in bytes"),
            chunks=fields.get("chunks", lambda v: _is_int(v) and v >= 1, "a chunk count of at least 1"),
            mode=fields.get("mode", lambda v: _is_int(v) and 0 <= v <= 0o7777, "a file mode (0 to 0o7777)", 0o644),
            sealed=None if sealed is None else SealedContent.from_wire(sealed),
        ))  # fmt: skip


@dataclass(frozen=True)
class HostsBody:
    """Rewrite the machine's block of hosts entries: each ``{"ip": ..., "names": [...]}``, checked in full by the
    daemon (``clients.daemon.hosts.parse_entries``) before the file is touched."""

    entries: tuple[Mapping[str, Any], ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {"entries": [dict(entry) for entry in self.entries]}

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> HostsBody:
        fields = _Fields(OrderKind.HOSTS, raw)
        entries = fields.get("entries", lambda v: isinstance(v, list), "a list of entries", None) or []
        if not all(isinstance(entry, Mapping) for entry in entries):
            raise _refuse(OrderKind.HOSTS, "entries", 'a list of {"ip": ..., "names": [...]} maps')
        return fields.done(cls(tuple(entries)))


@dataclass(frozen=True)
class UpdateBody:
    """Install the daemon build ``wheel`` from the hub's ``/v1/dist/`` with the dependencies ``lock`` pins (each
    bound by its SHA-256), then restart into it."""

    wheel: str
    sha256: str
    lock: str
    lock_sha256: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+\.whl", self.wheel):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"{self.wheel!r} is not a wheel file name", field="wheel")
        if not re.fullmatch(r"crc-runtime-[0-9a-f]{16}\.lock", self.lock):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"{self.lock!r} is not a runtime lock name", field="lock")
        for name, digest in (("sha256", self.sha256), ("lock_sha256", self.lock_sha256)):
            if not _is_hex_digest(digest):
                raise ProtocolError(ErrorCode.BAD_FIELD, f"{name} must be 64 lower-case hex digits", field=name)

    def to_wire(self) -> dict[str, Any]:
        return {"wheel": self.wheel, "sha256": self.sha256, "lock": self.lock, "lock_sha256": self.lock_sha256}

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> UpdateBody:
        fields = _Fields(OrderKind.UPDATE, raw)
        wheel, sha256 = fields.get("wheel", _is_str, "a wheel name"), fields.get("sha256", _is_str, "a SHA-256")
        lock, lock_sha256 = fields.get("lock", _is_str, "a lock name"), fields.get("lock_sha256", _is_str, "a SHA-256")
        return fields.done(cls(wheel, sha256, lock, lock_sha256))


@dataclass(frozen=True)
class TrustMasterBody:
    """From now on obey ``master_key``. ``epoch`` grows with every rotation of a master (the master uses the
    rotation's time in nanoseconds): a daemon applies a TRUST_MASTER only if its epoch is greater than that of the
    key it obeys, so orders redelivered or replayed in another order can never move it back to an older key."""

    master_key: PublicKey
    epoch: int

    def __post_init__(self) -> None:
        if isinstance(self.epoch, bool) or not isinstance(self.epoch, int) or self.epoch <= 0:
            raise ProtocolError(ErrorCode.BAD_FIELD, "a master rotation's epoch is a positive integer", field="epoch")

    def to_wire(self) -> dict[str, Any]:
        return {"master_public_key": self.master_key.to_text(), "epoch": self.epoch}

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> TrustMasterBody:
        fields = _Fields(OrderKind.TRUST_MASTER, raw)
        try:
            epoch = fields.get("epoch", lambda v: _is_int(v) and v > 0, "a positive integer")
        except ProtocolError:
            raise ProtocolError(
                ErrorCode.BAD_FIELD,
                "this master rotation carries no epoch, so it could undo a later one: rotate again from an "
                "up-to-date crc",
                field="epoch",
            ) from None
        key = PublicKey.from_text(fields.get("master_public_key", _is_str, "a public key"))
        return fields.done(cls(key, epoch))


@dataclass(frozen=True)
class EmptyBody:
    """ROTATE_KEY (make a new key pair on the machine and switch to it) and PING (answer at once, run nothing)
    carry nothing beyond the order itself."""

    def to_wire(self) -> dict[str, Any]:
        return {}


def _empty(kind: OrderKind) -> Callable[[Mapping[str, Any]], EmptyBody]:
    def parse(raw: Mapping[str, Any]) -> EmptyBody:
        return _Fields(kind, raw).done(EmptyBody())

    return parse


OrderBody = ExecBody | PutFileBody | HostsBody | UpdateBody | TrustMasterBody | EmptyBody

PARSERS: dict[OrderKind, Callable[[Mapping[str, Any]], OrderBody]] = {
    OrderKind.EXEC: ExecBody.from_wire,
    OrderKind.PUT_FILE: PutFileBody.from_wire,
    OrderKind.HOSTS: HostsBody.from_wire,
    OrderKind.UPDATE: UpdateBody.from_wire,
    OrderKind.TRUST_MASTER: TrustMasterBody.from_wire,
    OrderKind.ROTATE_KEY: _empty(OrderKind.ROTATE_KEY),
    OrderKind.PING: _empty(OrderKind.PING),
}


def parse_body(kind: OrderKind, raw: Mapping[str, Any]) -> OrderBody:
    """The typed body of an order of ``kind``.

    Raises:
        ProtocolError: BAD_FIELD naming the field that is missing, of the wrong type, or unknown.
    """
    return PARSERS[kind](raw)
