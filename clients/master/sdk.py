"""The async master SDK: what scenario scripts use to drive their machines through the hub.

async with await Master.connect("http://127.0.0.1:8750") as master:
    created = await master.create_scenario("shop", [("mysql", "linux"), ("web", "linux")])
    ...start daemons with configs written from ``created``...
    await master.wait_ready("shop", timeout=120)
    for r in await master.run("shop", "all", "uname -a"):
        print(r.machine, r.exit_code, r.stdout.decode())
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import random
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from clients.link import HubLink, LinkClosed, new_id
from clients.master.enrollment import TokenInfo, read_tokens
from clients.master.enrollment import certificates as enrolled_certificates
from clients.master.fanout import SKIPPED, TIMED_OUT, FanOut, amount
from clients.master.former_keys import FormerSealingKeys
from clients.master.job_versions import JobVersions
from clients.master.keys import default_key_path, load_master_key
from clients.master.models import (
    CommandResult,
    EventInfo,
    JobRun,
    MachineInfo,
    NewMachine,
    OutputChunk,
    Performance,
    Scenario,
)
from clients.master.revocations import RevokedTokens
from clients.master.sealed_puts import SealedPut
from clients.master.secret_params import (
    SealedSecrets,
    SecretRefused,
    SecretValues,
    checked_secrets,
    sealing_refusal,
)
from protocol import (
    CrcError,
    Envelope,
    ErrorCode,
    Identity,
    MsgType,
    Order,
    OrderKind,
    OrderState,
    ProtocolError,
    PublicKey,
    RemoteError,
    Role,
)
from protocol.boot import report_key
from protocol.certificates import MachineCertificate
from protocol.compositions import Composition
from protocol.delegation import DELEGATION_LIFETIME, Delegation
from protocol.enrollment import EnrollmentClaims, EnrollmentToken
from protocol.events import CommandFinished, EventKind, MachineKeyRotated
from protocol.jobs import ANY_SCENARIO, JobStatement
from protocol.messages import (
    Body,
    CompositionAssign,
    CompositionList,
    CompositionPerformances,
    CompositionUnassign,
    DistPut,
    EnrollCreate,
    EnrollList,
    EnrollRevoke,
    Error,
    Event,
    EventsSubscribe,
    EventsUnsubscribe,
    FileChunk,
    JobDelete,
    JobList,
    JobPut,
    JobShow,
    KvGet,
    KvSet,
    KvWait,
    MachineAdd,
    MachineCertify,
    MachineRevoke,
    MasterRekey,
    MsgSend,
    OrderCancel,
    OrderSubmit,
    Output,
    PlanCancel,
    PlanList,
    PlanShow,
    PlanSubmit,
    ResultsQuery,
    ScenarioCreate,
    ScenarioDelete,
    ScenarioList,
    ScenarioShow,
    TokenCreate,
    TokenList,
    TokenRenew,
    TokenRevoke,
    master_rekey_payload,
)
from protocol.order_bodies import ExecBody, HostsBody, PutFileBody, TrustMasterBody
from protocol.orders import MAX_ORDER_TTL, canonical, file_chunks
from protocol.parameters import JobParameter, ParameterType, check_parameters, resolve
from protocol.plans import Plan, parse_plan, plan_to_wire, validate
from protocol.retry import backoff_delays, is_retryable
from protocol.sealed_orders import SEALED_KINDS, open_output, seal_body
from protocol.sealing import SealingKey, SealingPrivateKey, sealing_key
from protocol.signed_values import SignedValue, ValueKind, WriterKind, untrusted_message, verify_value
from protocol.tokens import AccessToken, TokenRole

log = logging.getLogger(__name__)

DEFAULT_ORDER_TTL = 24 * 3600.0
OutputCallback = Callable[[OutputChunk], Awaitable[None] | None]
MachineDecl = tuple[str, str] | tuple[str, str, str] | tuple[str, str, str, dict[str, str]]


_REPEATABLE = {
    MsgType.KV_GET,
    MsgType.KV_WAIT,
    MsgType.SCENARIO_LIST,
    MsgType.SCENARIO_SHOW,
    MsgType.RESULTS_QUERY,
    MsgType.EVENTS_SUBSCRIBE,
    MsgType.EVENTS_UNSUBSCRIBE,
    MsgType.ORDER_SUBMIT,
}


WAIT_READY_RESYNC = 10.0  # wait_ready re-reads the scenario this often, in case an event was missed
_REFUSED_FOR_GOOD = {ErrorCode.UNKNOWN_IDENTITY.value, ErrorCode.REVOKED.value}


class PerMachineBody(Protocol):
    """Makes each machine's order body itself (``secret_params.SealedSecrets`` seals secrets to each,
    ``sealed_puts.SealedPut`` a file's content key)."""

    def refusal(self, scenario: str, machines: Sequence[MachineInfo]) -> str | None:
        """Why these targets cannot be sent such a body (then nothing is signed); None if they can."""

    def body(self, scenario: str, machine: MachineInfo, order_id: str) -> dict[str, Any]:
        """The body of ``machine``'s order ``order_id``."""


class MasterError(CrcError):
    """A master-side failure that is not the hub's answer (timeouts waiting for machines, bad targets...)."""


class UnsignedJobError(MasterError):
    """The hub's copy of a job was stored before jobs were signed; ``record`` is what the hub holds (unverified),
    so it can be shown as such and added again."""

    def __init__(self, message: str, record: dict[str, Any]) -> None:
        super().__init__(message)
        self.record = record


@dataclass
class TokenRenewal:
    """What ``Master.renew_tokens`` did: the token ids renewed, and why others were not (by id)."""

    renewed: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class _Consumer:
    scenario: str
    cursor: int
    queue: asyncio.Queue[EventInfo | OutputChunk] = field(default_factory=asyncio.Queue)


