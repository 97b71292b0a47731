"""``GET /metrics``: the hub in Prometheus' text format (one registry per hub, so several hubs in one process
stay apart).

- ``crc_connections{kind}``: sessions open on this replica (master, daemon);
- ``crc_messages_total{type}``: messages received and routed, by type;
- ``crc_outbox_frames``: frames waiting to be written to peers (back-pressure shows here first);
- ``crc_command_duration_seconds``: how long commands ran on their machines (a histogram, from signed results);
- ``crc_handshake_failures_total``: refused handshakes; ``crc_backend_errors_total{backend}``: store or
  backplane errors that turned a request away; ``crc_backplane_up``; ``crc_plans_running``;
- ``crc_foreign_reports_total``: output, progress or results a machine sent about an order that is not its own
  (dropped); ``crc_upload_bytes``: file contents held for orders not submitted yet.
Labels never name scenarios, machines or masters: metrics leave the hub, tenants' names must not.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from server.hub import Hub

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


class _LiveState(Collector):
    """Gauges read from the hub at scrape time (nothing to keep in step)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[GaugeMetricFamily]:
        hub = self.hub
        connections = GaugeMetricFamily("crc_connections", "Sessions open on this replica", labels=["kind"])
        connections.add_metric(["daemon"], len(hub.daemons))
        connections.add_metric(["master"], sum(len(conns) for conns in hub.masters.values()))
        yield connections
        peers = [*hub.daemons.values(), *(c for conns in hub.masters.values() for c in conns)]
        yield GaugeMetricFamily(
            "crc_outbox_frames", "Frames waiting to be written to peers", value=sum(c.outbox_size for c in peers)
        )
        yield GaugeMetricFamily(
            "crc_backplane_up", "1 when the backplane is reachable", value=int(hub.backplane.available)
        )
        yield GaugeMetricFamily("crc_plans_running", "Plans this replica is running", value=len(hub.plan_runners))
        yield GaugeMetricFamily(
            "crc_upload_bytes", "File contents held for orders not submitted yet",
            value=sum(c.uploads.size for conns in hub.masters.values() for c in conns),
        )  # fmt: skip


class HubMetrics:
    def __init__(self, hub: Hub) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.messages = Counter("crc_messages", "Messages received and routed, by type", ["type"],
                                registry=self.registry)  # fmt: skip
        self.handshake_failures = Counter("crc_handshake_failures", "Refused handshakes", registry=self.registry)
        self.foreign_reports = Counter("crc_foreign_reports", "Reports a machine sent about an order not its own",
                                       registry=self.registry)  # fmt: skip
        self.backend_errors = Counter("crc_backend_errors", "Requests turned away by store or backplane errors",
                                      ["backend"], registry=self.registry)  # fmt: skip
        self.command_duration = Histogram("crc_command_duration_seconds", "How long commands ran on their machines",
                                          buckets=DURATION_BUCKETS, registry=self.registry)  # fmt: skip
        self.registry.register(_LiveState(hub))
        self._by_type: dict[str, Any] = {}

    def count_message(self, msg_type: str) -> None:
        """Count one received message (the labelled child is looked up once per type, not per message)."""
        child = self._by_type.get(msg_type)
        if child is None:
            child = self._by_type[msg_type] = self.messages.labels(type=msg_type)
        child.inc()


async def metrics(request: web.Request) -> web.Response:
    from server.ws import HUB_KEY

    body = generate_latest(request.app[HUB_KEY].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def add_metrics_route(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
