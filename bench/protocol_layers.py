"""Scenario "protocol_layers": cost per message of envelope typing and sealing, against plain msgpack.

The same measurements as ``bench/protocol_bench.py`` (which still runs on its own), as records: no network, one
core; the baseline is msgpack pack + unpack of the same envelope map.
"""

from __future__ import annotations

import time

import msgpack

from bench.common import PAYLOAD, Config, Record
from bench.protocol_bench import _pair, _rate
from protocol import Envelope
from protocol.envelope import decode_envelope, encode_envelope, envelope_to_wire
from protocol.messages import Output

NAME = "protocol_layers"


async def run(config: Config) -> list[Record]:
    now = time.time()
    envelope = Envelope("id", "daemon", "hub", "shop", now, Output("order", "stdout", b"x" * PAYLOAD))
    wire = envelope_to_wire(envelope)
    hub, client = _pair()

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
        base = _rate(baseline, config.messages, config.repeats)
        ours = _rate(fn, config.messages, config.repeats)
        records.append(Record.of(f"{NAME}: {label}", "msgs/s", ours, base, "msgpack pack+unpack", None))
    return records