class Master:
    """A connected master. Build it with ``Master.connect``; it reconnects by itself and resumes event streams."""

    def __init__(
        self,
        url: str,
        identity: Identity,
        link: HubLink,
        *,
        pin: str = "",
        ca_file: str | None = None,
        revoked: RevokedTokens | None = None,
        job_versions: JobVersions | None = None,
        former_sealing: FormerSealingKeys | None = None,
    ) -> None:
        self.url = url
        # The highest version of each stored job this master signed or verified: on its computer (None: a master
        # made from a bare key), and in this session, so an older signed version handed back is refused.
        self.job_versions = job_versions
        # This master's sealing keys before rotations (sealed results of orders sent then still open).
        self.former_sealing = former_sealing
        self._job_versions_seen: dict[str, int] = {}
        # Tokens this master revoked, kept on its own computer: never renewed whatever the hub lists (None: a
        # master made from a bare key keeps no such memory and trusts the hub's "revoked").
        self.revoked = revoked
        self.pin = pin
        self.ca_file = ca_file
        self.identity = identity
        self._link: HubLink | None = link
        self._connected = asyncio.Event()
        self._connected.set()
        self._consumers: dict[str, set[_Consumer]] = defaultdict(set)
        self._closing = False
        self._refused: RemoteError | None = None  # the hub refused this master for good (removed, revoked)
        self._scenarios: dict[str, Scenario] = {}
        self._resubscribing: asyncio.Task[None] | None = None
        self._reader = asyncio.create_task(self._read_loop(), name="master-reader")

    @classmethod
    async def connect(
        cls,
        url: str,
        key: Identity | str | Path | None = None,
        *,
        timeout: float = 10.0,
        pin: str = "",
        ca_file: str | None = None,
    ) -> Master:
        """Connect and authenticate to the hub at ``url`` with the master key (default: ``crc keygen``'s file).

        ``pin`` (``sha256:<hex>``, from ``crc hub init-tls``) accepts only that TLS certificate; ``ca_file`` trusts
        a CA bundle instead of the system's.

        Raises:
            RemoteError: the hub does not know this key (enrol it with ``crc hub enroll-master``).
            OSError / TimeoutError: the hub is unreachable.
        """
        identity = key if isinstance(key, Identity) else load_master_key(key)
        key_path = None if isinstance(key, Identity) else Path(key) if key else default_key_path()
        revoked = None if key_path is None else RevokedTokens.beside(key_path)
        job_versions = None if key_path is None else JobVersions.beside(key_path)
        former_sealing = None if key_path is None else FormerSealingKeys.beside(key_path)
        link = await HubLink.connect(url, identity, Role.MASTER, open_timeout=timeout, pin=pin, ca_file=ca_file)
        return cls(
            url,
            identity,
            link,
            pin=pin,
            ca_file=ca_file,
            revoked=revoked,
            job_versions=job_versions,
            former_sealing=former_sealing,
        )

    async def __aenter__(self) -> Master:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        self._closing = True
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        if self._link is not None:
            await self._link.close("master closed")

    # plumbing
    async def _read_loop(self) -> None:
        delays = backoff_delays(random.random, initial=0.2, maximum=5.0)
        while not self._closing:
            link = self._link
            if link is None:
                try:
                    link = await HubLink.connect(
                        self.url, self.identity, Role.MASTER, pin=self.pin, ca_file=self.ca_file
                    )
                except Exception as exc:
                    if isinstance(exc, RemoteError) and exc.code in _REFUSED_FOR_GOOD:
                        # Removed or revoked: retrying cannot help; every request fails at once from now on.
                        log.error("the hub refuses this master: %s", exc)
                        self._refused = exc
                        self._connected.set()  # wake waiting requests so they see the refusal
                        return
                    if not is_retryable(exc):
                        log.error("cannot reconnect to the hub: %s", exc)
                    await asyncio.sleep(next(delays))
                    continue
                self._link = link
                self._connected.set()
                delays = backoff_delays(random.random, initial=0.2, maximum=5.0)
                self._resubscribing = asyncio.create_task(self._resubscribe())
            try:
                while True:
                    self._route(await link.recv())
            except (LinkClosed, CrcError, OSError) as exc:
                # The link failed its pending requests with this reason; the repeatable ones are sent again
                # once the next link is up (request()).
                log.info("lost the hub (%s); reconnecting", exc)
                self._connected.clear()
                self._link = None
                await asyncio.sleep(next(delays))

    def _route(self, envelope: Envelope) -> None:
        body = envelope.body
        if envelope.reply_to and envelope.type in (MsgType.RESPONSE, MsgType.ERROR):
            pass  # the link hands answers to their requests; this one's request gave up (timed out, cancelled)
        elif isinstance(body, Event):
            info = EventInfo(body.scenario, body.cursor, body.kind, body.machine, body.ts, body.data)
            for consumer in self._consumers.get(body.scenario, ()):
                if info.cursor > consumer.cursor:
                    consumer.cursor = info.cursor
                    consumer.queue.put_nowait(info)
        elif isinstance(body, Output):
            data = body.data
            if body.sealed:
                try:
                    data = open_output(data, self._opening_keys(), scenario=envelope.scenario,
                                       order_id=body.order_id, stream=body.stream)  # fmt: skip
                except ProtocolError:
                    log.warning("a sealed output chunk of order %s does not open with this master's key", body.order_id)
                    return
            chunk = OutputChunk(envelope.scenario, body.machine, body.order_id, body.stream, data)
            for consumer in self._consumers.get(envelope.scenario, ()):
                consumer.queue.put_nowait(chunk)
        elif isinstance(body, Error):
            log.warning("hub: %s: %s", body.code, body.message)

    async def _resubscribe(self) -> None:
        for scenario, consumers in list(self._consumers.items()):
            if consumers:
                with contextlib.suppress(CrcError):
                    await self.request(EventsSubscribe(scenario, min(c.cursor for c in consumers)), scenario=scenario)

    async def request(self, body: Body, *, scenario: str = "", timeout: float = 30.0) -> dict[str, Any]:
        """Send one request and wait for its answer.

        Requests that are safe to repeat (reads, subscriptions, and order submits, which the hub de-duplicates
        by order id) are sent again once the connection is back, within ``timeout``.

        Raises:
            RemoteError: the hub answered with an error (``code`` says which).
            LinkClosed: the connection dropped before the answer came (the request may or may not have run).
        """
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._request_once(body, scenario, max(0.1, deadline - time.monotonic()))
            except LinkClosed:
                if body.TYPE not in _REPEATABLE or self._closing or time.monotonic() >= deadline:
                    raise
                log.info("connection lost during %s; sending it again once reconnected", body.TYPE.value)
            except RemoteError as exc:
                if attempt > 1 and body.TYPE is MsgType.ORDER_SUBMIT and exc.code == ErrorCode.ALREADY_EXISTS:
                    assert isinstance(body, OrderSubmit)
                    return {"order_id": body.order["id"], "state": "queued"}  # the first attempt got through
                raise

    async def _request_once(self, body: Body, scenario: str, timeout: float) -> dict[str, Any]:
        await asyncio.wait_for(self._connected.wait(), timeout)
        if self._refused is not None:
            raise self._refused
        link = self._link
        if link is None:
            raise LinkClosed("not connected")
        return await link.request(body, scenario=scenario, timeout=timeout)

    # scenarios
    async def create_scenario(
        self, name: str, machines: Iterable[MachineDecl], *, sealed: bool = False
    ) -> list[NewMachine]:
        """Declare a scenario and its machines, minting one key pair per machine locally.

        Args:
            machines: ``(name, os)``, ``(name, os, role)`` or ``(name, os, role, labels)``; os is ``linux`` or
                ``windows``; labels (a dict of strings) are what ``label:KEY=VALUE`` targets select.
            sealed: the hub never reads its commands, hosts entries, file contents or output
                (``protocol.sealed_orders``): every machine's certificate says so, and its daemon config.

        Returns:
            the machines with their private keys, to be written into daemon configs.
        """
        minted, wire = self._mint(name, machines, sealed=sealed)
        await self._remember(name, await self.request(ScenarioCreate(name, wire), scenario=name))
        return minted

    async def add_machines(
        self, scenario: str, machines: Iterable[MachineDecl], *, sealed: bool | None = None
    ) -> list[NewMachine]:
        """Grow a scenario: machines declared as in ``create_scenario`` (keys minted here, certified by this
        master) join it offline, to be started with their daemon configs. ``revoke_machine`` removes one.
        ``sealed``: as the scenario's machines are (None: as this master's certificates of them say).

        Raises:
            RemoteError: ALREADY_EXISTS for a name the scenario has (nothing is added), NOT_FOUND for no scenario.
            MasterError: unsealed machines asked for in a sealed scenario.
        """
        sealed = await self._sealed_as(scenario, sealed)
        minted, wire = self._mint(scenario, machines, sealed=sealed)
        await self._remember(scenario, await self.request(MachineAdd(scenario, wire), scenario=scenario))
        return minted

    async def _sealed_as(self, scenario: str, asked: bool | None) -> bool:
        """Whether what joins ``scenario`` is sealed: ``asked``, checked against the certificates of its machines
        (a sealed scenario takes no unsealed machine); None: as those say."""
        sealed = (await self.scenario(scenario)).sealed
        if asked is False and sealed:
            raise MasterError(f"scenario {scenario!r} is sealed: its machines are too (leave out sealed=False)")
        return sealed if asked is None else asked

    def _mint(
        self, scenario: str, machines: Iterable[MachineDecl], *, sealed: bool = False
    ) -> tuple[list[NewMachine], list[dict[str, Any]]]:
        """A key pair per declared machine, and how the hub is told of them: public keys and certificates."""
        minted = []
        labels: dict[str, dict[str, str]] = {}
        for decl in machines:
            name_, os_ = decl[0], decl[1]
            role = decl[2] if len(decl) > 2 else name_
            labels[name_] = dict(decl[3]) if len(decl) > 3 else {}
            minted.append(NewMachine(name_, os_, role, Identity.generate(secrets.token_bytes), sealed))
        wire = [
            {
                "name": m.name, "os": m.os, "role": m.role, "public_key": m.identity.public.to_text(),
                "report_key": report_key(m.identity).hex(), "labels": labels[m.name],
                "certificate": self._certify(scenario, m.name, m.identity.public, m.os, m.role, labels[m.name],
                                             sealing_key(m.identity).to_text(), sealed).to_wire(),
            }
            for m in minted
        ]  # fmt: skip
        return minted, wire

    async def _remember(self, name: str, data: dict[str, Any]) -> None:
        """Keep the scenario the hub answered with (checked against this master's certificates)."""
        if data.get("more"):  # one page of its machines: fetch them all
            await self.scenario(name)
        else:
            self._scenarios[name] = self._checked(data, name)

    def _certify(
        self,
        scenario: str,
        name: str,
        key: PublicKey,
        os_name: str,
        role: str,
        labels: dict[str, str],
        sealing: str = "",
        sealed: bool = False,
    ) -> MachineCertificate:
        """This master's signed word on a machine: what later answers of the hub are checked against. ``sealing``:
        the machine's sealing key (``protocol.sealing``), known here for the machines this master minted."""
        certificate = MachineCertificate(scenario, name, key.id, key.to_text(), os_name, role, dict(labels),
                                         sealing_key=sealing, sealed=sealed)  # fmt: skip
        return certificate.endorsed(self.identity)

    def _checked(self, data: dict[str, Any], asked: str) -> Scenario:
        try:
            return Scenario.from_wire(data, self.identity.public, asked)
        except ProtocolError as exc:
            raise MasterError(exc.message) from None

    async def scenarios(self) -> list[dict[str, Any]]:
        return list((await self.request(ScenarioList()))["scenarios"])

    async def scenario(self, name: str) -> Scenario:
        """The scenario and all its machines (fetched a page at a time). Machines that joined with one of this
        master's enrollment tokens are certified first (``certify_joined``)."""
        scenario = await self._fetch_scenario(name)
        if any(not m.trusted for m in scenario.machines):
            try:
                certified = await self.certify_joined(name)
            except RemoteError as exc:  # a hub without enrollment: the untrusted stay untrusted
                log.debug("cannot check for enrolled machines of %s: %s", name, exc)
                certified = []
            if certified:
                scenario = await self._fetch_scenario(name)
        return scenario

    async def _fetch_scenario(self, name: str) -> Scenario:
        data = await self.request(ScenarioShow(name), scenario=name)
        machines = list(data["machines"])
        while data.get("more") and machines:
            data = await self.request(ScenarioShow(name, after=str(machines[-1]["name"])), scenario=name)
            machines += data["machines"]
        scenario = self._checked({**data, "machines": machines}, name)
        self._scenarios[name] = scenario
        return scenario

    async def adopt_scenario(self, name: str) -> list[str]:
        """Certify, as the hub shows them now, the machines of a scenario that carry no certificate of this master
        (made before machines were certified): trust on first use, so run it only against a hub you trust now.
        Returns the names certified."""
        sc = await self.scenario(name)
        certificates = []
        for machine in sc.machines:
            if machine.trusted:
                continue
            first_key = PublicKey.from_text(machine.public_key)
            if first_key.id != machine.id:
                continue  # rotated before certificates existed: its first key is not known here
            certificates.append(
                self._certify(name, machine.name, first_key, machine.os, machine.role, machine.labels).to_wire()
            )
        if not certificates:
            return []
        answer = await self.request(MachineCertify(name, certificates), scenario=name)
        await self.scenario(name)
        return list(answer["certified"])

    # enrollment (clients/master/enrollment.py, protocol/enrollment.py)
    async def create_enrollment(
        self,
        scenario: str,
        role: str,
        *,
        labels: dict[str, str] | None = None,
        uses: int = 1,
        ttl: float = 24 * 3600.0,
        approve: bool = False,
        sealed: bool | None = None,
    ) -> EnrollmentToken:
        """Issue a token with which up to ``uses`` machines join the scenario's ``role`` by themselves within
        ``ttl`` seconds (``crc-daemon enroll``); with ``approve`` each waits for ``approve_machines``. The token's
        text holds its secret: hand it only to the machines (the hub is sent the signed claims alone).
        ``sealed``: joiners belong to a sealed scenario (None: as this master's certificates of its machines say;
        give True for a sealed scenario that has none yet).

        Raises:
            MasterError: sealed=False for a scenario whose machines are certified sealed.
        """
        sealed = await self._sealed_as(scenario, sealed)
        claims = EnrollmentClaims(secrets.token_hex(8), scenario, self.identity.public, role, dict(labels or {}),
                                  uses, time.time() + ttl, approve, sealed)  # fmt: skip
        try:
            token = EnrollmentToken.issue(self.identity, claims)
        except ProtocolError as exc:
            raise MasterError(exc.message) from None
        await self.request(EnrollCreate(scenario, claims.to_wire(), token.signature), scenario=scenario)
        return token

    async def enrollments(self, scenario: str) -> list[TokenInfo]:
        """The scenario's tokens and who joined with each, as this master checks them (a token it did not sign,
        a registration it cannot verify or one beyond the token's uses is shown refused and never certified)."""
        raw = (await self.request(EnrollList(scenario), scenario=scenario))["tokens"]
        return read_tokens(self.identity, scenario, list(raw), (await self._fetch_scenario(scenario)).machines)

    async def revoke_enrollment(self, scenario: str, token_id: str) -> None:
        """No machine joins with the token any more (those that joined stay)."""
        await self.request(EnrollRevoke(scenario, token_id), scenario=scenario)

    async def certify_joined(self, scenario: str, *, approve: Iterable[str] = ()) -> list[str]:
        """Certify the machines that genuinely joined with this master's tokens, and those of ``approve`` tokens
        named in ``approve``; returns the names certified. ``scenario()`` does it by itself (not the approvals)."""
        tokens = await self.enrollments(scenario)
        issued = enrolled_certificates(self.identity, scenario, tokens, set(approve))
        if not issued:
            return []
        answer = await self.request(MachineCertify(scenario, [c.to_wire() for c in issued]), scenario=scenario)
        self._scenarios.pop(scenario, None)
        return [str(name) for name in answer["certified"]]

    async def delete_scenario(self, name: str) -> dict[str, Any]:
        """Delete a scenario: its machines' keys are revoked and their sessions closed at once."""
        self._scenarios.pop(name, None)
        return await self.request(ScenarioDelete(name), scenario=name)

    async def revoke_machine(self, scenario: str, machine: str) -> str:
        """Revoke one machine's key: its daemon is disconnected at once and can no longer connect."""
        self._scenarios.pop(scenario, None)
        return str((await self.request(MachineRevoke(scenario, machine), scenario=scenario))["revoked"])

    async def rotate_key(
        self, new_identity: Identity | None = None, *, timeout: float = 60.0
    ) -> tuple[Identity, list[CommandResult]]:
        """Move this master to a new key pair: every machine of every scenario is told, in an order signed with
        the current key, to obey the new key from now on; then the hub moves the master (its name and
        scenarios) to the new key, and this connection continues with it.

        Machines that are offline get that order first thing when they reconnect (it is queued before anything
        signed with the new key). Save the new key (``keys.write_private_key``) before calling this.

        Returns:
            the new identity, and the result of each machine's order (``queued`` for offline machines).
        """
        new = new_identity or Identity.generate(secrets.token_bytes)
        body = TrustMasterBody(new.public, time.time_ns()).to_wire()
        told: list[CommandResult] = []
        for item in await self.scenarios():
            name = str(item["name"])
            if (await self.scenario(name)).machines:
                told += await self.dispatch(name, "all", OrderKind.TRUST_MASTER, body, timeout=timeout)
        compositions: dict[str, list[Composition]] = {}
        for item in await self.scenarios():
            await self._endorse(str(item["name"]), new)
            compositions[str(item["name"])] = await self.assignments(str(item["name"]))
        jobs = await self._verified_jobs()
        if self.former_sealing is not None:  # before the move: orders sent until now reply to this key
            self.former_sealing.add(self._sealing_key())
        proof = new.sign(master_rekey_payload(self.identity.id, new.public.to_text()))
        await self.request(MasterRekey(new.public.to_text(), proof))
        self.identity = new
        link = self._link
        if link is not None:
            await link.close()  # the read loop reconnects, now with the new key
        await asyncio.wait_for(self._wait_for_link(new), timeout)
        # Stored jobs are kept per master and signed by its key: the new key signs each again (the next version)
        # so that they survive the move; one that did not verify under the old key is not carried over.
        for job in jobs:
            await self.put_job(job["name"], job["script"], shell=job["shell"], scenario=job["scenario"],
                               parameters=[JobParameter.from_wire(p) for p in job["parameters"]])  # fmt: skip
        # Compositions too, under the same ids (so no member plays one twice): plays queued before the move
        # reach their machines ahead of the rotation order and verify under the old key; later ones use these.
        for scenario, assigned in compositions.items():
            for composition in assigned:
                await self.request(CompositionAssign(scenario, composition.signed(new).to_wire()), scenario=scenario)
        return new, told

    async def _verified_jobs(self) -> list[dict[str, Any]]:
        """Every stored job whose copy on the hub this master signed (others are left behind, with a warning)."""
        verified = []
        for listed in await self.jobs():
            name = str(listed.get("name", ""))
            try:
                verified.append(await self.job(name))
            except (MasterError, RemoteError) as exc:
                log.warning("not carrying job %r over to the new key: %s", name, exc)
        return verified

    async def _endorse(self, scenario: str, new: Identity) -> None:
        """Have ``new`` endorse every certificate of the scenario that this (old) key verified, before the hub
        moves the master: from then on the certificates check out against the new key as well."""
        certificates = [
            m.certificate.endorsed(new).to_wire()
            for m in (await self.scenario(scenario)).machines
            if m.trusted and m.certificate is not None
        ]
        if certificates:
            await self.request(MachineCertify(scenario, certificates), scenario=scenario)

    async def _wait_for_link(self, identity: Identity) -> None:
        while True:
            link = self._link
            if link is not None and link.identity is identity:
                return
            await asyncio.sleep(0.05)

    async def rotate_machine_key(self, scenario: str, machine: str, *, timeout: float = 60.0) -> str:
        """Have the machine make a new key pair and switch to it; returns the new public key.

        The private half is made on the machine and never travels; the machine's id, queue and history stay.

        Raises:
            MasterError: the machine did not rotate in time (offline, or it refused the order).
        """
        deadline = time.monotonic() + timeout
        async with self._consume(scenario, -1) as consumer:
            [result] = await self.dispatch(scenario, machine, OrderKind.ROTATE_KEY, {}, timeout=timeout)
            if not result.ok:
                raise MasterError(f"{machine} did not rotate its key: {result.status} {result.error}".rstrip())
            rotated = False
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise MasterError(f"{machine} rotated its key but did not reconnect within {timeout:.0f} s")
                try:
                    event = await asyncio.wait_for(
                        self._next_event(consumer, {EventKind.MACHINE_KEY_ROTATED, EventKind.MACHINE_READY}), remaining
                    )
                except TimeoutError:
                    continue
                if event.machine != machine:
                    continue
                if isinstance(event.payload, MachineKeyRotated):
                    rotated, new_key = True, event.payload.public_key
                elif rotated and event.kind == EventKind.MACHINE_READY:
                    await self.scenario(scenario)  # refresh the cached keys
                    return new_key

    async def _known(self, name: str) -> Scenario:
        return self._scenarios.get(name) or await self.scenario(name)

    async def targets(self, scenario: str, target: str | Sequence[str]) -> tuple[Scenario, list[MachineInfo]]:
        sc = await self._known(scenario)
        spec = target if isinstance(target, str) else ",".join(target)
        try:
            machines = sc.select(spec)
        except KeyError:
            sc = await self.scenario(scenario)  # maybe stale
            try:
                machines = sc.select(spec)
            except KeyError as exc:
                raise MasterError(str(exc.args[0])) from None
        if (not machines or any(not m.trusted for m in machines)) and sc is self._scenarios.get(scenario):
            # A cached view may predate the machines it should match, or their certificates (a joiner approved
            # since, by this master elsewhere): look again before refusing.
            sc = await self.scenario(scenario)
            try:
                machines = sc.select(spec)
            except KeyError as exc:  # gone since the cached view
                raise MasterError(str(exc.args[0])) from None
        if not machines:
            raise MasterError(f"target {spec!r} matches no machine of {scenario!r}")
        untrusted = [m for m in machines if not m.trusted]
        if untrusted:
            raise MasterError(
                f"nothing was sent: machine {untrusted[0].name!r} of {scenario!r}: {untrusted[0].problem}"
                + (f" (and {len(untrusted) - 1} more)" if len(untrusted) > 1 else "")
            )
        return sc, machines

    # events
    @contextlib.asynccontextmanager
    async def _consume(self, scenario: str, after: int) -> AsyncIterator[_Consumer]:
        others = self._consumers.get(scenario)
        if others and after < 0:
            consumer = _Consumer(scenario, max(c.cursor for c in others))
            self._consumers[scenario].add(consumer)
        else:
            consumer = _Consumer(scenario, after)
            self._consumers[scenario].add(consumer)
            try:
                data = await self.request(EventsSubscribe(scenario, after), scenario=scenario)
            except BaseException:
                self._consumers[scenario].discard(consumer)
                raise
            consumer.cursor = max(consumer.cursor, int(data["after"]))
        try:
            yield consumer
        finally:
            self._consumers[scenario].discard(consumer)
            if not self._consumers[scenario] and self._link is not None and not self._closing:
                with contextlib.suppress(CrcError, asyncio.TimeoutError):
                    await self.request(EventsUnsubscribe(scenario), scenario=scenario, timeout=5)

    async def events(
        self, scenario: str, after: int = 0, *, follow: bool = True, output: bool = False
    ) -> AsyncIterator[EventInfo | OutputChunk]:
        """The scenario's events numbered above ``after`` (``-1``: only new ones), then live ones if ``follow``.

        Survives reconnects: the stream resumes from the last event seen. With ``output``, live command output
        chunks are interleaved as ``OutputChunk``.
        """
        async with self._consume(scenario, after) as consumer:
            # Not consumer.cursor alone: the reader may already have queued (and counted) events past `after`.
            start = after if after >= 0 else consumer.cursor
            head: int | None = None
            if not follow:
                head = (await self.scenario(scenario)).cursor
                if start >= head:
                    return
            while True:
                item = await consumer.queue.get()
                if isinstance(item, OutputChunk) and not output:
                    continue
                yield item
                if head is not None and isinstance(item, EventInfo) and item.cursor >= head:
                    return

    async def wait_ready(self, scenario: str, *, timeout: float = 300.0) -> Scenario:
        """Wait until every machine of the scenario reported SystemReady.

        Raises:
            MasterError: not all ready in time (the message names the machines still missing).
        """
        deadline = time.monotonic() + timeout
        async with self._consume(scenario, -1) as consumer:
            while True:
                # One snapshot, then events; not a snapshot per event (thousands of machines come up at once).
                sc = await self.scenario(scenario)
                missing = {m.name for m in sc.machines if m.status != "ready"}
                if not missing:
                    return sc
                resync = time.monotonic() + WAIT_READY_RESYNC
                while missing and time.monotonic() < resync:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise MasterError(f"not ready after {timeout:.0f} s: {', '.join(sorted(missing))}")
                    try:
                        event = await asyncio.wait_for(
                            self._next_event(consumer, {EventKind.MACHINE_READY, EventKind.MACHINE_OFFLINE}),
                            min(remaining, resync - time.monotonic()),
                        )
                    except TimeoutError:
                        continue
                    if event.kind == EventKind.MACHINE_READY:
                        missing.discard(event.machine)
                    else:
                        missing.add(event.machine)

    @staticmethod
    async def _next_event(consumer: _Consumer, kinds: set[EventKind]) -> EventInfo:
        while True:
            item = await consumer.queue.get()
            if isinstance(item, EventInfo) and item.kind in kinds:
                return item

    # orders
    def sign(
        self,
        sc: Scenario,
        machine: MachineInfo,
        kind: OrderKind,
        body: dict[str, Any],
        ttl: float,
        *,
        per_machine: PerMachineBody | None = None,
    ) -> Order:
        """An order for one machine, signed with this master's key and valid for ``ttl`` seconds. With
        ``per_machine``, its body is made for this machine and order id (secrets sealed to it) instead of ``body``.

        Raises:
            MasterError: ``ttl`` is over ``MAX_ORDER_TTL`` (daemons would refuse the order).
        """
        if not 0 < ttl <= MAX_ORDER_TTL:
            raise MasterError(
                f"nothing was sent: an order may be valid for at most {MAX_ORDER_TTL / 86400:.0f} days "
                f"(asked {ttl / 86400:.1f}); daemons refuse longer ones, which they could not tell from replays"
            )
        order_id = new_id()
        if per_machine is not None:
            body = per_machine.body(sc.name, machine, order_id)
        if machine.sealed and kind in SEALED_KINDS:
            if not machine.sealing_key:
                raise MasterError(f"nothing was sent: machine {machine.name!r} of sealed scenario {sc.name!r} has "
                                  "no sealing key this master can trust")  # fmt: skip
            body = seal_body(body, kind=kind, to=SealingKey.from_text(machine.sealing_key),
                             reply_key=self._sealing_key().public, scenario=sc.name, machine=machine.id,
                             order_id=order_id)  # fmt: skip
        order = Order(order_id, sc.name, machine.id, kind, body, time.time() + ttl, self.identity.id)
        return order.signed(self.identity)

    def _sealing_key(self) -> SealingPrivateKey:
        """This master's sealing key (sealed results and output are sealed to it), derived from its identity."""
        return SealingPrivateKey.of(self.identity)

    def _opening_keys(self) -> list[SealingPrivateKey]:
        """What a sealed result or output chunk may be sealed to: this key, then the keys before rotations."""
        former = self.former_sealing.keys() if self.former_sealing is not None else []
        return [self._sealing_key(), *former]

    async def submit(self, order: Order, upload: str = "", *, last_use: bool = False) -> str:
        """Queue one signed order (a file order names the ``upload`` holding its content; ``last_use``: no later
        order names it, so the hub may free it); returns its id."""
        data = await self.request(OrderSubmit(order.to_wire(), upload, last_use), scenario=order.scenario)
        return str(data["order_id"])

    async def upload(self, data: bytes) -> str:
        """Send file content to the hub in frame-sized chunks; returns the upload id (its SHA-256)."""
        upload_id = hashlib.sha256(data).hexdigest()
        await self._send_chunks(upload_id, file_chunks(data))
        return upload_id

    async def _send_chunks(self, upload_id: str, chunks: Iterable[bytes]) -> None:
        """Send ``chunks`` (each fits a frame) as upload ``upload_id``, pulling each as the previous one went."""
        await asyncio.wait_for(self._connected.wait(), 30)
        link = self._link
        if link is None:
            raise LinkClosed("not connected")
        for index, chunk in enumerate(chunks):
            await link.send(FileChunk(upload_id, index, chunk))

    async def publish(self, name: str, data: bytes) -> str:
        """Put a file into the hub's ``/v1/dist/`` (a daemon build, a lock) for machines to fetch; returns its
        SHA-256, which is what orders and startup scripts then bind it by."""
        digest = await self.upload(data)
        await self.request(DistPut(name, digest), timeout=120)
        return digest

    async def cancel(self, scenario: str, order_id: str) -> str:
        return str((await self.request(OrderCancel(scenario, order_id), scenario=scenario))["state"])

    async def _order_records(self, scenario: str, order_ids: list[str]) -> list[dict[str, Any]]:
        """The hub's order records (all, or ``order_ids``), a page at a time: results carry output."""
        data = await self.request(ResultsQuery(scenario, order_ids), scenario=scenario)
        orders = list(data["orders"])
        while data.get("next", -1) > 0:
            data = await self.request(ResultsQuery(scenario, order_ids, skip=int(data["next"])), scenario=scenario)
            orders += data["orders"]
        return orders

    async def results(self, scenario: str, order_ids: Sequence[str] | None = None) -> list[CommandResult]:
        """Stored results (and states of unfinished orders), daemon signatures checked."""
        sc = await self._known(scenario)
        orders = await self._order_records(scenario, list(order_ids or []))
        by_id = {m.id: m for m in sc.machines}
        if any(o["machine"] not in by_id for o in orders):
            sc = await self.scenario(scenario)
            by_id = {m.id: m for m in sc.machines}
        return [CommandResult.from_order(o, by_id.get(o["machine"]), self._opening_keys()) for o in orders]

    async def dispatch(
        self,
        scenario: str,
        target: str | Sequence[str],
        kind: OrderKind,
        body: dict[str, Any],
        *,
        upload: str = "",
        wait: bool = True,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
        ttl: float = DEFAULT_ORDER_TTL,
        fanout: FanOut | None = None,
        release_upload: bool = False,
        per_machine: PerMachineBody | None = None,
    ) -> list[CommandResult]:
        """Send one order per target machine and (unless ``wait`` is False) wait for every result.

        ``release_upload``: these are the last orders naming ``upload``; the hub frees it after the last one.

        ``per_machine``: each machine's body is made for it (``SealedSecrets``: secrets sealed to it); first it is
        asked whether every target can take one, and if one cannot, nothing is signed or sent (MasterError).

        With ``fanout`` (``clients.master.fanout.FanOut``): at most ``concurrency`` orders in flight, no new
        dispatch once more than ``max_failures`` failed, and targets cancelled after ``target_timeout``; machines
        never dispatched come back with status ``skipped``, late ones with ``timed_out``.

        Waits also while machines are offline and the orders queued, up to ``timeout`` (None: no limit);
        orders still unfinished then are returned with their current state.
        """
        sc, machines = await self.targets(scenario, target)
        if per_machine is not None and (refusal := per_machine.refusal(sc.name, machines)) is not None:
            raise MasterError(f"nothing was sent: {refusal}")
        if fanout is not None and fanout.active and wait:
            return await self._dispatch_rolling(
                sc, machines, kind, body, upload, fanout, timeout, on_output, ttl, release_upload, per_machine
            )
        async with self._consume(scenario, -1) as consumer:
            last = len(machines) - 1
            ids = [
                await self.submit(
                    self.sign(sc, m, kind, body, ttl, per_machine=per_machine), upload,
                    last_use=release_upload and i == last,
                )
                for i, m in enumerate(machines)
            ]  # fmt: skip
            if wait:
                await self._await_finished(consumer, set(ids), timeout, on_output)
        return await self.results(scenario, ids)

    async def _dispatch_rolling(
        self,
        sc: Scenario,
        machines: list[MachineInfo],
        kind: OrderKind,
        body: dict[str, Any],
        upload: str,
        fanout: FanOut,
        timeout: float | None,
        on_output: OutputCallback | None,
        ttl: float,
        release_upload: bool = False,
        per_machine: PerMachineBody | None = None,
    ) -> list[CommandResult]:
        """Dispatch under fan-out controls (``clients.master.fanout``): a window of orders in flight, a failure
        threshold that stops further dispatch, and a per-target deadline."""
        limit = amount(fanout.concurrency, len(machines)) or len(machines)
        threshold = amount(fanout.max_failures, len(machines))
        waiting = list(machines)
        in_flight: dict[str, float] = {}  # order id -> when it went out
        sent: list[tuple[str, MachineInfo]] = []
        late: set[str] = set()
        failures = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self._consume(sc.name, -1) as consumer:

            async def top_up() -> None:
                while waiting and len(in_flight) < limit and (threshold is None or failures <= threshold):
                    machine = waiting.pop(0)
                    order = self.sign(sc, machine, kind, body, ttl, per_machine=per_machine)
                    order_id = await self.submit(order, upload, last_use=release_upload and not waiting)
                    in_flight[order_id] = time.monotonic()
                    sent.append((order_id, machine))

            await top_up()
            while in_flight:
                now = time.monotonic()
                wake = [t for t in (deadline,) if t is not None]
                if fanout.target_timeout is not None:
                    wake.append(min(in_flight.values()) + fanout.target_timeout)
                try:
                    item = await asyncio.wait_for(consumer.queue.get(), max(0.0, min(wake) - now) if wake else None)
                except TimeoutError:
                    item = None
                if isinstance(item, OutputChunk):
                    if on_output is not None and item.order_id in in_flight:
                        maybe = on_output(item)
                        if maybe is not None:
                            await maybe
                    continue
                if isinstance(item, EventInfo) and isinstance(finished := item.payload, CommandFinished):
                    succeeded = finished.status == OrderState.SUCCEEDED.value
                    if in_flight.pop(finished.order_id, None) is not None and not succeeded:
                        failures += 1
                if deadline is not None and time.monotonic() >= deadline:
                    break  # overall wait over: unfinished ones are returned as they stand
                if fanout.target_timeout is not None:
                    for order_id, started in list(in_flight.items()):
                        if time.monotonic() - started >= fanout.target_timeout:
                            in_flight.pop(order_id)
                            late.add(order_id)
                            failures += 1
                            with contextlib.suppress(CrcError):
                                await self.cancel(sc.name, order_id)
                await top_up()
        results = {r.order_id: r for r in await self.results(sc.name, [order_id for order_id, _ in sent])}
        outcome: list[CommandResult] = []
        for order_id, machine in sent:
            result = results.get(order_id) or CommandResult(order_id, machine.name, "queued")
            if order_id in late and not result.ok:
                result = replace(result, status=TIMED_OUT, error=f"no result within {fanout.target_timeout:g} s")
            outcome.append(result)
        reason = f"stopped after {failures} failures (max_failures {fanout.max_failures})"
        outcome += [CommandResult("", m.name, SKIPPED, error=reason) for m in waiting]
        return outcome

    async def _await_finished(
        self, consumer: _Consumer, ids: set[str], timeout: float | None, on_output: OutputCallback | None
    ) -> None:
        pending = set(ids)

        async def collect() -> None:
            while pending:
                item = await consumer.queue.get()
                if isinstance(item, OutputChunk):
                    if on_output is not None and item.order_id in ids:
                        maybe = on_output(item)
                        if maybe is not None:
                            await maybe
                elif isinstance(finished := item.payload, CommandFinished):
                    pending.discard(finished.order_id)

        # Results that finished before we subscribed (a resumed wait) are found by asking once up front.
        for result in await self.results(consumer.scenario, list(ids)):
            if result.final:
                pending.discard(result.order_id)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(collect(), timeout)

    async def run(
        self,
        scenario: str,
        target: str | Sequence[str],
        command: str,
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        wait_timeout: float | None = None,
        on_output: OutputCallback | None = None,
        wait: bool = True,
        fanout: FanOut | None = None,
        secrets: SecretValues | None = None,
    ) -> list[CommandResult]:
        """Run a shell command on the target machines (a target: see ``protocol.targeting``).

        Args:
            timeout: the command's own time limit on the machine (killed with its whole process group).
            wait_timeout: how long to wait for results (None: until they come).
            on_output: called with each live output chunk.
            secrets: environment variables for the command whose values (bytes or str) the hub must not see:
                sealed to each machine for its order alone, and redacted by the daemon from the output (results
                say how often: ``CommandResult.redacted``).

        Raises:
            MasterError: (nothing was sent) a secret that cannot be sent as given (``secret_params``), or a
                target machine without a sealing key.
        """
        base = ExecBody(command, cwd=cwd, env=dict(env or {}), timeout=timeout)
        per_machine = _sealed_secrets(base, secrets, env)
        return await self.dispatch(
            scenario, target, OrderKind.EXEC, base.to_wire(), wait=wait, timeout=wait_timeout, on_output=on_output,
            fanout=fanout, per_machine=per_machine,
        )  # fmt: skip

    async def ping(
        self, scenario: str, target: str | Sequence[str] = "all", *, timeout: float | None = 30.0
    ) -> list[CommandResult]:
        """Ask machines to answer a signed no-op at once (nothing runs): which are there and obeying this master.
        Machines that do not answer within ``timeout`` come back with their order's state (``queued``...)."""
        return await self.dispatch(scenario, target, OrderKind.PING, {}, timeout=timeout)

    # plans
    async def run_plan(
        self,
        scenario: str,
        plan: Plan | dict[str, Any],
        *,
        ttl: float = 24 * 3600.0,
        secrets: SecretValues | None = None,
    ) -> dict[str, Any]:
        """Hand a plan to the hub, which runs it (it goes on if this master disconnects).

        Each step's target is resolved now and one order per machine is signed up front (stored jobs are
        fetched and their scripts signed in); the orders are valid for ``ttl`` seconds. ``secrets``: values for
        the steps that use them (a command step's ``secrets`` list, a job step's secret parameters), sealed to
        each machine of each such step as ``run``'s are.

        Raises:
            PlanError: a malformed plan (nothing was sent); MasterError: a target that matches no machine, a
                secret a step needs and was not given, one given that no step uses, or one that cannot be sent.
        """
        parsed = parse_plan(plan) if isinstance(plan, dict) else validate(plan)
        try:
            values = checked_secrets(secrets or {})
        except SecretRefused as exc:
            raise MasterError(f"nothing was sent: {exc}") from None
        sc = await self.scenario(scenario)
        orders: dict[str, list[dict[str, Any]]] = {}
        used: set[str] = set()
        for step in parsed.steps:
            _, machines = await self.targets(scenario, step.target)
            exec_body = ExecBody(step.command, shell=step.shell, timeout=step.timeout, plan_step=step.id)
            names = list(step.secrets)
            if step.job:
                statement = await self._signed_job(step.job, scenario=scenario, sending=True)
                names = [p.name for p in statement.parameters if p.type is ParameterType.SECRET and p.name in values]
                step_env = job_environment(statement, step.params, None, secret_names=names, where=f"step {step.id}: ")
                exec_body = replace(exec_body, command=statement.script, shell=statement.shell or None,
                                    job=statement.name, job_version=statement.version, env=step_env)  # fmt: skip
            missing = [name for name in names if name not in values]
            if missing:
                raise MasterError(f"nothing was sent: step {step.id} needs secret {', '.join(missing)} "
                                  f"(crc plan run --secret {missing[0]}=@FILE)")  # fmt: skip
            used.update(names)
            per_machine = SealedSecrets(exec_body, {n: values[n] for n in names}) if names else None
            if per_machine is not None and (refusal := per_machine.refusal(scenario, machines)) is not None:
                raise MasterError(f"nothing was sent: step {step.id}: {refusal}")
            body = exec_body.to_wire()
            orders[step.id] = [self.sign(sc, m, OrderKind.EXEC, body, ttl, per_machine=per_machine).to_wire()
                               for m in machines]  # fmt: skip
        unused = sorted(set(values) - used)
        if unused:
            raise MasterError(f"nothing was sent: no step of the plan uses secret {', '.join(unused)}")
        shown = plan_to_wire(parsed)
        if sc.sealed:  # the hub runs the plan from its shape and the sealed orders: it is not told the commands
            shown["steps"] = [{**step, "command": "(sealed)"} if "command" in step else step for step in shown["steps"]]
        submit = PlanSubmit(scenario, new_id(), shown, orders)
        return await self.request(submit, scenario=scenario)

    async def plan(self, scenario: str, plan_id: str) -> dict[str, Any]:
        return await self.request(PlanShow(scenario, plan_id), scenario=scenario)

    async def plans(self, scenario: str) -> list[dict[str, Any]]:
        return list((await self.request(PlanList(scenario), scenario=scenario))["plans"])

    async def cancel_plan(self, scenario: str, plan_id: str) -> dict[str, Any]:
        return await self.request(PlanCancel(scenario, plan_id), scenario=scenario)

    async def wait_plan(self, scenario: str, plan_id: str, *, timeout: float = 3600.0) -> dict[str, Any]:
        """Wait until the plan is done (its ``plan_finished`` event) and return its final state."""
        deadline = time.monotonic() + timeout
        async with self._consume(scenario, -1) as consumer:
            while True:
                shown = await self.plan(scenario, plan_id)
                if shown["done"]:
                    return shown
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise MasterError(f"plan {plan_id} not done after {timeout:.0f} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._next_event(consumer, {EventKind.PLAN_FINISHED}), min(remaining, 5.0))

    # scenario messages
    async def send_message(self, scenario: str, target: str, topic: str, data: bytes | str) -> list[str]:
        """Send a named message to the machines ``target`` names; returns their names. Each gets its messages in
        order; one that is offline finds them when it returns (``crc-daemon recv`` on the machine). The message is
        signed with this master's key, and receiving daemons act only on what verifies (``protocol.signed_values``)."""
        payload = data.encode() if isinstance(data, str) else data
        statement = self._signed_value(ValueKind.MESSAGE, scenario, topic, payload, target)
        answer = await self.request(MsgSend(scenario, target, topic, payload, statement), scenario=scenario)
        return list(answer["to"])

    # futures: signed by their writer, verified here against this master's own key (protocol.signed_values)
    async def kv_set(self, scenario: str, key: str, value: bytes | str, *, ttl: float = 0.0) -> None:
        """Set a per-scenario key (``ttl`` seconds; 0: it stays until the scenario goes). Waiters wake at once."""
        data = value.encode() if isinstance(value, str) else value
        statement = self._signed_value(ValueKind.KV, scenario, key, data)
        await self.request(KvSet(scenario, key, data, ttl, statement), scenario=scenario)

    async def kv_get(self, scenario: str, key: str) -> bytes | None:
        """The key's value, or None when it is not set (or expired).

        Raises:
            MasterError: the hub's value is not signed by this master or a machine it certified in ``scenario``.
        """
        try:
            answer = await self.request(KvGet(scenario, key), scenario=scenario)
        except RemoteError as exc:
            if exc.code == ErrorCode.NOT_FOUND.value and exc.details.get("key") == key:
                return None
            raise
        return self._verified_value(scenario, key, answer)

    async def kv_wait(self, scenario: str, key: str, *, timeout: float = 60.0) -> bytes:
        """Wait until the key is set (pushed by the hub, no polling) and return its value.

        Raises:
            RemoteError: ``timeout`` when it was not set in time.
            MasterError: the hub's value does not verify (then nothing is waited for any longer).
        """
        answer = await self.request(KvWait(scenario, key, timeout), scenario=scenario, timeout=timeout + 15)
        return self._verified_value(scenario, key, answer)

    def _signed_value(
        self, kind: ValueKind, scenario: str, name: str, value: bytes, target: str = ""
    ) -> dict[str, Any]:
        statement = SignedValue(kind, scenario, name, value, self.identity.id, WriterKind.MASTER, time.time(),
                                secrets.token_hex(16), target)  # fmt: skip
        return statement.signed(self.identity).to_wire()

    def _verified_value(self, scenario: str, key: str, answer: dict[str, Any]) -> bytes:
        try:
            verified = verify_value(
                answer.get("statement"), answer.get("writer"), kind=ValueKind.KV, scenario=scenario, name=key,
                master_key=self.identity.public,
            )  # fmt: skip
        except ProtocolError as exc:
            raise MasterError(untrusted_message(key, exc)) from None
        return verified.value

    # access tokens
    async def create_token(
        self, role: str = "viewer", *, scenario: str = "", ttl: float | None = 30 * 24 * 3600.0, label: str = ""
    ) -> tuple[str, dict[str, Any]]:
        """Make an access token for the REST API and dashboard; returns its text (shown once: the hub keeps
        only a hash) and its record.

        An operator token gets its own delegate key pair, a delegation signed here (limited to ``scenario``, or
        every scenario of this master) and the delegate key sealed under the token, so the hub can sign orders
        with it only while the token is presented. The delegation lasts ``DELEGATION_LIFETIME`` (less if the
        token ends sooner): ``renew_tokens`` extends it, so a token stops signing at most that long after its
        master last renewed it, whoever kept a copy.

        Args:
            role: ``viewer`` (reads only) or ``operator`` (also runs commands and plans).
            ttl: seconds until it expires; None: never (then only revoking ends it).
        """
        token = AccessToken.generate(secrets.token_bytes)
        now = time.time()
        expires = 0.0 if ttl is None else now + ttl
        delegation: dict[str, Any] | None = None
        sealed = b""
        if role == TokenRole.OPERATOR:
            delegate = Identity.generate(secrets.token_bytes)
            cert = Delegation.issue(self.identity, token.id, delegate.public.to_text(), scenario, expires, now)
            delegation = cert.to_wire()
            sealed = token.seal(delegate, secrets.token_bytes)
        body = TokenCreate(token.id, role, scenario, expires, token.secret_hash, label, delegation, sealed)
        return token.text(), await self.request(body)

    async def tokens(self) -> list[dict[str, Any]]:
        """This master's access tokens (never their secrets)."""
        return list((await self.request(TokenList()))["tokens"])

    async def revoke_token(self, token_id: str) -> None:
        """Revoke a token at once: the hub refuses it and erases its sealed signing key, and this computer never
        renews its delegation again (so daemons stop obeying it within ``DELEGATION_LIFETIME`` even if the hub
        kept the key)."""
        if self.revoked is not None:
            self.revoked.add(token_id)
        await self.request(TokenRevoke(token_id))

    async def renew_tokens(self, *, within: float = DELEGATION_LIFETIME) -> TokenRenewal:
        """Sign anew the delegations of this master's live operator tokens that end within ``within`` seconds.

        Only delegations this master signed are renewed (the same token, delegate key and scope, never past the
        token's own expiry), and never one of a token this computer revoked, whatever the hub lists.
        """
        now = time.time()
        revoked = self.revoked.ids() if self.revoked is not None else frozenset()
        renewal = TokenRenewal()
        fresh: list[dict[str, Any]] = []
        for record in await self.tokens():
            token_id = str(record.get("id", ""))
            if record.get("role") != TokenRole.OPERATOR or record.get("revoked") or token_id in revoked:
                continue
            try:
                current = Delegation.from_wire(record.get("delegation"))
                if current.token != token_id:
                    raise ProtocolError(ErrorCode.BAD_FIELD, "the hub listed another token's delegation")
                if current.issued and current.expires - now > within:
                    continue  # still fresh enough
                fresh.append(current.renewed(self.identity, now).to_wire())
            except ProtocolError as exc:
                renewal.refused[token_id] = exc.message
        if fresh:
            answer = await self.request(TokenRenew(fresh))
            renewal.renewed.extend(str(i) for i in answer.get("renewed", []))
            renewal.refused.update({str(k): str(v) for k, v in dict(answer.get("refused", {})).items()})
        return renewal

    # stored jobs: every version is a JobStatement this master signs; only one that verifies is ever used
    async def put_job(
        self,
        name: str,
        script: str,
        *,
        shell: str = "sh",
        scenario: str = ANY_SCENARIO,
        parameters: Sequence[JobParameter] = (),
    ) -> dict[str, Any]:
        """Sign and keep a named script on the hub (or replace it). Its version is this master's choice: one more
        than the highest it verified or remembers, so a hub cannot reuse a number. ``scenario`` limits it to one
        scenario (default: any of this master's). ``parameters`` (``protocol.parameters``) are signed with it; a
        run is given their values, checked against them, as environment variables of their names.

        Raises:
            MasterError: a parameter is malformed or declared twice (nothing was stored).
        """
        try:
            parameters = check_parameters(parameters)
        except ProtocolError as exc:
            raise MasterError(f"job {name!r}: {exc.message}") from None
        highest = self._highest_job_version(name)
        try:
            highest = max(highest, (await self._signed_job(name)).version)
        except MasterError:
            pass  # a copy that does not verify does not count: it is what this call replaces
        except RemoteError as exc:
            if exc.code != ErrorCode.NOT_FOUND.value:
                raise
        statement = JobStatement(self.identity.id, scenario, name, highest + 1, shell, script, time.time(),
                                 parameters=tuple(parameters))  # fmt: skip
        statement = statement.signed(self.identity)
        await self.request(JobPut(statement.unsigned_wire(), statement.signature))
        self._saw_job_version(name, statement.version)
        return _job_view(statement)

    async def jobs(self) -> list[dict[str, Any]]:
        """This master's stored jobs as the hub lists them (without their scripts, not verified: ``signed`` False
        marks a job stored before jobs were signed, which must be added again before it runs)."""
        return list((await self.request(JobList()))["jobs"])

    async def job(self, name: str, *, scenario: str | None = None, version: int | None = None) -> dict[str, Any]:
        """A stored job as this master signed it (name, shell, script, version, scenario, created); with
        ``version``, exactly that version (the hub keeps the latest only, so an older one is refused).

        Raises:
            UnsignedJobError: the hub's copy was stored before jobs were signed.
            MasterError: the hub's copy is not signed by this master, is another job, is for another scenario, or
                is older than a version this master signed or saw (or is not ``version``).
            RemoteError: ``not_found`` when the hub has no such job.
        """
        return _job_view(await self._signed_job(name, scenario=scenario, version=version))

    async def delete_job(self, name: str) -> None:
        await self.request(JobDelete(name))

    async def run_job(
        self,
        scenario: str,
        target: str | Sequence[str],
        name: str,
        *,
        version: int | None = None,
        params: Mapping[str, str] | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        wait_timeout: float | None = None,
        wait: bool = True,
        fanout: FanOut | None = None,
        on_output: OutputCallback | None = None,
        secrets: SecretValues | None = None,
    ) -> list[CommandResult]:
        """Play a stored job on the target machines: the job is fetched from the hub, and only a version this
        master signed (for this job and scenario, not older than one it saw; exactly ``version`` if given) is
        signed into the orders, marked with the job's name and version (see ``job_runs``). Offline machines run
        it when they connect.

        ``params``: values of the job's parameters (checked against them; defaults filled in); ``secrets``: those
        of its secret parameters, sealed to each machine as ``run``'s secrets are.

        Raises:
            MasterError: the hub's copy does not verify, or a parameter value is missing, unknown or of the wrong
                type, or a secret cannot be sent (nothing was sent); see ``job``.
        """
        statement = await self._signed_job(name, scenario=scenario, version=version, sending=True)
        job_env = job_environment(statement, params, env, secret_names=list(secrets or {}))
        base = ExecBody(statement.script, shell=statement.shell or None, env=job_env, timeout=timeout,
                        job=statement.name, job_version=statement.version)  # fmt: skip
        per_machine = _sealed_secrets(base, secrets, job_env)
        return await self.dispatch(
            scenario, target, OrderKind.EXEC, base.to_wire(), wait=wait, timeout=wait_timeout, on_output=on_output,
            fanout=fanout, per_machine=per_machine,
        )  # fmt: skip

    async def _signed_job(
        self, name: str, *, scenario: str | None = None, version: int | None = None, sending: bool = False
    ) -> JobStatement:
        """The hub's copy of job ``name``, once it verifies as this master's (see ``job`` for what is refused)."""
        prefix = "nothing was sent: " if sending else ""
        record = await self.request(JobShow(name))
        if record.get("statement") is None:
            raise UnsignedJobError(
                f"{prefix}job {name!r} was stored before jobs were signed: add it again "
                f"(crc job add {name} FILE) to run it",
                record,
            )
        try:
            statement = JobStatement.from_wire(record["statement"], record.get("signature"))
            statement.verify(self.identity.public, name, scenario=scenario, version=version)
        except ProtocolError as exc:
            if exc.code in (ErrorCode.WRONG_TARGET, ErrorCode.NOT_FOUND):
                # Signed by this master, but not what was asked: say which, the user can act on it.
                raise MasterError(f"{prefix}{exc.message}") from None
            raise MasterError(f"{prefix}the hub's copy of job {name!r} is not signed by this master") from None
        highest = self._highest_job_version(name)
        if version is None and statement.version < highest:
            raise MasterError(
                f"{prefix}the hub's copy of job {name!r} is version {statement.version}, older than version "
                f"{highest} this master signed: add it again (crc job add) if you mean to go back"
            )
        self._saw_job_version(name, statement.version)
        return statement

    def _highest_job_version(self, name: str) -> int:
        remembered = self.job_versions.highest().get(name, 0) if self.job_versions is not None else 0
        return max(remembered, self._job_versions_seen.get(name, 0))

    def _saw_job_version(self, name: str, version: int) -> None:
        self._job_versions_seen[name] = max(version, self._job_versions_seen.get(name, 0))
        if self.job_versions is not None:
            self.job_versions.saw(name, version)

    async def job_runs(self, scenario: str, name: str | None = None) -> list[JobRun]:
        """Every run of stored jobs in the scenario (or of one job), oldest first, per machine."""
        orders = await self._order_records(scenario, [])
        sc = await self._known(scenario)
        by_id = {m.id: m for m in sc.machines}
        runs = []
        for raw in orders:
            body = (raw.get("order") or {}).get("body") or {}
            if not body.get("job") or (name is not None and body["job"] != name):
                continue
            result = CommandResult.from_order(raw, by_id.get(raw["machine"]), self._opening_keys())
            started_by = str((raw.get("order") or {}).get("master", ""))
            runs.append(JobRun(str(body["job"]), int(body.get("job_version", 0)), started_by, result))
        return runs

    # compositions: a stored job every member of a target plays once, members that join later included
    async def assign_job(
        self,
        scenario: str,
        target: str,
        name: str,
        *,
        version: int | None = None,
        params: Mapping[str, str] | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        ttl: float | None = None,
    ) -> dict[str, Any]:
        """Assign a stored job to the machines ``target`` selects (``role:web``, ``label:tier=front``, ``all``...):
        each present member plays it once now (offline ones when they connect), each machine that joins later
        when it joins. The job is fetched and verified as in ``run_job`` and signed into a composition valid for
        ``ttl`` seconds (None: until unassigned).

        Assigning the same job, version and target again changes nothing (nobody plays twice); another version
        replaces the earlier assignment (every member plays the new one once).

        Returns ``{"composition": id, "queued": [names given it now], "waiting": {name: why not yet},
        "replaced": [ids of earlier assignments unassigned]}``.
        """
        if (await self.scenario(scenario)).sealed:
            raise MasterError(
                f"nothing was sent: scenario {scenario!r} is sealed, and a composition is signed once for every "
                "member, so it could not be sealed to each: run the job (crc job run) instead"
            )
        if not [part for part in target.split(",") if part.strip()]:
            raise MasterError("a composition needs a target (a machine, role:R, label:K=V, a glob or all)")
        statement = await self._signed_job(name, scenario=scenario, version=version, sending=True)
        body = ExecBody(
            statement.script, shell=statement.shell or None,
            env=job_environment(statement, params, env, secret_names=None), timeout=timeout, job=statement.name,
            job_version=statement.version,
        ).to_wire()  # fmt: skip
        earlier = [c for c in await self.assignments(scenario) if c.job == name and c.target == target]
        for existing in earlier:
            if canonical(existing.body) == canonical(body):
                return {"composition": existing.id, "queued": [], "waiting": {}, "replaced": [], "unchanged": True}
        now = time.time()
        composition = Composition(new_id(), self.identity.id, scenario, target, body, now,
                                  expires=0.0 if ttl is None else now + ttl).signed(self.identity)  # fmt: skip
        answer = await self.request(CompositionAssign(scenario, composition.to_wire()), scenario=scenario)
        for existing in earlier:
            await self.request(CompositionUnassign(scenario, existing.id), scenario=scenario)
        return {**answer, "replaced": [c.id for c in earlier], "unchanged": False}

    async def assignments(self, scenario: str) -> list[Composition]:
        """The scenario's compositions that this master signed (any other the hub lists is left out, logged)."""
        answer = await self.request(CompositionList(scenario), scenario=scenario)
        return [c for c in (self._own_composition(raw, scenario) for raw in answer["compositions"]) if c is not None]

    def _own_composition(self, raw: Any, scenario: str) -> Composition | None:
        try:
            composition = Composition.from_wire(raw)
            composition.verify(self.identity.public, scenario)
        except ProtocolError as exc:
            log.warning("the hub lists a composition this master did not sign: %s", exc)
            return None
        return composition

    async def unassign_job(self, scenario: str, name: str, *, target: str | None = None) -> list[dict[str, Any]]:
        """Stop giving job ``name`` (only its assignment to ``target``, if given) to members that have not played
        it; plays not delivered yet are cancelled. Returns one ``{"composition", "cancelled"}`` per assignment.

        Raises:
            MasterError: the job is not assigned in the scenario (to that target).
        """
        chosen = [c for c in await self.assignments(scenario) if c.job == name and target in (None, c.target)]
        if not chosen:
            where = "" if target is None else f" to {target!r}"
            raise MasterError(f"job {name!r} is not assigned{where} in scenario {scenario!r}")
        return [await self.request(CompositionUnassign(scenario, c.id), scenario=scenario) for c in chosen]

    async def performances(self, scenario: str, name: str) -> list[Performance]:
        """Each machine's play of job ``name`` as assigned in the scenario: who played it, who failed, who has not
        yet (``PlayOutcome``), results verified against the machines' keys as this master knows them.

        Raises:
            MasterError: the job is not assigned there, or the hub's copy of its composition is not this master's.
        """
        chosen = [c for c in await self.assignments(scenario) if c.job == name]
        if not chosen:
            raise MasterError(f"job {name!r} is not assigned in scenario {scenario!r}")
        sc = await self.scenario(scenario)  # fresh, so joiners just certified have their keys
        by_id = {m.id: m for m in sc.machines}
        found: list[Performance] = []
        for composition in chosen:
            answer = await self.request(CompositionPerformances(scenario, composition.id), scenario=scenario)
            if self._own_composition(answer["composition"], scenario) != composition:
                raise MasterError(f"the hub answered for another composition than {composition.id}")
            for item in answer["performances"]:
                play = item.get("play")
                machine = by_id.get(str(item.get("machine_id")))
                name_shown = machine.name if machine is not None else str(item.get("machine"))
                if play is not None and play.get("id") != composition.member_order_id(str(item.get("machine_id"))):
                    raise MasterError(f"the hub answered with another order for {name_shown}")
                result = None if play is None else CommandResult.from_order(play, machine, self._opening_keys())
                found.append(Performance.of(composition.id, composition.job, composition.job_version, name_shown,
                                            result))  # fmt: skip
        return found

    async def put_file(
        self,
        scenario: str,
        target: str | Sequence[str],
        content: bytes | Path,
        remote_path: str,
        *,
        mode: int = 0o644,
        wait_timeout: float | None = None,
        sealed: bool = False,
    ) -> list[CommandResult]:
        """Write a file on the target machines atomically (content checked by SHA-256).

        Args:
            sealed: the hub must not read the content: it is encrypted once under a key of its own, which is
                sealed to each target machine for its order and path alone (``clients.master.sealed_puts``); the
                hub stores and delivers ciphertext, and sees the path, mode and sizes only. Puts to machines of
                a sealed scenario are sealed whatever it says.

        Raises:
            MasterError: (nothing was sent) ``sealed`` and a target machine has no sealing key; or the file
                changed while it was read.
        """
        if sealed or any(m.sealed for m in (await self.targets(scenario, target))[1]):
            return await self._put_sealed(scenario, target, content, remote_path, mode, wait_timeout)
        data = content.read_bytes() if isinstance(content, Path) else content
        upload = await self.upload(data)
        body = PutFileBody.for_content(remote_path, data, mode).to_wire()
        return await self.dispatch(
            scenario, target, OrderKind.PUT_FILE, body, upload=upload, release_upload=True, timeout=wait_timeout
        )

    async def _put_sealed(
        self,
        scenario: str,
        target: str | Sequence[str],
        content: bytes | Path,
        remote_path: str,
        mode: int,
        wait_timeout: float | None,
    ) -> list[CommandResult]:
        # Asked before the upload, so that a machine without a sealing key costs no upload (dispatch asks again).
        sc, machines = await self.targets(scenario, target)
        if (refusal := sealing_refusal(sc.name, machines)) is not None:
            raise MasterError(f"nothing was sent: {refusal}")
        with content.open("rb") if isinstance(content, Path) else io.BytesIO(content) as source:
            size = source.seek(0, io.SEEK_END)
            source.seek(0)
            put = SealedPut(remote_path, mode, size, secrets.token_bytes)
            try:
                await self._send_chunks(put.upload_id, put.chunks(source.read))
            except ValueError as exc:
                raise MasterError(f"nothing was queued: {exc}") from None  # the hub drops the partial upload
        return await self.dispatch(
            scenario, target, OrderKind.PUT_FILE, {}, upload=put.upload_id, release_upload=True,
            timeout=wait_timeout, per_machine=put,
        )  # fmt: skip

    async def distribute_hosts(
        self,
        scenario: str,
        target: str | Sequence[str] = "all",
        *,
        extra: dict[str, str] | None = None,
        wait_timeout: float | None = None,
    ) -> list[CommandResult]:
        """Write every machine's name and address into the managed block of each target's hosts file.

        Each machine appears as ``NAME`` and ``NAME.SCENARIO`` with its first reported address; ``extra`` adds
        ``{name: ip}`` entries.
        """
        sc = await self.scenario(scenario)
        entries = [{"ip": m.ips[0], "names": [m.name, f"{m.name}.{sc.name}"]} for m in sc.machines if m.ips]
        entries += [{"ip": ip, "names": [name]} for name, ip in (extra or {}).items()]
        body = HostsBody(tuple(entries)).to_wire()
        return await self.dispatch(scenario, target, OrderKind.HOSTS, body, timeout=wait_timeout)


def _job_view(statement: JobStatement) -> dict[str, Any]:
    """What the SDK hands out for a verified job: only what the master signed."""
    return {"name": statement.name, "shell": statement.shell, "script": statement.script,
            "version": statement.version, "scenario": statement.scenario, "created": statement.created,
            "parameters": [p.to_wire() for p in statement.parameters]}  # fmt: skip


def _sealed_secrets(
    base: ExecBody, secrets: SecretValues | None, env: Mapping[str, str] | None
) -> SealedSecrets | None:
    """The per-machine body maker sealing ``secrets`` into ``base`` (None without secrets).

    Raises:
        MasterError: a secret that cannot be sent as given (nothing was sent).
    """
    if not secrets:
        return None
    try:
        return SealedSecrets(base, checked_secrets(secrets, env))
    except SecretRefused as exc:
        raise MasterError(f"nothing was sent: {exc}") from None


def job_environment(
    statement: JobStatement,
    params: Mapping[str, str] | None,
    env: Mapping[str, str] | None,
    *,
    secret_names: Sequence[str] | None = (),
    where: str = "",
) -> dict[str, str]:
    """The environment a run of the job gets: its parameters' values (checked, defaults filled in) and ``env``.
    ``secret_names``: the secret parameters given (their values are sealed apart); None where secrets cannot be
    carried (a composition or a plan signs one body for many machines, and secrets are sealed to each).

    Raises:
        MasterError: a value is missing, unknown or of the wrong type, or ``env`` sets a parameter's variable.
    """
    if secret_names is None:
        needed = [p.name for p in statement.parameters if p.type is ParameterType.SECRET and p.required]
        if needed:
            raise MasterError(
                f"nothing was sent: {where}job {statement.name!r} needs secret parameter {', '.join(needed)}: "
                "secrets are sealed to each machine, so only crc job run and plans can give them, not assignments"
            )
        secret_names = ()
    try:
        arguments = resolve(statement.parameters, dict(params or {}), list(secret_names))
    except ProtocolError as exc:
        raise MasterError(f"nothing was sent: {where}job {statement.name!r}: {exc.message}") from None
    clash = sorted(set(env or {}) & {p.name for p in statement.parameters})
    if clash:
        raise MasterError(f"nothing was sent: {where}{', '.join(clash)} is a parameter of job {statement.name!r}: "
                          "give it as a parameter, not in env")  # fmt: skip
    return {**dict(env or {}), **arguments.values}
