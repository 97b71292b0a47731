"""What the master SDK hands back: scenarios, machines, events, output chunks and verified results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocol import Identity, OrderState, ProtocolError, PublicKey, SignedResult
from protocol.targeting import select


@dataclass(frozen=True)
class MachineInfo:
    id: str
    name: str
    os: str
    role: str
    public_key: str
    status: str
    ips: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    last_seen: float | None = None
    former_keys: list[str] = field(default_factory=list)  # keys before rotations: older results are signed so
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> MachineInfo:
        return cls(
            raw["id"], raw["name"], raw["os"], raw["role"], raw["public_key"], raw["status"],
            list(raw.get("ips") or []), dict(raw.get("facts") or {}), raw.get("last_seen"),
            list(raw.get("former_keys") or []), dict(raw.get("labels") or {}),
        )  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    id: str
    name: str
    created: float
    cursor: int
    machines: list[MachineInfo]

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Scenario:
        return cls(
            raw["id"],
            raw["name"],
            raw["created"],
            raw["cursor"],
            [MachineInfo.from_wire(m) for m in raw["machines"]],
        )

    def machine(self, name: str) -> MachineInfo:
        for m in self.machines:
            if m.name == name:
                return m
        raise KeyError(f"scenario {self.name!r} has no machine {name!r}")

    def select(self, target: str) -> list[MachineInfo]:
        """The machines a target names (``protocol.targeting``: names, ``role:``, ``label:``, globs, lists).

        Raises:
            KeyError: a plainly named machine is not in the scenario.
        """
        return select(self.machines, target)


@dataclass(frozen=True)
class NewMachine:
    """A machine just declared in a scenario, with the private key its daemon needs (never sent to the hub)."""

    name: str
    os: str
    role: str
    identity: Identity

    @property
    def id(self) -> str:
        return self.identity.id


@dataclass(frozen=True)
class EventInfo:
    scenario: str
    cursor: int
    kind: str
    machine: str
    ts: float
    data: dict[str, Any]


@dataclass(frozen=True)
class OutputChunk:
    scenario: str
    machine: str
    order_id: str
    stream: str
    data: bytes


@dataclass(frozen=True)
class CommandResult:
    """One machine's outcome of one order. ``verified`` says the daemon's signature checked out."""

    order_id: str
    machine: str
    status: str
    exit_code: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    error: str = ""
    started: float | None = None
    finished: float | None = None
    verified: bool = False
    kind: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OrderState.SUCCEEDED.value

    @property
    def final(self) -> bool:
        if self.status == "skipped":  # a fan-out stopped before this machine got the order: nothing will come
            return True
        return OrderState(self.status).final

    @classmethod
    def from_order(cls, raw: dict[str, Any], machine: MachineInfo | None) -> CommandResult:
        """From a RESULTS_QUERY item, checking the daemon's signature when the machine's key is known."""
        name = raw.get("machine_name") or (machine.name if machine else raw.get("machine", ""))
        result = raw.get("result") or {}
        if not result.get("signature"):
            return cls(raw["id"], name, raw["state"], kind=raw.get("kind", ""))
        signed = SignedResult.from_wire(result)
        verified = False
        if machine is not None and signed.order_id == raw["id"] and signed.machine == machine.id:
            for key in (machine.public_key, *reversed(machine.former_keys)):
                try:
                    signed.verify(PublicKey.from_text(key))
                except ProtocolError:
                    continue
                verified = True
                break
        return cls(
            order_id=raw["id"], machine=name, status=signed.status.value, exit_code=signed.exit_code,
            stdout=signed.stdout, stderr=signed.stderr, stdout_truncated=signed.stdout_truncated,
            stderr_truncated=signed.stderr_truncated, error=signed.error, started=signed.started,
            finished=signed.finished, verified=verified, kind=raw.get("kind", ""),
        )  # fmt: skip


@dataclass(frozen=True)
class JobRun:
    """One machine's run of a stored job: which job (and version), who started it, and its result."""

    job: str
    version: int
    started_by: str  # the id of the master that signed the order
    result: CommandResult

    @property
    def duration(self) -> float | None:
        r = self.result
        return None if r.started is None or r.finished is None else r.finished - r.started
