"""Access tokens a master registers for its REST clients and dashboard users (``crc token create``).

The master makes the token and, for operators, the delegate key pair and the signed delegation; the hub is sent
only the secret's hash and the delegate key sealed under the secret (see ``protocol.tokens``), so it can check a
presented token and sign with it, but cannot mint one or sign without one.
"""

from __future__ import annotations

import re
import time
from typing import Any

from aiohttp import web

from protocol import Envelope, ErrorCode, ProtocolError, PublicKey
from protocol.delegation import Delegation
from protocol.messages import Response, TokenCreate, TokenList, TokenRenew, TokenRevoke
from protocol.tokens import TOKEN_ID, TokenRole
from server.core import stores
from server.core.connection import Connection
from server.core.dispatch import HandlerTable
from server.core.errors import RequestError
from server.core.feature import Feature
from server.core.hub import Hub
from server.store import StoreConflict, TokenRecord
from server.transport.rest.auth import authenticate
from server.transport.rest.encoding import json_response

handlers = HandlerTable()

SECRET_HASH = re.compile(r"^[0-9a-f]{64}$")
MAX_SEALED_KEY = 512
MAX_LABEL = 100
MAX_TOKENS_PER_MASTER = 1000


def _parse_delegation(raw: Any, master_key: PublicKey, scenario: str, now: float) -> Delegation:
    """A delegation this master signed, for ``scenario`` (or all), bounded in time and not expired."""
    try:
        delegation = Delegation.from_wire(raw)
        delegation.verify(master_key, scenario, now)
    except ProtocolError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"the token's delegation does not hold: {exc.message}") from None
    return delegation


async def _master_key(hub: Hub, conn: Connection) -> PublicKey:
    master = await stores.masters(hub).master(conn.id)
    if master is None:
        raise RequestError(ErrorCode.REVOKED, "this master is no longer enrolled on the hub")
    return PublicKey.from_text(master.public_key)


async def _check_delegation(hub: Hub, conn: Connection, body: TokenCreate, now: float) -> Delegation:
    if body.delegation is None or not body.sealed_key or len(body.sealed_key) > MAX_SEALED_KEY:
        raise RequestError(ErrorCode.INVALID_REQUEST, "an operator token needs its delegation and sealed key")
    delegation = _parse_delegation(body.delegation, await _master_key(hub, conn), body.scenario or "", now)
    if (delegation.token, delegation.scenario, delegation.token_expires) != (
        body.token_id,
        body.scenario,
        body.expires,
    ):
        raise RequestError(ErrorCode.INVALID_REQUEST, "the delegation must name this token, scope and expiry")
    return delegation


@handlers.on(TokenCreate)
async def token_create(hub: Hub, conn: Connection, env: Envelope, body: TokenCreate) -> None:
    now = time.time()
    if not TOKEN_ID.match(body.token_id) or not SECRET_HASH.match(body.secret_hash):
        raise RequestError(ErrorCode.INVALID_REQUEST, "a token id is 16 hex digits and its hash 64")
    if body.role not in tuple(TokenRole):
        raise RequestError(ErrorCode.INVALID_REQUEST, f"a token's role is viewer or operator, not {body.role!r}")
    if body.expires < 0 or (body.expires and body.expires <= now):
        raise RequestError(ErrorCode.INVALID_REQUEST, "a token's expiry must be in the future (or 0: never)")
    if len(body.label) > MAX_LABEL:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"a token's label is at most {MAX_LABEL} characters")
    if body.scenario and await stores.scenarios(hub).scenario_by_name(conn.id, body.scenario) is None:
        raise RequestError(ErrorCode.NOT_FOUND, f"you have no scenario named {body.scenario!r}")
    if body.role == TokenRole.OPERATOR:
        delegation: Delegation | None = await _check_delegation(hub, conn, body, now)
    elif body.delegation is not None or body.sealed_key:
        raise RequestError(ErrorCode.INVALID_REQUEST, "a viewer token cannot sign: send no delegation")
    else:
        delegation = None
    if len(await stores.tokens(hub).tokens(conn.id)) >= MAX_TOKENS_PER_MASTER:
        raise RequestError(ErrorCode.QUEUE_FULL, f"a master keeps at most {MAX_TOKENS_PER_MASTER} tokens")
    record = TokenRecord(
        body.token_id, conn.id, body.role, body.scenario, body.secret_hash, now, body.expires, body.label,
        None if delegation is None else delegation.to_wire(), body.sealed_key,
    )  # fmt: skip
    try:
        await stores.tokens(hub).put_token(record)
    except StoreConflict:
        raise RequestError(ErrorCode.ALREADY_EXISTS, f"token id {body.token_id} is taken; make another") from None
    conn.send(Response(record.to_wire()), reply_to=env.id)


