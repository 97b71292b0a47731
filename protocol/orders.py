"""End-to-end signed orders (master -> daemon) and results (daemon -> master).

The hub routes and stores these but cannot forge them: an order carries the master's Ed25519 signature over
(scenario, target machine, order id, kind, body, expiry) and the daemon checks it against the master public key
in its own config; a result carries the daemon's signature, so the master can check it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from protocol.delegation import Delegation
from protocol.envelope import pack
from protocol.errors import ErrorCode, IllegalTransition, ProtocolError
from protocol.identity import Identity, PublicKey

FILE_CHUNK_SIZE = 256 * 1024

# The longest an order may stay valid. Daemons remember the ids of orders they received for four times as long
# (``clients.daemon.agent.ID_MEMORY``), so an order redelivered or replayed by a hub can never run twice while
# it is valid; a daemon refuses an order whose expiry lies further ahead (by its own clock) than this plus
# ``EXPIRY_SLACK`` (master and machine clocks differ), since it could not promise to remember it that long.
MAX_ORDER_TTL = 7 * 24 * 3600.0
EXPIRY_SLACK = 3600.0


class OrderKind(StrEnum):
    EXEC = "exec"
    PUT_FILE = "put_file"
    HOSTS = "hosts"
    UPDATE = "update"  # install another daemon build from the hub's /v1/dist/ and restart into it
    ROTATE_KEY = "rotate_key"  # make a new key pair (on the machine) and switch to it; the machine id stays
    TRUST_MASTER = "trust_master"  # from now on obey orders signed by this master key instead (master rotation)
    PING = "ping"  # answered at once, running nothing: is the machine there and obeying (like Salt's test.ping)


# What an access token's delegate key may sign (protocol.delegation): never key or trust changes, never updates.
DELEGABLE_KINDS = frozenset({OrderKind.EXEC, OrderKind.PUT_FILE, OrderKind.HOSTS, OrderKind.PING})


class OrderState(StrEnum):
    """Where an order is, as the hub records it. The last six are final."""

    QUEUED = "queued"
    DELIVERED = "delivered"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    INTERRUPTED = "interrupted"

    @property
    def final(self) -> bool:
        return self not in (OrderState.QUEUED, OrderState.DELIVERED, OrderState.RUNNING)


class OrderEvent(StrEnum):
    """What happens to an order. Delivery (and redelivery on reconnect) is not one: an order stays queued until
    its machine acknowledges it, so a session that dies in between gets it again."""

    ACKNOWLEDGE = "acknowledge"  # ORDER_ACK: the daemon journaled it, from now on the machine has it
    START = "start"  # ORDER_STARTED: the daemon began it (its acknowledgement may have been lost)
    # The daemon's signed result, one event per final status; CANCEL is also the hub's own, for an order its
    # machine never received (``server.features.orders.cancel_order``).
    SUCCEED = "succeed"
    FAIL = "fail"
    TIME_OUT = "time_out"  # the daemon's own timeout for the command
    CANCEL = "cancel"
    REJECT = "reject"  # the daemon refused it: bad signature, expired, not for it...
    INTERRUPT = "interrupt"  # the daemon stopped while it ran; never rerun


# The final status a result reports, and the event that records it.
RESULT_EVENTS: dict[OrderState, OrderEvent] = {
    OrderState.SUCCEEDED: OrderEvent.SUCCEED,
    OrderState.FAILED: OrderEvent.FAIL,
    OrderState.TIMED_OUT: OrderEvent.TIME_OUT,
    OrderState.CANCELLED: OrderEvent.CANCEL,
    OrderState.REJECTED: OrderEvent.REJECT,
    OrderState.INTERRUPTED: OrderEvent.INTERRUPT,
}

_OPEN = (OrderState.QUEUED, OrderState.DELIVERED, OrderState.RUNNING)

# Orders move forward, never back. Reports arrive out of step (an acknowledgement lost, a result resent after a
# reconnect), so a result is taken in any open state and a start without its acknowledgement; a late or repeated
# report is no transition, and the stores refuse it (``sources``).
ORDER_TRANSITIONS: dict[tuple[OrderState, OrderEvent], OrderState] = {
    (OrderState.QUEUED, OrderEvent.ACKNOWLEDGE): OrderState.DELIVERED,
    (OrderState.QUEUED, OrderEvent.START): OrderState.RUNNING,
    (OrderState.DELIVERED, OrderEvent.START): OrderState.RUNNING,
    **{(state, event): final for state in _OPEN for final, event in RESULT_EVENTS.items()},
}


def advance(state: OrderState, event: OrderEvent) -> OrderState:
    """The state ``event`` moves an order in ``state`` to.

    Raises:
        IllegalTransition: the table has no such move (the order is final, or further along).
    """
    try:
        return ORDER_TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition("order", state.value, event.value) from None


def destination(event: OrderEvent) -> OrderState:
    """Where ``event`` moves an order, from whichever state it is allowed in: each event has one destination, so a
    handler that has not read the order's state can still name it (the store checks the state, ``sources``)."""
    return _DESTINATIONS[event]


