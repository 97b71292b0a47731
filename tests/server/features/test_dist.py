"""DIST_PUT in process: a file a master uploaded joins the hub's dist folder (harness.HubContext)."""

from __future__ import annotations

import hashlib

from protocol import ErrorCode
from protocol.messages import DistPut, FileChunk
from tests.server.features.harness import HubContext, Peer

WHEEL = "cloudremotecontrol-9.9.9-py3-none-any.whl"


async def upload(ctx: HubContext, master: Peer, content: bytes) -> str:
    upload_id = hashlib.sha256(content).hexdigest()
    await ctx.tell(master, FileChunk(upload_id, 0, content))
    return upload_id


async def test_an_uploaded_file_joins_the_dist_folder_once(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    content = b"a wheel"

    added = await ctx.ok(ana, DistPut(WHEEL, await upload(ctx, ana, content)))
    again = await ctx.ok(ana, DistPut(WHEEL, await upload(ctx, ana, content)))

    assert added == {"name": WHEEL, "sha256": hashlib.sha256(content).hexdigest(), "added": True}
    assert again["added"] is False
    assert (ctx.hub.settings.dist_dir / WHEEL).read_bytes() == content


async def test_other_content_under_a_taken_name_is_refused(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    await ctx.ok(ana, DistPut(WHEEL, await upload(ctx, ana, b"first")))

    error = await ctx.refused(ana, DistPut(WHEEL, await upload(ctx, ana, b"second")))

    assert error.code == ErrorCode.ALREADY_EXISTS.value
    assert (ctx.hub.settings.dist_dir / WHEEL).read_bytes() == b"first"


async def test_a_missing_or_mislabelled_upload_and_a_bad_name_are_refused(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    wrong_id = "0" * 64
    await ctx.tell(ana, FileChunk(wrong_id, 0, b"content"))

    missing = await ctx.refused(ana, DistPut(WHEEL, "f" * 64))
    mislabelled = await ctx.refused(ana, DistPut(WHEEL, wrong_id))
    bad_name = await ctx.refused(ana, DistPut("../evil.whl", await upload(ctx, ana, b"x")))

    assert missing.code == ErrorCode.NOT_FOUND.value
    assert mislabelled.code == bad_name.code == ErrorCode.INVALID_REQUEST.value
    assert not (ctx.hub.settings.dist_dir / WHEEL).exists()


async def test_a_machine_may_not_add_to_the_dist_folder(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    db = await ctx.daemon((await ctx.create_scenario(ana, "shop"))["db"])

    error = await ctx.refused(db, DistPut(WHEEL, "f" * 64))

    assert error.code == ErrorCode.INVALID_REQUEST.value and "a daemon may not send dist.put" in error.message
