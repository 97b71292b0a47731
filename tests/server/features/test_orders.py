"""The orders feature in process: signed orders queued, delivered to connected daemons, reported on and stored;
tenancy, refusals, cancelling and file uploads (harness.HubContext)."""

from __future__ import annotations

import hashlib
import math
import os

from clients.master.models import CommandResult, MachineInfo
from protocol import ErrorCode, Identity, Order, OrderKind, OrderState
from protocol.events import CommandDelivered, CommandFinished, CommandQueued, CommandStarted
from protocol.messages import (
    Cancel,
    Deliver,
    Error,
    EventsSubscribe,
    FileChunk,
    OrderAck,
    OrderCancel,
    OrderStarted,
    OrderSubmit,
    Output,
    Result,
    ResultAck,
    ResultsQuery,
)
from protocol.order_bodies import PutFileBody
from tests.server.features.harness import HubContext, Peer, signed_order, signed_result


async def shop(ctx: HubContext) -> tuple[Peer, Peer, str]:
    """Ana's scenario "shop" with its db machine connected; and the web machine's id (not connected)."""
    ana = await ctx.master("ana")
    machines = await ctx.create_scenario(ana, "shop")
    return ana, await ctx.daemon(machines["db"]), machines["web"].id


async def results(ctx: HubContext, master: Peer, scenario: str = "shop") -> dict[str, dict[str, object]]:
    return {o["id"]: o for o in (await ctx.ok(master, ResultsQuery(scenario)))["orders"]}


async def test_an_order_is_queued_delivered_reported_on_and_its_result_stored(ctx: HubContext) -> None:
    ana, db, _ = await shop(ctx)
    await ctx.ok(ana, EventsSubscribe("shop", after=-1))  # to get the live output
    order = signed_order(ana, "shop", db.id, {"command": "echo hi"})

    answer = await ctx.ok(ana, OrderSubmit(order.to_wire()))
    delivered = await ctx.wait_for(db, Deliver)
    await ctx.tell(db, OrderAck(order.id))
    await ctx.tell(db, OrderStarted(order.id))
    await ctx.tell(db, Output(order.id, "stdout", b"hi\n"))
    await ctx.tell(db, Result(signed_result(db, order.id, stdout=b"hi\n").to_wire()))

    assert answer == {"order_id": order.id, "state": OrderState.QUEUED.value}
    assert Order.from_wire(delivered.order) == order  # as the master signed it: the daemon verifies that
    assert ctx.bodies(ana, Output) == [Output(order.id, "stdout", b"hi\n", "db")]
    assert ctx.bodies(db, ResultAck) == [ResultAck(order.id)]
    stored = (await results(ctx, ana))[order.id]
    assert stored["state"] == OrderState.SUCCEEDED.value
    assert isinstance(stored["result"], dict) and stored["result"]["stdout"] == b"hi\n"
    events = [(p, m) for p, m in await ctx.events(ana, "shop") if m == "db" and "order_id" in p.to_wire()]
    assert events == [
        (CommandQueued(order_id=order.id, kind="exec", command="echo hi"), "db"),
        (CommandDelivered(order_id=order.id), "db"),
        (CommandStarted(order_id=order.id), "db"),
        (CommandFinished(order_id=order.id, status="succeeded", exit_code=0, error=""), "db"),
    ]


