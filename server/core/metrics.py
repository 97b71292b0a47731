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

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)

Reading = Callable[[], "float | Mapping[str, float]"]


class _Gauges(Collector):
    """Gauges read at scrape time (nothing to keep in step), each registered by what owns the figure."""

    def __init__(self) -> None:
        self.readings: dict[str, tuple[str, str, Reading]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, (text, label, read) in self.readings.items():
            value = read()
            if isinstance(value, Mapping):
                family = GaugeMetricFamily(name, text, labels=[label])
                for key, figure in value.items():
                    family.add_metric([key], figure)
                yield family
            else:
                yield GaugeMetricFamily(name, text, value=value)


class HubMetrics:
    def __init__(self) -> None:
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
        self._gauges = _Gauges()
        self.registry.register(self._gauges)
        self._by_type: dict[str, Any] = {}

    def gauge(self, name: str, text: str, read: Reading, *, label: str = "") -> None:
        """A gauge read when scraped; ``read`` gives one figure, or one per value of ``label``."""
        self._gauges.readings[name] = (text, label, read)

    def count_message(self, msg_type: str) -> None:
        """Count one received message (the labelled child is looked up once per type, not per message)."""
        child = self._by_type.get(msg_type)
        if child is None:
            child = self._by_type[msg_type] = self.messages.labels(type=msg_type)
        child.inc()


def add_metrics_route(app: web.Application, metrics: HubMetrics) -> None:
    async def scrape(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app.router.add_get("/metrics", scrape)