@handlers.on(TokenList)
async def token_list(hub: Hub, conn: Connection, env: Envelope, body: TokenList) -> None:
    # The master also sees each delegation it signed (no secret: orders carry them), to renew it.
    tokens = [{**t.to_wire(), "delegation": t.delegation} for t in await stores.tokens(hub).tokens(conn.id)]
    conn.send(Response({"tokens": tokens}), reply_to=env.id)


@handlers.on(TokenRevoke)
async def token_revoke(hub: Hub, conn: Connection, env: Envelope, body: TokenRevoke) -> None:
    if not await stores.tokens(hub).revoke_token(conn.id, body.token_id):
        raise RequestError(ErrorCode.NOT_FOUND, f"you have no token {body.token_id!r}")
    conn.send(Response({"revoked": body.token_id}), reply_to=env.id)


@handlers.on(TokenRenew)
async def token_renew(hub: Hub, conn: Connection, env: Envelope, body: TokenRenew) -> None:
    """Replace operator tokens' delegations with ones their master signed anew: same token, delegate key and
    scope, a fresh lifetime. A revoked, expired or foreign token is refused (and stays as it was)."""
    if len(body.delegations) > MAX_TOKENS_PER_MASTER:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"renew at most {MAX_TOKENS_PER_MASTER} tokens at once")
    master_key = await _master_key(hub, conn)
    now = time.time()
    renewed: list[str] = []
    refused: dict[str, str] = {}
    for raw in body.delegations:
        token_id = str(raw.get("token", "")) if isinstance(raw, dict) else ""
        try:
            record = await stores.tokens(hub).token(token_id)
            if record is None or record.owner != conn.id or record.role != TokenRole.OPERATOR:
                raise RequestError(ErrorCode.NOT_FOUND, "you have no operator token of that id")
            if record.revoked or record.delegation is None:
                raise RequestError(ErrorCode.REVOKED, "the token was revoked: it cannot be renewed")
            if record.expires and now >= record.expires:
                raise RequestError(ErrorCode.EXPIRED, "the token has expired: it cannot be renewed")
            delegation = _parse_delegation(raw, master_key, record.scenario, now)
            before = Delegation.from_wire(record.delegation)
            if (delegation.key, delegation.scenario, delegation.token_expires) != (
                before.key, record.scenario, record.expires,
            ):  # fmt: skip
                raise RequestError(ErrorCode.INVALID_REQUEST, "a renewal keeps the token's key, scope and expiry")
            if not await stores.tokens(hub).renew_token(conn.id, token_id, delegation.to_wire()):
                raise RequestError(ErrorCode.REVOKED, "the token was revoked: it cannot be renewed")
        except (RequestError, ProtocolError) as exc:
            refused[token_id] = exc.message
            continue
        renewed.append(token_id)
    conn.send(Response({"renewed": renewed, "refused": refused}), reply_to=env.id)


routes = web.RouteTableDef()


@routes.get("/v1/me")
async def me(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    token = principal.token
    return json_response({"token": token.id, "role": token.role, "scenario": token.scenario,
                          "expires": token.expires, "label": token.label})  # fmt: skip


FEATURE = Feature("tokens", handlers, routes=routes)
