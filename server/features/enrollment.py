"""Enrollment: machines nobody declared join a scenario's ensemble with a master-signed token (``crc enroll``,
``crc-daemon enroll``; the construction is ``protocol.enrollment``'s).

Masters register their tokens' signed claims, list them with who joined, and revoke them. A joining machine
posts the claims and its registration to ``POST /v1/enroll`` (it has no session yet: its key is not known
here). The hub checks what it can check (the claims signed by their master's key as enrolled here, the scenario
theirs, the token neither revoked, expired nor used up: uses are counted by the store atomically, so replicas
share them), and adds the machine offline and uncertified. Only the master can tell a genuine registration from
one the hub made up, and certifies the machine once it has (``Master.scenario``); until then it obeys nothing,
since its master signs orders only for machines it certified.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from aiohttp import web

from protocol import Envelope, ErrorCode, ProtocolError, PublicKey
from protocol.enrollment import EnrollmentClaims, Registration, verify_claims
from protocol.events import MachineEnrolled
from protocol.messages import EnrollCreate, EnrollList, EnrollRevoke, Response
from server.core import stores
from server.core.appkeys import HUB_KEY
from server.core.connection import Connection
from server.core.dispatch import HandlerTable
from server.core.errors import RequestError, check_name
from server.core.feature import Feature
from server.core.hub import Hub
from server.core.scope import owned_scenario
from server.features.scenarios import OPERATING_SYSTEMS, REPORT_KEY_PATTERN, check_labels
from server.store import EnrollmentRecord, EnrollOutcome, MachineSpec, StoreConflict
from server.transport.rest.auth import spend_anonymous
from server.transport.rest.encoding import json_response, read_json

handlers = HandlerTable()
routes = web.RouteTableDef()

MAX_TOKENS_PER_SCENARIO = 1000
# Joins per source address: a machine joins once; a flood of made-up joins must not cost the store much.
JOIN_RATE, JOIN_BURST = 1.0, 20.0

_REFUSED = {
    EnrollOutcome.NO_TOKEN: (ErrorCode.NOT_FOUND, "no such enrollment token in scenario {scenario!r}"),
    EnrollOutcome.REVOKED: (ErrorCode.REVOKED, "enrollment token {token} was revoked"),
    EnrollOutcome.EXPIRED: (ErrorCode.EXPIRED, "enrollment token {token} has expired"),
    EnrollOutcome.USED_UP: (
        ErrorCode.FORBIDDEN,
        "enrollment token {token} has been used by as many machines as it allows",
    ),
}


def _claims(raw: Any) -> EnrollmentClaims:
    try:
        return EnrollmentClaims.from_wire(raw)
    except ProtocolError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, exc.message) from None


def _checked(claims: EnrollmentClaims, signature: bytes, master_key: PublicKey, now: float) -> None:
    try:
        verify_claims(claims, signature, master_key, now)
    except ProtocolError as exc:
        code = ErrorCode.EXPIRED if exc.code is ErrorCode.EXPIRED else ErrorCode.FORBIDDEN
        raise RequestError(code, exc.message) from None


def token_wire(record: EnrollmentRecord) -> dict[str, Any]:
    return {"id": record.id, "claims": record.claims, "signature": record.signature, "uses": record.uses,
            "used": record.used, "expires": record.expires, "created": record.created, "revoked": record.revoked,
            "registrations": record.registrations}  # fmt: skip


@handlers.on(EnrollCreate)
async def enroll_create(hub: Hub, conn: Connection, env: Envelope, body: EnrollCreate) -> None:
    scenario = await owned_scenario(hub, conn.id, body.scenario)
    claims = _claims(body.claims)
    now = time.time()
    if claims.scenario != scenario.name:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"the token is for scenario {claims.scenario!r}, not this one")
    _checked(claims, body.signature, conn.peer.public_key, now)
    check_name("role", claims.role)
    check_labels(f"token {claims.id}", claims.labels)
    if len(await stores.enrollments(hub).enrollments(scenario.id)) >= MAX_TOKENS_PER_SCENARIO:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"a scenario has at most {MAX_TOKENS_PER_SCENARIO} tokens")
    record = EnrollmentRecord(claims.id, scenario.id, claims.to_wire(), body.signature, claims.uses, claims.expires,
                              now)  # fmt: skip
    try:
        stored = await stores.enrollments(hub).put_enrollment(record)
    except StoreConflict:
        raise RequestError(ErrorCode.ALREADY_EXISTS, f"an enrollment token {claims.id} exists already") from None
    if not stored:
        raise RequestError(ErrorCode.NOT_FOUND, f"you have no scenario named {body.scenario!r}")
    conn.send(Response({"id": claims.id}), scenario=scenario.name, reply_to=env.id)


@handlers.on(EnrollList)
async def enroll_list(hub: Hub, conn: Connection, env: Envelope, body: EnrollList) -> None:
    scenario = await owned_scenario(hub, conn.id, body.scenario)
    tokens = [token_wire(r) for r in await stores.enrollments(hub).enrollments(scenario.id)]
    conn.send(Response({"tokens": tokens}), scenario=scenario.name, reply_to=env.id)


@handlers.on(EnrollRevoke)
async def enroll_revoke(hub: Hub, conn: Connection, env: Envelope, body: EnrollRevoke) -> None:
    scenario = await owned_scenario(hub, conn.id, body.scenario)
    if not await stores.enrollments(hub).revoke_enrollment(scenario.id, body.token_id):
        raise RequestError(ErrorCode.NOT_FOUND, f"scenario {scenario.name!r} has no enrollment token {body.token_id}")
    conn.send(Response({"revoked": body.token_id}), scenario=scenario.name, reply_to=env.id)


def _bytes(raw: Any, name: str) -> bytes:
    if not isinstance(raw, str):
        raise RequestError(ErrorCode.INVALID_REQUEST, f"{name} is base64 text")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(ErrorCode.INVALID_REQUEST, f"{name} is not base64") from None


def _registration(raw: Any) -> Registration:
    if not isinstance(raw, dict):
        raise RequestError(ErrorCode.INVALID_REQUEST, "registration is a map")
    try:
        registration = Registration.from_wire({**raw, "proof": _bytes(raw.get("proof"), "registration.proof")})
        PublicKey.from_text(registration.public_key)
    except ProtocolError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, exc.message) from None
    check_name("machine", registration.name)
    if registration.os not in OPERATING_SYSTEMS:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"os must be one of {', '.join(OPERATING_SYSTEMS)}")
    if not REPORT_KEY_PATTERN.match(registration.report_key):
        raise RequestError(ErrorCode.INVALID_REQUEST, "report_key must be 64 hex digits")
    return registration


@routes.post("/v1/enroll")
async def enroll(request: web.Request) -> web.Response:
    """A machine joins: ``{"claims": {...}, "signature": b64, "registration": {..., "proof": b64}}``."""
    hub = request.app[HUB_KEY]
    spend_anonymous(request, "enroll", JOIN_RATE, JOIN_BURST)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise RequestError(ErrorCode.INVALID_REQUEST, 'send {"claims": ..., "signature": ..., "registration": ...}')
    claims, signature = _claims(body.get("claims")), _bytes(body.get("signature"), "signature")
    registration = _registration(body.get("registration"))
    if registration.token != claims.id:
        raise RequestError(ErrorCode.INVALID_REQUEST, "the registration names another token")
    now = time.time()
    master = await stores.masters(hub).master(claims.master)
    if master is None or PublicKey.from_text(master.public_key) != claims.master_key:
        raise RequestError(ErrorCode.FORBIDDEN, "this enrollment token's master is not enrolled on this hub")
    _checked(claims, signature, claims.master_key, now)
    scenario = await owned_scenario(hub, master.id, claims.scenario)
    spec = MachineSpec(registration.name, registration.os, claims.role, registration.public_key,
                       registration.report_key, dict(claims.labels))  # fmt: skip
    wire = {**registration.to_wire(), "joined": now}
    try:
        outcome = await stores.enrollments(hub).enroll_machine(scenario.id, claims.id, spec, wire, now)
    except StoreConflict:
        raise RequestError(
            ErrorCode.ALREADY_EXISTS,
            f"scenario {scenario.name!r} has a machine named {registration.name!r} already, or this key is in use "
            "(choose another name with --name)",
        ) from None
    if outcome is not EnrollOutcome.ENROLLED:
        code, message = _REFUSED[outcome]
        raise RequestError(code, message.format(scenario=scenario.name, token=claims.id))
    await hub.emit(scenario.id, MachineEnrolled(token=claims.id, role=claims.role), registration.name)
    answer = {"scenario": scenario.name, "machine": registration.name, "machine_id": spec.id, "approve": claims.approve}
    return json_response(answer, status=201)


FEATURE = Feature("enrollment", handlers, routes=routes)
