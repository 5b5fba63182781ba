"""The families of `/metrics` without a task label, built with prometheus-client at each
scrape, and the whole exposition (theirs, then the per-task text of `bulktext`). Imported
at the first scrape: prometheus-client takes about 45 ms to import."""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from torchd import __version__
from torchd.web.metrics import LATENESS_BUCKETS, ScrapeData


def exposition(scrape: ScrapeData, task_text: str) -> tuple[bytes, str]:
    """The body (text format 0.0.4) and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SmallFamilies(scrape))
    return generate_latest(registry) + task_text.encode(), CONTENT_TYPE_PLAIN_0_0_4


class SmallFamilies(Collector):
    """The families without a task label, built by prometheus-client at scrape time."""

    def __init__(self, scrape: ScrapeData) -> None:
        self._scrape = scrape

    def collect(self) -> Iterator[Metric]:
        scrape = self._scrape
        build = GaugeMetricFamily("torchd_build_info", "The running torchd (value 1).",
                                  labels=["version", "python"])
        build.add_metric([__version__, platform.python_version()], 1)
        yield build
        reloads = CounterMetricFamily("torchd_reloads", "Reloads of the task file since the "
                                      "daemon started, by result (ok, rejected).",
                                      labels=["result"])
        for result, count in scrape.reloads.items():
            reloads.add_metric([result], count)
        yield reloads
        lateness = HistogramMetricFamily("torchd_fire_lateness_seconds", "How late scheduled "
                                         "fires started (first attempts).")
        lateness.add_metric([], cumulative_buckets(LATENESS_BUCKETS, scrape.lateness.counts),
                            scrape.lateness.total)
        yield lateness
        if scrape.claims is None:
            return
        claims = CounterMetricFamily("torchd_cluster_claims", "Claims of run_on: one fires "
                                     "made by this host, by result (won, lost: another host "
                                     "won, later: a later fire ran already, error: Redis "
                                     "did not answer).", labels=["result"])
        for result, count in sorted(scrape.claims.items()):
            claims.add_metric([result], count)
        yield claims
        yield GaugeMetricFamily("torchd_redis_up", "1 if Redis answered this scrape, else 0.",
                                value=0 if scrape.hosts is None else 1)
        if scrape.hosts is not None:
            yield GaugeMetricFamily("torchd_cluster_hosts", "Hosts of the cluster whose "
                                    "heartbeat Redis holds.", value=scrape.hosts)


def cumulative_buckets(bounds: Iterable[float], counts: list[int]) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs as HistogramMetricFamily takes them."""
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip([*(repr(float(b)) for b in bounds), "+Inf"], counts, strict=True):
        total += count
        out.append((bound, total))
    return out
