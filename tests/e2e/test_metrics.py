"""``/metrics``: the hub in Prometheus' text format, parsed with Prometheus' own parser."""

from __future__ import annotations

import secrets

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from clients.master.sdk import Master
from protocol import Identity, RemoteError
from tests.e2e.support import HubProcess


async def scrape(hub: HubProcess) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    async with aiohttp.ClientSession() as session, session.get(f"{hub.url}/metrics") as answer:
        assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain")
        text = await answer.text()
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def test_metrics_parse_and_count_what_the_hub_does(hub: HubProcess, master: Master, deploy) -> None:
    await deploy("metered", "web", "db")
    results = await master.run("metered", "all", "sleep 0.2")
    assert all(r.ok for r in results)
    metrics = await scrape(hub)
    assert metrics["crc_connections"][(("kind", "daemon"),)] == 2
    assert metrics["crc_connections"][(("kind", "master"),)] >= 1
    assert metrics["crc_messages_total"][(("type", "order.submit"),)] >= 2
    assert metrics["crc_messages_total"][(("type", "result"),)] >= 2
    assert metrics["crc_command_duration_seconds_count"][()] >= 2
    assert metrics["crc_command_duration_seconds_sum"][()] >= 0.4
    assert metrics["crc_backplane_up"][()] == 1 and metrics["crc_outbox_frames"][()] >= 0
    assert metrics["crc_handshake_failures_total"][()] == 0
    assert not any("metered" in str(labels) for samples in metrics.values() for labels in samples)


async def test_refused_handshakes_are_counted(hub: HubProcess) -> None:
    with pytest.raises(RemoteError):
        await Master.connect(hub.url, Identity.generate(secrets.token_bytes))
    assert (await scrape(hub))["crc_handshake_failures_total"][()] == 1
