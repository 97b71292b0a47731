"""Access tokens in process: registered by their master (only a hash, and for operators a delegation and a
sealed key), listed, revoked and renewed, never seen or touched by another master (harness.HubContext)."""

from __future__ import annotations

import os
import time

from protocol import ErrorCode, Identity
from protocol.delegation import Delegation
from protocol.messages import TokenCreate, TokenList, TokenRenew, TokenRevoke
from protocol.tokens import AccessToken, TokenRole
from tests.server.features.harness import HubContext, Peer


def viewer(scenario: str = "", *, label: str = "", expires: float | None = None) -> TokenCreate:
    token = AccessToken.generate(os.urandom)
    return TokenCreate(token.id, TokenRole.VIEWER.value, scenario, time.time() + 3600 if expires is None else expires,
                       token.secret_hash, label)  # fmt: skip


def operator(master: Peer, scenario: str = "") -> tuple[TokenCreate, Delegation]:
    """What ``Master.create_token("operator")`` sends: a delegate key the master delegated to, sealed."""
    token, delegate = AccessToken.generate(os.urandom), Identity.generate(os.urandom)
    expires = time.time() + 86400
    delegation = Delegation.issue(master.identity, token.id, delegate.public.to_text(), scenario, expires, time.time())
    sealed = token.seal(delegate, os.urandom)
    body = TokenCreate(token.id, TokenRole.OPERATOR.value, scenario, expires, token.secret_hash, "ci",
                       delegation.to_wire(), sealed)  # fmt: skip
    return body, delegation


async def test_a_viewer_token_is_registered_listed_and_revoked(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    body = viewer(label="dashboard")

    created = await ctx.ok(ana, body)
    revoked = await ctx.ok(ana, TokenRevoke(body.token_id))
    [listed] = (await ctx.ok(ana, TokenList()))["tokens"]

    assert (created["id"], created["role"], created["label"], created["revoked"]) == (body.token_id, "viewer",
                                                                                      "dashboard", False)  # fmt: skip
    assert "secret_hash" not in created and revoked == {"revoked": body.token_id}
    assert (listed["id"], listed["revoked"]) == (body.token_id, True)


async def test_an_operator_tokens_delegation_is_renewed_by_its_master(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    await ctx.create_scenario(ana, "shop")
    body, delegation = operator(ana, "shop")
    await ctx.ok(ana, body)

    renewed = delegation.renewed(ana.identity, time.time() + 60)
    answer = await ctx.ok(ana, TokenRenew([renewed.to_wire()]))

    assert answer == {"renewed": [body.token_id], "refused": {}}
    [listed] = (await ctx.ok(ana, TokenList()))["tokens"]
    assert Delegation.from_wire(listed["delegation"]) == renewed


async def test_malformed_tokens_are_refused(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    good = viewer()
    no_delegation = operator(ana)[0]
    cases = [
        TokenCreate("not-hex", "viewer", "", 0.0, good.secret_hash),
        TokenCreate(good.token_id, "viewer", "", 0.0, "short"),
        TokenCreate(good.token_id, "admin", "", 0.0, good.secret_hash),
        viewer(expires=time.time() - 1),
        viewer(label="x" * 101),
        TokenCreate(**{**good.__dict__, "sealed_key": b"key"}),  # a viewer cannot sign
        TokenCreate(**{**no_delegation.__dict__, "delegation": None}),
    ]
    for body in cases:
        assert (await ctx.refused(ana, body)).code == ErrorCode.INVALID_REQUEST.value, body
    assert (await ctx.refused(ana, viewer("nope"))).code == ErrorCode.NOT_FOUND.value
    assert (await ctx.ok(ana, TokenList()))["tokens"] == []


async def test_a_delegation_signed_by_another_master_is_refused(ctx: HubContext) -> None:
    ana, bob = await ctx.master("ana"), await ctx.master("bob")
    body, _ = operator(bob)

    error = await ctx.refused(ana, body)

    assert error.code == ErrorCode.INVALID_REQUEST.value and "delegation does not hold" in error.message


async def test_a_token_id_is_taken_once(ctx: HubContext) -> None:
    ana, bob = await ctx.master("ana"), await ctx.master("bob")
    body = viewer()
    await ctx.ok(ana, body)

    assert (await ctx.refused(bob, body)).code == ErrorCode.ALREADY_EXISTS.value


async def test_another_master_never_sees_revokes_nor_renews_a_token(ctx: HubContext) -> None:
    ana, bob = await ctx.master("ana"), await ctx.master("bob")
    body, delegation = operator(ana)
    await ctx.ok(ana, body)

    listed = (await ctx.ok(bob, TokenList()))["tokens"]
    revoke = await ctx.refused(bob, TokenRevoke(body.token_id))
    renew = await ctx.ok(bob, TokenRenew([delegation.renewed(ana.identity, time.time()).to_wire()]))

    assert listed == [] and revoke.code == ErrorCode.NOT_FOUND.value
    assert renew["renewed"] == [] and list(renew["refused"]) == [body.token_id]
    assert (await ctx.ok(ana, TokenList()))["tokens"][0]["revoked"] is False


async def test_a_revoked_token_is_not_renewed(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    body, delegation = operator(ana)
    await ctx.ok(ana, body)
    await ctx.ok(ana, TokenRevoke(body.token_id))

    answer = await ctx.ok(ana, TokenRenew([delegation.renewed(ana.identity, time.time()).to_wire()]))

    assert answer["renewed"] == [] and "revoked" in answer["refused"][body.token_id]


async def test_a_machine_may_not_manage_tokens(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    db = await ctx.daemon((await ctx.create_scenario(ana, "shop"))["db"])

    error = await ctx.refused(db, viewer())

    assert error.code == ErrorCode.INVALID_REQUEST.value and "a daemon may not send token.create" in error.message
