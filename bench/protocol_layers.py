"""Scenario "protocol_layers": cost per message of envelope typing and sealing, against plain msgpack.

No network, one core; the baseline is msgpack pack + unpack of the same envelope map.
Run alone with ``python -m bench --only protocol_layers``.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Callable

import msgpack

from bench.common import PAYLOAD, Config, Record
from protocol import ClientSession, Envelope, HubSession, Identity, Role
from protocol.envelope import decode_envelope, encode_envelope, envelope_to_wire
from protocol.messages import Output, Welcome

NAME = "protocol_layers"


def session_pair() -> tuple[HubSession, ClientSession]:
    hub_id, client_id = Identity.generate(secrets.token_bytes), Identity.generate(secrets.token_bytes)
    hub = HubSession(hub_id, secrets.token_bytes(32), secrets.token_bytes(32))
    client = ClientSession(client_id, Role.DAEMON, secrets.token_bytes(32))
    now = time.time()
    auth = client.answer(hub.challenge("c", now), "a", now)
    hub.accept(auth, lambda _id, _role: client_id.public, now)
    client.welcome(hub.seal(Envelope("w", hub_id.id, client_id.id, "", now, Welcome("s", 5, 20, 1 << 20))), now)
    return hub, client


def rate(fn: Callable[[int], None], n: int, repeats: int = 3) -> float:
    """Median messages per second over ``repeats`` runs of ``fn(n)``."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(n)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


async def run(config: Config) -> list[Record]:
    now = time.time()
    envelope = Envelope("id", "daemon", "hub", "shop", now, Output("order", "stdout", b"x" * PAYLOAD))
    wire = envelope_to_wire(envelope)
    hub, client = session_pair()

    def baseline(n: int) -> None:
        for _ in range(n):
            msgpack.unpackb(msgpack.packb(wire, use_bin_type=True), raw=False)

    def typed(n: int) -> None:
        for _ in range(n):
            decode_envelope(encode_envelope(envelope))

    def sealed(n: int) -> None:
        for _ in range(n):
            hub.open(client.seal(envelope), now)

    records = []
    for label, fn in (("typed envelope encode+decode", typed), ("sealed frame seal+open", sealed)):
        base = rate(baseline, config.messages, config.repeats)
        ours = rate(fn, config.messages, config.repeats)
        records.append(Record.of(f"{NAME}: {label}", "msgs/s", ours, base, "msgpack pack+unpack", None))
    return records
