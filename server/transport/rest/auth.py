"""Who a REST request comes from: a bearer access token (``crc token create``), checked against the hash the hub
keeps. A principal sees only its master's scenarios (or the one its token is limited to); only operators act,
signing through their token's delegation."""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web

from protocol import ErrorCode, Identity, ProtocolError
from protocol.delegation import DELEGATION_LIFETIME, Delegation
from protocol.tokens import AccessToken, TokenRole
from server.core import stores
from server.core.appkeys import HUB_KEY
from server.core.errors import RequestError
from server.core.hub import Hub
from server.core.scope import owned_scenario
from server.core.state import StateKey
from server.guard import TokenBucket
from server.store import ScenarioRecord, TokenRecord
from server.transport.ws import client_source

# REST request budget per access token id.
REST_BUDGETS: StateKey[dict[str, TokenBucket]] = StateKey("rest_budgets", dict)
# Budgets of requests that carry no token (machines enrolling), per purpose and source address.
ANONYMOUS_BUDGETS: StateKey[dict[tuple[str, str], TokenBucket]] = StateKey("anonymous_budgets", dict)


def spend_anonymous(request: web.Request, purpose: str, rate: float, burst: float) -> None:
    """Count one unauthenticated request for ``purpose`` from its source address.

    Raises:
        RequestError: RATE_LIMITED beyond ``rate`` per second (bursts of ``burst``).
    """
    budgets = request.app[HUB_KEY].state[ANONYMOUS_BUDGETS]
    budget = budgets.setdefault((purpose, client_source(request)), TokenBucket(rate, burst))
    if not budget.take(time.monotonic()):
        raise RequestError(ErrorCode.RATE_LIMITED, f"too many {purpose} requests from this address; try again soon")


@dataclass(frozen=True)
class Principal:
    token: TokenRecord
    access: AccessToken

    @property
    def master(self) -> str:
        return self.token.owner

    @property
    def operator(self) -> bool:
        return self.token.role == TokenRole.OPERATOR

    async def scenario(self, hub: Hub, requested: str | None) -> ScenarioRecord:
        """The scenario a request is about: the token's own, or the ``scenario`` it names."""
        if self.token.scenario:
            if requested and requested != self.token.scenario:
                raise RequestError(ErrorCode.FORBIDDEN, f"this token is limited to scenario {self.token.scenario!r}")
            requested = self.token.scenario
        if not requested:
            raise RequestError(ErrorCode.INVALID_REQUEST, "name the scenario: ?scenario=NAME")
        return await owned_scenario(hub, self.master, requested)

    async def scenarios(self, hub: Hub) -> list[ScenarioRecord]:
        if self.token.scenario:
            return [await self.scenario(hub, None)]
        return await stores.scenarios(hub).scenarios(self.master)

    def signer(self) -> tuple[Identity, Delegation]:
        """The delegate key and delegation to sign orders with.

        Raises:
            RequestError: FORBIDDEN for viewers, or for a token made before its master's key was rotated.
        """
        if not self.operator or self.token.delegation is None:
            raise RequestError(ErrorCode.FORBIDDEN, "a viewer token can only read; this needs an operator token")
        delegation = Delegation.from_wire(self.token.delegation)
        if delegation.master != self.master:
            raise RequestError(
                ErrorCode.FORBIDDEN, "this token was made before its master's key was rotated: create a new one"
            )
        if not delegation.issued or time.time() > delegation.expires:
            # Daemons would refuse what it signs: say why here, and what to do.
            raise RequestError(
                ErrorCode.FORBIDDEN,
                "this operator token's delegation has ended (it lasts "
                f"{DELEGATION_LIFETIME / 3600:.0f} h after its master last renewed it): run `crc token renew`",
            )
        try:
            return self.access.open(self.token.sealed_key), delegation
        except ProtocolError:
            raise RequestError(ErrorCode.FORBIDDEN, "this token cannot sign (was it revoked?)") from None


async def authenticate(request: web.Request) -> Principal:
    """The principal of a request, from ``Authorization: Bearer crc_...``.

    Raises:
        RequestError: UNAUTHORIZED when the token is missing, unknown, wrong, revoked or expired.
    """
    hub = request.app[HUB_KEY]
    source = client_source(request)
    if hub.sessions.guard.too_many_failures(source, time.monotonic()):
        raise RequestError(ErrorCode.RATE_LIMITED, f"too many failed sign-ins from {source}; try again in a minute")
    scheme, _, text = request.headers.get("Authorization", "").partition(" ")
    try:
        if scheme.lower() != "bearer" or not text.strip():
            raise RequestError(ErrorCode.UNAUTHORIZED, "send Authorization: Bearer crc_... (see crc token create)")
        principal = await principal_for(hub, text)
    except RequestError:
        hub.sessions.guard.failed(source, time.monotonic())
        raise
    budgets = hub.state[REST_BUDGETS]
    budget = budgets.get(principal.token.id)
    if budget is None:
        budget = budgets[principal.token.id] = TokenBucket(hub.settings.rest_rate, hub.settings.rest_burst)
    if not budget.take(time.monotonic()):
        raise RequestError(
            ErrorCode.RATE_LIMITED, f"over {hub.settings.rest_rate:.0f} requests/s for this token; slow down"
        )
    return principal


async def principal_for(hub: Hub, text: str) -> Principal:
    """The principal of a presented token (a header, or the first message of a live WebSocket).

    Raises:
        RequestError: UNAUTHORIZED when the token is unknown, wrong, revoked or expired.
    """
    try:
        access = AccessToken.parse(text)
    except ProtocolError as exc:
        raise RequestError(ErrorCode.UNAUTHORIZED, exc.message) from None
    record = await stores.tokens(hub).token(access.id)
    if record is None or not access.matches(record.secret_hash):
        raise RequestError(ErrorCode.UNAUTHORIZED, "unknown access token")
    if record.revoked:
        raise RequestError(ErrorCode.UNAUTHORIZED, "this access token was revoked")
    if record.expires and time.time() > record.expires:
        raise RequestError(ErrorCode.UNAUTHORIZED, "this access token has expired")
    return Principal(record, access)
