"""Prometheus metrics, every name prefixed ``hub_``, served at ``/metrics``.

Each app has its own registry (several apps can live in one process, as in the tests). Counting
never happens per socket on the fan-out path: a flush adds the number of sockets it reached at
once; gauges (sockets open, claims by state) are read when Prometheus scrapes. Frames in and
out, counted once per frame a socket sends, are plain ints (:class:`Tally`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.webhook import OutboxStats

__all__ = ["Metrics", "Tally"]


class Tally(Collector):
    """A counter by one label, kept as plain ints (``counts[value] += n`` on the dict that
    :meth:`track` returns) and exposed as a Counter is (``<name>_total{<label>=...}`` and
    ``<name>_created``).

    Frames in and out are counted once per frame on the event loop's thread, where a
    prometheus_client Counter would take a lock per increment, many times the cost of adding to
    an int in a dict (docs/performance.md, "Where the time goes"); a scrape from another thread
    reads whole ints.
    """

    def __init__(
        self, name: str, documentation: str, label: str, registry: CollectorRegistry
    ) -> None:
        self.counts: dict[str, int] = {}
        self._name = name
        self._documentation = documentation
        self._label = label
        self._created = time.time()
        registry.register(self)

    def track(self, values: Iterable[str]) -> dict[str, int]:
        """Count these label values too (each shown from 0 on); the dict to add to."""
        for value in values:
            self.counts.setdefault(value, 0)
        return self.counts

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, n in list(self.counts.items()):
            family.add_metric([value], n, created=self._created)
        yield family


class _Gauges(Collector):
    """Gauges read at scrape time from the live hub."""

    def __init__(self, sockets: Callable[[], int], claims: Callable[[], dict[str, int]]) -> None:
        self._sockets = sockets
        self._claims = claims

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("hub_sockets_open", "WebSocket streams open", self._sockets())
        by_state = GaugeMetricFamily("hub_claims", "claims by state", labels=["state"])
        for state, n in sorted(self._claims().items()):
            by_state.add_metric([state], n)
        yield by_state


class _WebhookGauges(Collector):
    """Each webhook receiver's queue, read at scrape time."""

    def __init__(self, stats: Callable[[], dict[str, OutboxStats]]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Metric]:
        labels = ["receiver"]
        depth = GaugeMetricFamily(
            "hub_webhook_queue_depth", "webhook events not yet delivered", labels=labels
        )
        oldest = GaugeMetricFamily(
            "hub_webhook_oldest_age_seconds",
            "age of the oldest webhook event not yet delivered (0: none)",
            labels=labels,
        )
        dropped = CounterMetricFamily(
            "hub_webhook_dropped",
            "webhook events dropped because the receiver's queue was full",
            labels=labels,
        )
        for name, stats in sorted(self._stats().items()):
            depth.add_metric([name], stats.depth)
            oldest.add_metric([name], stats.oldest)
            dropped.add_metric([name], stats.dropped)
        yield from (depth, oldest, dropped)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames_in = Tally("hub_frames_in", "frames received from sockets, by type", "type", r)
        self.frames_out = Tally("hub_frames_out", "frames sent to sockets, by type", "type", r)
        self.coalesced = Counter(
            "hub_counts_coalesced", "changes merged into a counts frame already due", registry=r
        )
        self.resyncs = Counter(
            "hub_resyncs", "workspaces re-read after changes may have been missed", registry=r
        )
        self.fanout = Histogram(
            "hub_fanout_seconds",
            "time to hand one counts frame to every socket of a workspace",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.closes = Counter(
            "hub_closes", "sockets closed by the hub, by reason", ["reason"], registry=r
        )
        self.webhook_deliveries = Counter(
            "hub_webhook_deliveries",
            "webhook POSTs by result: delivered (2xx), refused (another status), timeout, error",
            ["result"],
            registry=r,
        )
        self.webhook_retries = Counter(
            "hub_webhook_retries", "webhook POSTs that failed and will be tried again", registry=r
        )
        self.backend_errors = Counter(
            "hub_backend_errors", "unexpected errors of the presence backend or store", registry=r
        )

    def webhook_result(self, result: str, retry: bool) -> None:
        """One delivery attempt ended with ``result``; ``retry``: another one follows."""
        self.webhook_deliveries.labels(result).inc()
        if retry:
            self.webhook_retries.inc()

    def watch_webhooks(self, stats: Callable[[], dict[str, OutboxStats]]) -> None:
        """Register the webhook queue gauges (when webhooks are on)."""
        self.registry.register(_WebhookGauges(stats))

    def watch(self, sockets: Callable[[], int], claims: Callable[[], dict[str, int]]) -> None:
        """Register the scrape-time gauges (once the hub exists)."""
        self.registry.register(_Gauges(sockets, claims))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
