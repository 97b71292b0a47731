"""The enrollment feature in process: masters register, list and revoke their tokens' signed claims, and nothing
that is not their own signature on their own scenario is taken (joins over HTTP: tests/e2e/test_enrollment.py)."""

from __future__ import annotations

import os
import time
from dataclasses import replace

from protocol import ErrorCode, Identity
from protocol.enrollment import EnrollmentClaims, EnrollmentToken
from protocol.messages import EnrollCreate, EnrollList, EnrollRevoke
from tests.server.features.harness import HubContext, Peer


def issued(master: Peer, scenario: str = "shop", **changes: object) -> EnrollmentToken:
    claims = EnrollmentClaims(os.urandom(8).hex(), scenario, master.identity.public, "workers", {}, 3,
                              time.time() + 3600)  # fmt: skip
    return EnrollmentToken.issue(master.identity, replace(claims, **changes))  # type: ignore[arg-type]


def create(token: EnrollmentToken, scenario: str = "shop") -> EnrollCreate:
    return EnrollCreate(scenario, token.claims.to_wire(), token.signature)


async def test_a_registered_token_is_listed_with_no_secret_and_can_be_revoked(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    await ctx.create_scenario(ana, "shop")
    token = issued(ana)

    assert await ctx.ok(ana, create(token)) == {"id": token.claims.id}
    [listed] = (await ctx.ok(ana, EnrollList("shop")))["tokens"]
    assert (listed["id"], listed["used"], listed["uses"], listed["revoked"]) == (token.claims.id, 0, 3, False)
    assert token.secret not in repr(listed).encode() and listed["signature"] == token.signature
    assert await ctx.ok(ana, EnrollRevoke("shop", token.claims.id)) == {"revoked": token.claims.id}
    assert (await ctx.ok(ana, EnrollList("shop")))["tokens"][0]["revoked"] is True
    assert (await ctx.refused(ana, EnrollRevoke("shop", "0" * 16))).code == ErrorCode.NOT_FOUND.value
    assert (await ctx.refused(ana, create(token))).code == ErrorCode.ALREADY_EXISTS.value


async def test_only_ones_own_signature_on_ones_own_scenario_is_registered(ctx: HubContext) -> None:
    ana, bob = await ctx.master("ana"), await ctx.master("bob")
    await ctx.create_scenario(ana, "shop")
    await ctx.create_scenario(bob, "lab")
    stranger = Identity.generate(os.urandom)
    genuine = issued(ana)
    widened = EnrollmentToken(replace(genuine.claims, uses=99), genuine.signature, genuine.secret)
    someone_elses = EnrollmentToken.issue(stranger, replace(genuine.claims, master_key=stranger.public))

    assert (await ctx.refused(ana, create(widened))).code == ErrorCode.FORBIDDEN.value
    assert (await ctx.refused(ana, create(someone_elses))).code == ErrorCode.FORBIDDEN.value
    assert (await ctx.refused(ana, create(issued(ana, scenario="lab"), "shop"))).code == ErrorCode.INVALID_REQUEST.value
    assert (await ctx.refused(bob, create(issued(bob), "shop"))).code == ErrorCode.NOT_FOUND.value  # ana's scenario
    assert (await ctx.refused(ana, create(issued(ana, role="bad role")))).code == ErrorCode.INVALID_REQUEST.value
    expired = issued(ana, expires=time.time() - 1)
    assert (await ctx.refused(ana, create(expired))).code == ErrorCode.EXPIRED.value
    malformed = EnrollCreate("shop", {**genuine.claims.to_wire(), "uses": 0}, genuine.signature)
    assert (await ctx.refused(ana, malformed)).code == ErrorCode.INVALID_REQUEST.value
    assert (await ctx.ok(ana, EnrollList("shop")))["tokens"] == []
    assert (await ctx.refused(bob, EnrollList("shop"))).code == ErrorCode.NOT_FOUND.value


async def test_a_machine_may_not_manage_tokens(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    db = await ctx.daemon((await ctx.create_scenario(ana, "shop"))["db"])

    for body in (create(issued(ana)), EnrollList("shop"), EnrollRevoke("shop", "0" * 16)):
        error = await ctx.refused(db, body)
        assert error.code == ErrorCode.INVALID_REQUEST.value and "a daemon may not send" in error.message
