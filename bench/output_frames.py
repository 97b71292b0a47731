"""Scenario "output_frames": live command output from one daemon to one subscribed master, through the real hub.

The hub runs in a process of its own (``bench.hub_process``); the daemon and the master are ``HubLink`` sessions
in this process. The daemon floods N ``Output`` messages (256-byte chunks) without waiting for anything per
message (``websockets``' drain, and a window of ``WINDOW`` messages ahead of the master: see
``bench.common``); the figure is N / time until the master has the last.
The baseline is the bare aiohttp relay (``bench.baselines``), flooded with the same N frames in the same run,
alternating with ours so both see the same machine noise.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from bench import baselines_socketio
from bench.baselines import relay_flood
from bench.common import PAYLOAD, Config, Counter, Record, Server, median, windowed_flood
from clients.link import HubLink
from clients.master.keys import load_or_create_master_key
from clients.master.sdk import Master
from protocol import CrcError, Envelope, MsgType, OrderKind, Role
from protocol.messages import EventsSubscribe, Output
from protocol.order_bodies import ExecBody

NAME = "output_frames"
TARGET = 0.5  # issue 9: at least half the bare relay's rate
SCENARIO = "bench"
SIO_TARGET = 10.0  # issue scenario (1): at least 10x python-socketio with Redis
SIO_SHARE = 5  # python-socketio runs ~1-2k msgs/s: a fifth of the flood (a few seconds) is enough to measure it


def sio_messages(messages: int) -> int:
    return max(100, messages // SIO_SHARE)


class Watcher:
    """A master session subscribed to a scenario (``SCENARIO`` unless told), counting the OUTPUT messages it gets."""

    def __init__(self, link: HubLink, scenario: str = SCENARIO) -> None:
        self.link = link
        self.scenario = scenario
        self.counter = Counter()
        self.subscribed = asyncio.Event()
        self.request_id = ""
        self._task = asyncio.create_task(self._read())

    async def subscribe(self) -> None:
        self.request_id = await self.link.send(EventsSubscribe(self.scenario, -1), scenario=self.scenario)
        await asyncio.wait_for(self.subscribed.wait(), 10)

    def counts(self, envelope: Envelope) -> bool:
        """Whether this message is one the flood waits for (subclasses count other kinds; raise to fail)."""
        return envelope.type is MsgType.OUTPUT

    async def _read(self) -> None:
        try:
            while True:
                envelope = await self.link.recv()
                if envelope.type is MsgType.ERROR and not envelope.reply_to:
                    # Answers to our PONGs come back as ERRORs (a master may not send pong): ignored.
                    raise RuntimeError(f"the hub answered with an error: {envelope.body}")
                if envelope.reply_to and envelope.reply_to == self.request_id:
                    self.subscribed.set()
                elif self.counts(envelope):
                    self.counter.add()
        except (CrcError, RuntimeError) as exc:
            self.counter.fail(exc)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.link.close()


async def drain_link(link: HubLink) -> None:
    """The daemon reads what the hub sends (answering its PINGs, so the hub keeps the session)."""
    with contextlib.suppress(CrcError):
        while True:
            await link.recv()


async def flood_order(master: Master, scenario: str) -> str:
    """A real order for the scenario's one machine, whose output a flood then carries: the hub forwards a
    machine's output only for its own orders. The benchmark's daemon session receives it and never runs it."""
    sc = await master.scenario(scenario)
    (machine,) = sc.machines
    body = ExecBody("true").to_wire()
    return await master.submit(master.sign(sc, machine, OrderKind.EXEC, body, 3600.0))


async def hub_flood(
    daemon: HubLink,
    watcher: Watcher,
    messages: int,
    payload: int = PAYLOAD,
    scenario: str = SCENARIO,
    *,
    order_id: str,
) -> float:
    """Messages per second: N Output messages (of ``order_id``) from the daemon until the master has the last."""
    data = b"x" * payload

    async def send() -> None:
        await daemon.send(Output(order_id, "stdout", data), scenario=scenario)

    return await windowed_flood(send, watcher.counter, messages)


async def run(config: Config) -> list[Record]:
    identity, _ = load_or_create_master_key(config.work_dir / "master.key")
    hub_argv = [
        "-m", "bench.hub_process", "--data-dir", str(config.work_dir / "hub-data"),
        "--master-key", identity.public.to_text(),
    ]  # fmt: skip
    sio_missing = baselines_socketio.missing()
    if sio_missing:
        baselines_socketio.skip_note(NAME, sio_missing)
    sio: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        hub = await stack.enter_async_context(Server("hub", hub_argv, config.work_dir))
        relay = await stack.enter_async_context(Server("relay", ["-m", "bench.baselines"], config.work_dir))
        sio_relay = None
        if not sio_missing:  # python-socketio + Redis: started before the clock, idle during our floods
            sio_relay = await stack.enter_async_context(baselines_socketio.SocketioRelay(config.work_dir))
        master = await Master.connect(hub.url, identity)
        try:
            (machine,) = await master.create_scenario(SCENARIO, [("box", "linux")])
            order_id = await flood_order(master, SCENARIO)
        finally:
            await master.close()
        watcher = Watcher(await HubLink.connect(hub.url, identity, Role.MASTER))
        daemon = await HubLink.connect(hub.url, machine.identity, Role.DAEMON)
        drain = asyncio.create_task(drain_link(daemon))
        ours: list[float] = []
        base: list[float] = []
        try:
            await watcher.subscribe()
            for _ in range(config.repeats):
                base.append(await relay_flood(relay.url, config.messages))
                ours.append(await hub_flood(daemon, watcher, config.messages, order_id=order_id))
                if sio_relay is not None:
                    sio.append(await baselines_socketio.sio_flood(sio_relay.url, sio_messages(config.messages)))
        finally:
            drain.cancel()
            await daemon.close()
            await watcher.close()
    records = [Record.of(NAME, "msgs/s", median(ours), median(base), "bare aiohttp relay", TARGET)]
    if sio:
        print(f"  {NAME}: python-socketio flood N={sio_messages(config.messages)}", file=sys.stderr)
        records.append(
            Record.of(
                f"{NAME} vs python-socketio",
                "msgs/s",
                median(ours),
                median(sio),
                baselines_socketio.SIO_NAME,
                SIO_TARGET,
            )
        )
    return records
