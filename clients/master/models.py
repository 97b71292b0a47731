"""What the master SDK hands back: scenarios, machines, events, output chunks and verified results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property
from typing import Any

from protocol import ErrorCode, Identity, OrderState, ProtocolError, PublicKey, SignedResult
from protocol.certificates import MachineCertificate, ReadyStatement, addresses_from_facts, key_chain
from protocol.events import EventPayload, from_wire
from protocol.sealed_orders import open_result
from protocol.sealing import SealingPrivateKey
from protocol.targeting import select


@dataclass(frozen=True)
class MachineInfo:
    """A machine as this master knows it. ``trusted``: the hub's record carries this master's certificate for it
    (``protocol.certificates``), so its id, name, os, role, labels and keys are the master's own word; only then
    does the SDK send it orders. ``ips`` (and ``facts``) are the machine's own signed report, or empty."""

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
    trusted: bool = True
    problem: str = ""  # why it is not trusted
    certificate: MachineCertificate | None = field(default=None, compare=False, repr=False)
    # What secrets for it are sealed to: from this master's certificate or the machine's signed key rotations
    # (``protocol.certificates.key_chain``); "" for a machine made (or rotated by a daemon) before sealing keys.
    sealing_key: str = ""

    @property
    def sealed(self) -> bool:
        """Its master certified it as a machine of a sealed scenario (``protocol.sealed_orders``)."""
        return self.certificate is not None and self.certificate.sealed

    @classmethod
    def from_wire(cls, raw: dict[str, Any], master_key: PublicKey, scenario: str) -> MachineInfo:
        """The hub's record, believed only as far as this master's certificate and the machine's signatures go."""
        status, last_seen = str(raw.get("status", "")), raw.get("last_seen")
        try:
            certificate = MachineCertificate.from_wire(raw.get("certificate"))
            certificate.verify(master_key, scenario)
        except ProtocolError as exc:
            return cls(
                str(raw.get("id", "")), str(raw.get("name", "")), str(raw.get("os", "")), str(raw.get("role", "")),
                str(raw.get("public_key", "")), status, last_seen=last_seen, labels=_labels(raw.get("labels")),
                trusted=False,
                problem=f"the hub's record of it is not this master's ({exc.message})",
            )  # fmt: skip
        chain = key_chain(certificate, list(raw.get("key_proofs") or []))
        keys = chain.keys
        facts = _signed_facts(raw, keys, scenario, certificate.machine)
        return cls(
            certificate.machine, certificate.name, certificate.os, certificate.role, keys[-1].to_text(), status,
            addresses_from_facts(facts), facts, last_seen, [k.to_text() for k in keys[:-1]], dict(certificate.labels),
            certificate=certificate, sealing_key=chain.sealing_key,
        )  # fmt: skip


def _opened_result(
    sealed: bytes, signed: SignedResult, verified: bool, openers: Sequence[SealingPrivateKey]
) -> dict[str, Any]:
    """A sealed result's output and error, or why they are not shown."""
    if not verified:
        return {"error": "sealed result not shown: its signature is not its machine's"}
    try:
        return open_result(sealed, openers, scenario=signed.scenario, machine=signed.machine,
                           order_id=signed.order_id)  # fmt: skip
    except ProtocolError:
        return {
            "error": "sealed result: it does not open with this master's sealing keys (sealed to another master, "
            "or to a key this master had before a rotation it no longer keeps)"
        }


def _count(raw: Any) -> int:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0 else 0