async def test_an_order_for_an_offline_machine_is_delivered_when_it_connects(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    machines = await ctx.create_scenario(ana, "shop")
    order = signed_order(ana, "shop", machines["web"].id)

    await ctx.ok(ana, OrderSubmit(order.to_wire()))
    web = await ctx.daemon(machines["web"])

    assert [Order.from_wire(d.order).id for d in ctx.bodies(web, Deliver)] == [order.id]


async def test_another_master_can_neither_queue_for_nor_read_a_scenario(ctx: HubContext) -> None:
    ana, db, _ = await shop(ctx)
    bob = await ctx.master("bob")
    mine = signed_order(ana, "shop", db.id)
    await ctx.ok(ana, OrderSubmit(mine.to_wire()))

    as_bob = await ctx.refused(bob, OrderSubmit(signed_order(bob, "shop", db.id).to_wire()))
    as_ana = await ctx.refused(bob, OrderSubmit(mine.to_wire()))  # ana's signature, bob's session
    cancel = await ctx.refused(bob, OrderCancel("shop", mine.id))
    query = await ctx.refused(bob, ResultsQuery("shop"))

    assert (as_bob.code, as_ana.code) == (ErrorCode.NOT_FOUND.value, ErrorCode.FORBIDDEN.value)
    assert cancel.code == query.code == ErrorCode.NOT_FOUND.value
    assert len(ctx.bodies(db, Deliver)) == 1
    assert (await results(ctx, ana))[mine.id]["state"] == OrderState.QUEUED.value


async def test_unknown_machines_reused_ids_endless_and_malformed_orders_are_refused(ctx: HubContext) -> None:
    ana, db, _ = await shop(ctx)
    first = signed_order(ana, "shop", db.id)
    await ctx.ok(ana, OrderSubmit(first.to_wire()))
    malformed = {k: v for k, v in signed_order(ana, "shop", db.id).to_wire().items() if k != "machine"}

    unknown = await ctx.refused(ana, OrderSubmit(signed_order(ana, "shop", "m-nobody").to_wire()))
    reused = await ctx.refused(ana, OrderSubmit(first.to_wire()))
    forever = await ctx.refused(ana, OrderSubmit(signed_order(ana, "shop", db.id, ttl=30 * 86400).to_wire()))
    broken = await ctx.refused(ana, OrderSubmit(malformed))
    endless = await ctx.refused(ana, OrderSubmit(signed_order(ana, "shop", db.id, ttl=math.nan).to_wire()))

    assert unknown.code == ErrorCode.NOT_FOUND.value and "no machine 'm-nobody'" in unknown.message
    assert reused.code == ErrorCode.ALREADY_EXISTS.value
    assert forever.code == ErrorCode.INVALID_REQUEST.value and "at most 7 days" in forever.message
    assert broken.code == ErrorCode.BAD_FIELD.value
    assert endless.code == ErrorCode.INVALID_REQUEST.value  # NaN: never past any limit, so never allowed
    assert list(await results(ctx, ana)) == [first.id]


async def test_a_machine_cannot_report_on_another_machines_order(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    machines = await ctx.create_scenario(ana, "shop")
    db, web = await ctx.daemon(machines["db"]), await ctx.daemon(machines["web"])
    order = signed_order(ana, "shop", db.id)
    await ctx.ok(ana, OrderSubmit(order.to_wire()))

    await ctx.tell(web, OrderStarted(order.id))
    as_itself = signed_result(web, order.id)
    await ctx.tell(web, Result(as_itself.to_wire()))  # its own signature on db's order: dropped, acknowledged
    forged = await ctx.refused(web, Result(signed_result(db, order.id, signer=web.identity).to_wire()))

    assert ctx.bodies(web, ResultAck) == [ResultAck(order.id)]
    assert forged.code == ErrorCode.WRONG_TARGET.value
    assert (await results(ctx, ana))[order.id]["state"] == OrderState.QUEUED.value


async def test_a_result_not_final_is_refused_and_its_signature_is_left_to_the_master(ctx: HubContext) -> None:
    """Check once, where it matters (issue 18): the session proved which machine reports, the hub checks the
    order is that machine's, and masters verify the signature (``CommandResult.verified``); a result signed with
    another key is stored as it came, and no master takes it as the machine's."""
    ana, db, _ = await shop(ctx)
    order = signed_order(ana, "shop", db.id)
    await ctx.ok(ana, OrderSubmit(order.to_wire()))

    running = await ctx.refused(db, Result(signed_result(db, order.id, OrderState.RUNNING).to_wire()))
    stranger = Identity.generate(os.urandom)
    await ctx.tell(db, Result(signed_result(db, order.id, signer=stranger).to_wire()))
    await ctx.wait_for(db, ResultAck)

    assert running.code == ErrorCode.INVALID_REQUEST.value
    stored = (await results(ctx, ana))[order.id]
    assert stored["state"] == OrderState.SUCCEEDED.value
    machine = MachineInfo(db.id, "db", "linux", "db", db.identity.public.to_text(), "connected")
    assert CommandResult.from_order(stored, machine).verified is False


async def test_a_key_rotation_result_not_signed_by_the_machine_is_refused(ctx: HubContext) -> None:
    """The one result the hub acts on (it registers the new key) it verifies itself."""
    ana, db, _ = await shop(ctx)
    order = signed_order(ana, "shop", db.id, {}, kind=OrderKind.ROTATE_KEY)
    await ctx.ok(ana, OrderSubmit(order.to_wire()))
    stranger = Identity.generate(os.urandom)

    forged = await ctx.refused(db, Result(signed_result(db, order.id, signer=stranger).to_wire()))

    assert forged.code == ErrorCode.BAD_SIGNATURE.value
    assert (await results(ctx, ana))[order.id]["result"] is None


async def test_cancelling_is_final_before_delivery_and_asked_of_the_daemon_after(ctx: HubContext) -> None:
    ana, db, web_id = await shop(ctx)
    offline = signed_order(ana, "shop", web_id)
    online = signed_order(ana, "shop", db.id)
    for order in (offline, online):
        await ctx.ok(ana, OrderSubmit(order.to_wire()))

    before = await ctx.ok(ana, OrderCancel("shop", offline.id))
    after = await ctx.ok(ana, OrderCancel("shop", online.id))
    unknown = await ctx.refused(ana, OrderCancel("shop", "no-such-order"))

    assert before["state"] == OrderState.CANCELLED.value and after["state"] == OrderState.QUEUED.value
    assert ctx.bodies(db, Cancel) == [Cancel(online.id)]
    assert unknown.code == ErrorCode.NOT_FOUND.value
    finished = await ctx.payloads(ana, "shop", CommandFinished)
    assert finished == [CommandFinished(order_id=offline.id, status="cancelled", exit_code=None,
                                        error="cancelled before delivery")]  # fmt: skip


async def test_a_file_order_carries_its_uploaded_chunks_to_the_daemon(ctx: HubContext) -> None:
    ana, db, _ = await shop(ctx)
    content = b"port = 8080\n"
    upload = hashlib.sha256(content).hexdigest()
    order = signed_order(
        ana, "shop", db.id, PutFileBody.for_content("/etc/app.conf", content, 0o640).to_wire(), kind=OrderKind.PUT_FILE
    )
    await ctx.tell(ana, FileChunk(upload, 0, content))

    await ctx.ok(ana, OrderSubmit(order.to_wire(), upload, last_use=True))
    again = await ctx.refused(ana, OrderSubmit(signed_order(ana, "shop", db.id, order.body, kind=order.kind)
                                               .to_wire(), upload))  # fmt: skip

    await ctx.wait_for(db, FileChunk)
    assert ctx.bodies(db, FileChunk) == [FileChunk(order.id, 0, content)]
    assert again.code == ErrorCode.NOT_FOUND.value and "no upload" in again.message  # last_use freed it


async def test_a_file_order_whose_upload_does_not_match_is_refused(ctx: HubContext) -> None:
    ana, db, _ = await shop(ctx)
    upload = hashlib.sha256(b"other").hexdigest()
    await ctx.tell(ana, FileChunk(upload, 0, b"12345"))
    order = signed_order(
        ana, "shop", db.id, PutFileBody.for_content("/etc/x", b"other", 0o644).to_wire(), kind=OrderKind.PUT_FILE
    )

    error = await ctx.refused(ana, OrderSubmit(order.to_wire(), upload))

    assert error.code == ErrorCode.INVALID_REQUEST.value and "does not match" in error.message
    assert ctx.bodies(db, Deliver) == []


async def test_a_master_may_not_send_what_machines_report(ctx: HubContext) -> None:
    ana, db, _ = await shop(ctx)
    order = signed_order(ana, "shop", db.id)

    for body in (OrderAck(order.id), Result(signed_result(db, order.id).to_wire())):
        error = await ctx.refused(ana, body)
        assert error.code == ErrorCode.INVALID_REQUEST.value and "a master may not send" in error.message
    machine = await ctx.request(db, OrderSubmit(order.to_wire()))
    assert isinstance(machine, Error) and "a daemon may not send order.submit" in machine.message