def sources(target: OrderState) -> frozenset[OrderState]:
    """The states an order may move to ``target`` from (none for ``queued``, where orders start). The stores
    check-and-set against these atomically (SQL ``state IN``, Lua), so concurrent reports cannot move one back."""
    return _SOURCES[target]


_DESTINATIONS: dict[OrderEvent, OrderState] = {event: target for (_, event), target in ORDER_TRANSITIONS.items()}
_SOURCES: dict[OrderState, frozenset[OrderState]] = {
    target: frozenset(s for (s, _), t in ORDER_TRANSITIONS.items() if t is target) for target in OrderState
}


def canonical(value: Any) -> Any:
    """A form of ``value`` whose msgpack encoding is deterministic: maps sorted by key, tuples as lists."""
    if isinstance(value, dict):
        return [[k, canonical(value[k])] for k in sorted(value, key=_key_order)]
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def _key_order(key: Any) -> tuple[str, Any]:
    """Sort map keys by type first: msgpack maps may mix str and bytes keys, which do not compare."""
    return type(key).__name__, key


def _require(raw: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = raw.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"order field {name!r} is missing or of the wrong type", field=name)
    return value


@dataclass(frozen=True)
class Order:
    """What a master asks one machine to do, signed by the master."""

    id: str
    scenario: str
    machine: str
    kind: OrderKind
    body: dict[str, Any]
    expires: float
    master: str
    signature: bytes = b""
    delegation: Delegation | None = None  # set when an access token's delegate key signed it, not the master

    def signing_payload(self) -> bytes:
        fields = ["crc-order-v1", self.scenario, self.machine, self.id, self.kind.value, canonical(self.body),
                  float(self.expires), self.master]  # fmt: skip
        if self.delegation is not None:
            fields += ["delegated", self.delegation.token]
        return pack(fields)

    def signed(self, master: Identity) -> Order:
        """This order with the master's signature."""
        unsigned = Order(self.id, self.scenario, self.machine, self.kind, self.body, self.expires, master.id)
        return Order(**{**unsigned.__dict__, "signature": master.sign(unsigned.signing_payload())})

    def signed_by_delegate(self, delegate: Identity, delegation: Delegation) -> Order:
        """This order signed by an access token's delegate key, carrying the master's delegation."""
        if self.kind not in DELEGABLE_KINDS:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"an access token cannot sign {self.kind.value} orders")
        unsigned = Order(self.id, self.scenario, self.machine, self.kind, self.body, self.expires, delegation.master,
                         delegation=delegation)  # fmt: skip
        return Order(**{**unsigned.__dict__, "signature": delegate.sign(unsigned.signing_payload())})

    def verify(self, master_key: PublicKey, machine_id: str, scenario: str, now: float) -> None:
        """What a daemon checks before doing anything.

        Raises:
            ProtocolError: BAD_SIGNATURE (not signed by this master), WRONG_TARGET (meant for another machine or
                scenario) or EXPIRED.
        """
        if self.master != master_key.id:
            raise ProtocolError(ErrorCode.BAD_SIGNATURE, "order is not from this daemon's master", master=self.master)
        if self.delegation is None:
            master_key.verify(self.signature, self.signing_payload())
        else:
            if self.kind not in DELEGABLE_KINDS:
                raise ProtocolError(ErrorCode.BAD_SIGNATURE, f"{self.kind.value} orders need the master's own key")
            self.delegation.verify(master_key, scenario, now).verify(self.signature, self.signing_payload())
        if self.machine != machine_id or self.scenario != scenario:
            raise ProtocolError(ErrorCode.WRONG_TARGET, "order is addressed to another machine", machine=self.machine)
        # Written as "not within" so that a NaN expiry (every comparison with it is False) counts as expired.
        if not now <= self.expires:
            raise ProtocolError(ErrorCode.EXPIRED, "order expired before it could run", expires=self.expires)
        if self.expires > now + MAX_ORDER_TTL + EXPIRY_SLACK:
            raise ProtocolError(
                ErrorCode.EXPIRED,
                f"order is valid for more than {MAX_ORDER_TTL / 86400:.0f} days by this machine's clock: it could "
                "not be told apart from a replay for that long",
                expires=self.expires,
            )

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "id": self.id, "scenario": self.scenario, "machine": self.machine, "kind": self.kind.value,
            "body": self.body, "expires": self.expires, "master": self.master, "signature": self.signature,
        }  # fmt: skip
        if self.delegation is not None:
            wire["delegation"] = self.delegation.to_wire()
        return wire

    @classmethod
    def from_wire(cls, raw: Any) -> Order:
        """Raises ProtocolError BAD_FIELD for a malformed order."""
        if not isinstance(raw, dict):
            raise ProtocolError(ErrorCode.BAD_FIELD, "an order is a map")
        try:
            kind = OrderKind(_require(raw, "kind", str))
        except ValueError:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"unknown order kind {raw['kind']!r}") from None
        return cls(
            id=_require(raw, "id", str),
            scenario=_require(raw, "scenario", str),
            machine=_require(raw, "machine", str),
            kind=kind,
            body=_require(raw, "body", dict),
            expires=float(_require(raw, "expires", (int, float))),
            master=_require(raw, "master", str),
            signature=_require(raw, "signature", bytes),
            delegation=None if raw.get("delegation") is None else Delegation.from_wire(raw["delegation"]),
        )