def _labels(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def _signed_facts(raw: dict[str, Any], keys: list[PublicKey], scenario: str, machine: str) -> dict[str, Any]:
    """The facts the hub shows, if one of the machine's keys signed them; else none."""
    proof, facts = raw.get("ready_proof"), raw.get("facts")
    if not isinstance(proof, dict) or not isinstance(facts, dict):
        return {}
    at, signature = proof.get("at"), proof.get("signature")
    if not isinstance(at, int | float) or not isinstance(signature, bytes):
        return {}
    statement = ReadyStatement(scenario, machine, facts, float(at), signature)
    for key in reversed(keys):
        try:
            statement.verify(key, scenario, machine)
        except ProtocolError:
            continue
        return dict(facts)
    return {}


@dataclass(frozen=True)
class Scenario:
    id: str
    name: str
    created: float
    cursor: int
    machines: list[MachineInfo]

    @property
    def sealed(self) -> bool:
        """Some machine of it is certified sealed: then the scenario is (a master seals a scenario whole)."""
        return any(m.trusted and m.sealed for m in self.machines)

    @classmethod
    def from_wire(cls, raw: dict[str, Any], master_key: PublicKey, asked: str) -> Scenario:
        """The hub's answer about scenario ``asked``, its machines checked against this master's certificates.

        Raises:
            ProtocolError: BAD_SIGNATURE when the answer is about another scenario than the one asked.
        """
        if raw.get("name") != asked:
            raise ProtocolError(
                ErrorCode.BAD_SIGNATURE, f"asked about scenario {asked!r}, the hub answered about {raw.get('name')!r}"
            )
        machines: dict[str, MachineInfo] = {}
        for item in raw["machines"]:
            machine = MachineInfo.from_wire(item, master_key, asked)
            if machine.trusted and any(m.trusted and m.name == machine.name for m in machines.values()):
                machine = replace(machine, trusted=False, problem="the hub shows two machines of this name")
            machines.setdefault(machine.id if machine.trusted else f"untrusted:{len(machines)}", machine)
        return cls(raw["id"], asked, raw["created"], raw["cursor"], list(machines.values()))

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
    sealed: bool = False  # its scenario is sealed: its daemon config says so

    @property
    def id(self) -> str:
        return self.identity.id


@dataclass(frozen=True)
class EventInfo:
    """One event of a scenario's log. ``kind`` is a ``protocol.events.EventKind`` value (or a newer hub's kind this
    client does not know); ``data`` the map as the hub sent it, ``payload`` the same typed."""

    scenario: str
    cursor: int
    kind: str
    machine: str
    ts: float
    data: dict[str, Any]

    @cached_property
    def payload(self) -> EventPayload | None:
        """The typed data, or None for a kind this client does not know or data that does not fit its kind: a
        watcher shows such an event from ``kind`` and ``data`` rather than stopping at it."""
        try:
            return from_wire(self.kind, self.data)
        except ProtocolError:
            return None


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
    redacted: int = 0  # occurrences of secret values the daemon masked in its output (as it signed)

    @property
    def ok(self) -> bool:
        return self.status == OrderState.SUCCEEDED.value

    @property
    def final(self) -> bool:
        if self.status == "skipped":  # a fan-out stopped before this machine got the order: nothing will come
            return True
        return OrderState(self.status).final

    @classmethod
    def from_order(
        cls, raw: dict[str, Any], machine: MachineInfo | None, openers: Sequence[SealingPrivateKey] = ()
    ) -> CommandResult:
        """From a RESULTS_QUERY item, checking the daemon's signature when the machine's key is known; a sealed
        result's output and error are opened with the first of ``openers`` (this master's sealing keys, current
        first) that opens them, once it verified."""
        # The name is this master's (from its certificate), never the hub's label for the record.
        name = machine.name if machine is not None else str(raw.get("machine_name") or raw.get("machine", ""))
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
        shown: dict[str, Any] = {"stdout": signed.stdout, "stderr": signed.stderr, "error": signed.error,
                 "stdout_truncated": signed.stdout_truncated, "stderr_truncated": signed.stderr_truncated}  # fmt: skip
        sealed = signed.extra.get("sealed")
        if isinstance(sealed, bytes):
            shown = {**shown, **_opened_result(sealed, signed, verified, openers)}
        return cls(
            order_id=raw["id"], machine=name, status=signed.status.value, exit_code=signed.exit_code,
            stdout=shown["stdout"], stderr=shown["stderr"], stdout_truncated=shown["stdout_truncated"],
            stderr_truncated=shown["stderr_truncated"], error=shown["error"], started=signed.started,
            finished=signed.finished, verified=verified, kind=raw.get("kind", ""),
            redacted=_count(signed.extra.get("redacted")),
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


class PlayOutcome(StrEnum):
    """Where a member stands with a composition (``crc job performances``)."""

    PLAYED = "played"  # it ran and succeeded
    FAILED = "failed"  # it ran and failed, timed out, was interrupted (never rerun), refused or cancelled
    PLAYING = "playing"  # running now
    WAITING = "waiting"  # queued or delivered: the machine is offline, or busy with earlier orders
    PENDING = "pending"  # selected, but not a member yet (it waits for approval) or not queued yet
    UNVERIFIED = "unverified"  # a result whose signature is not its machine's: no proof that it ran


@dataclass(frozen=True)
class Performance:
    """One machine's play of a composition: its outcome and, once it ran, the daemon-signed result."""

    composition: str
    job: str
    version: int | None
    machine: str
    outcome: PlayOutcome
    result: CommandResult | None = None

    @property
    def duration(self) -> float | None:
        r = self.result
        return None if r is None or r.started is None or r.finished is None else r.finished - r.started

    @classmethod
    def of(cls, composition: str, job: str, version: int | None, machine: str, result: CommandResult | None
           ) -> Performance:  # fmt: skip
        if result is None:
            return cls(composition, job, version, machine, PlayOutcome.PENDING)
        status = result.status
        if status == OrderState.RUNNING.value:
            outcome = PlayOutcome.PLAYING
        elif status in (OrderState.QUEUED.value, OrderState.DELIVERED.value):
            outcome = PlayOutcome.WAITING
        elif status == OrderState.SUCCEEDED.value:
            outcome = PlayOutcome.PLAYED if result.verified else PlayOutcome.UNVERIFIED
        else:  # failed, timed out, interrupted (never rerun), refused or cancelled
            outcome = PlayOutcome.FAILED
        return cls(composition, job, version, machine, outcome, result)
