"""Cost of the protocol layers per message, as ratios against plain msgpack measured in the same run.

    .venv/bin/python bench/protocol_bench.py [--messages 20000] [--payload 256]

Prints one line per layer: messages per second and the slowdown against the baseline (msgpack pack + unpack of
the same envelope map). Absolute figures move with the machine; the ratios are what to compare across changes.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from collections.abc import Callable

import msgpack

from protocol import ClientSession, Envelope, HubSession, Identity, Role
from protocol.envelope import decode_envelope, encode_envelope, envelope_to_wire
from protocol.messages import Output


def _pair() -> tuple[HubSession, ClientSession]:
    hub_id, client_id = Identity.generate(secrets.token_bytes), Identity.generate(secrets.token_bytes)
    hub = HubSession(hub_id, secrets.token_bytes(32), secrets.token_bytes(32))
    client = ClientSession(client_id, Role.DAEMON, secrets.token_bytes(32))
    now = time.time()
    auth = client.answer(hub.challenge("c", now), "a", now)
    hub.accept(auth, lambda _id, _role: client_id.public, now)
    from protocol.messages import Welcome

    client.welcome(hub.seal(Envelope("w", hub_id.id, client_id.id, "", now, Welcome("s", 5, 20, 1 << 20))), now)
    return hub, client


def _rate(fn: Callable[[int], None], n: int, repeats: int = 3) -> float:
    """Median messages per second over ``repeats`` runs of ``fn(n)``."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(n)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--payload", type=int, default=256)
    args = parser.parse_args()
    now = time.time()
    envelope = Envelope("id", "daemon", "hub", "shop", now, Output("order", "stdout", b"x" * args.payload))
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

    base = _rate(baseline, args.messages)
    print(f"{'layer':<34} {'msgs/s':>10}  {'vs msgpack':>10}")
    for name, fn in (
        ("msgpack pack+unpack (baseline)", baseline),
        ("typed envelope encode+decode", typed),
        ("sealed frame (HMAC, seq) seal+open", sealed),
    ):
        rate = base if fn is baseline else _rate(fn, args.messages)
        print(f"{name:<34} {rate:>10,.0f}  {base / rate:>9.2f}x")


if __name__ == "__main__":
    main()