@dataclass(frozen=True)
class SignedResult:
    """What a daemon reports for an order, signed by the daemon's key."""

    order_id: str
    scenario: str
    machine: str
    status: OrderState
    exit_code: int | None
    started: float | None
    finished: float
    error: str = ""
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    signature: bytes = b""

    def signing_payload(self) -> bytes:
        d = self.to_wire()
        d.pop("signature")
        # Times travel as floats (``from_wire`` converts), so sign them as floats even if built from ints.
        d["finished"] = float(self.finished)
        d["started"] = None if self.started is None else float(self.started)
        return pack(["crc-result-v1", canonical(d)])

    def signed(self, daemon: Identity) -> SignedResult:
        return SignedResult(**{**self.__dict__, "signature": daemon.sign(self.signing_payload())})

    def verify(self, machine_key: PublicKey) -> None:
        """Raises ProtocolError BAD_SIGNATURE if the machine did not sign this result."""
        machine_key.verify(self.signature, self.signing_payload())

    def to_wire(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_wire(cls, raw: Any) -> SignedResult:
        """Raises ProtocolError BAD_FIELD for a malformed result."""
        if not isinstance(raw, dict):
            raise ProtocolError(ErrorCode.BAD_FIELD, "a result is a map")
        try:
            status = OrderState(_require(raw, "status", str))
        except ValueError:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"unknown result status {raw['status']!r}") from None
        exit_code = raw.get("exit_code")
        started = raw.get("started")
        if exit_code is not None and not isinstance(exit_code, int):
            raise ProtocolError(ErrorCode.BAD_FIELD, "result exit_code must be an integer or nil")
        if started is not None and not isinstance(started, int | float):
            raise ProtocolError(ErrorCode.BAD_FIELD, "result started must be a number or nil")
        return cls(
            order_id=_require(raw, "order_id", str),
            scenario=_require(raw, "scenario", str),
            machine=_require(raw, "machine", str),
            status=status,
            exit_code=exit_code,
            started=None if started is None else float(started),
            finished=float(_require(raw, "finished", (int, float))),
            error=_require(raw, "error", str),
            stdout=_require(raw, "stdout", bytes),
            stderr=_require(raw, "stderr", bytes),
            stdout_truncated=_require(raw, "stdout_truncated", bool),
            stderr_truncated=_require(raw, "stderr_truncated", bool),
            extra=_require(raw, "extra", dict),
            signature=_require(raw, "signature", bytes),
        )


def file_chunks(data: bytes, chunk_size: int = FILE_CHUNK_SIZE) -> list[bytes]:
    """Split file content into chunks that each fit a frame."""
    return [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
