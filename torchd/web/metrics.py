"""`/metrics`: counters and histograms fed by the engine's events from the daemon's start;
gauges read from the scheduler (and the cluster) at each scrape, never kept up to date on
every fire. prometheus-client builds the small families and the content type; the
per-task lines, 190,000 at 10,000 tasks, are written by `bulktext` (its docstring says
why). prometheus-client is imported at the first scrape, not at the daemon's start.

A scrape reads everything it needs on the loop (a few ms at 10,000 tasks), then writes
the text in a thread, so that fires due meanwhile are not held up by it."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from torchd.control.readpool import in_read_pool
from torchd.core.events import (
    EventBus,
    FireMissed,
    FireSkipped,
    RunEnded,
    RunNotStarted,
    RunStarted,
)
from torchd.core.model import RunOutcome, TaskGauges, Trigger
from torchd.web.bulktext import TaskLines

# Seconds. Runs of cron jobs: from a blink to an hour; a per-task histogram, so few buckets.
DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# How late a scheduled fire started; past MISSED_AFTER (5 s) a fire is missed, not late.
LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ClusterMetrics(Protocol):
    """What cluster mode tells /metrics (cluster.coordinator.Cluster)."""

    @property
    def claim_counts(self) -> dict[str, int]:
        """Claims made by this host, by result (won, lost, later, error)."""

    async def live_hosts(self) -> int | None:
        """Hosts whose heartbeat Redis holds; None if Redis does not answer."""


@dataclass(slots=True)
class Histogram:
    counts: list[int]  # one per bound, then one above every bound
    total: float = 0.0

    def observe(self, bounds: tuple[float, ...], value: float) -> None:
        self.counts[bisect_left(bounds, value)] += 1
        self.total += value


def new_histogram(bounds: tuple[float, ...]) -> Histogram:
    return Histogram([0] * (len(bounds) + 1))


@dataclass(frozen=True, slots=True)
class ScrapeData:
    """What a scrape read on the loop, to be written in a thread."""

    tasks: list[TaskGauges]
    last_success: dict[str, float]
    runs: dict[tuple[str, str, str], int]
    durations: list[tuple[str, list[int], float]]
    lateness: Histogram
    reloads: dict[str, int]
    claims: dict[str, int] | None
    hosts: int | None  # None: Redis did not answer


class Metrics:
    def __init__(self, tasks: Callable[[], list[TaskGauges]],
                 cluster: ClusterMetrics | None = None) -> None:
        self._tasks = tasks
        self._cluster = cluster
        self._runs: dict[tuple[str, str, str], int] = {}
        self._durations: dict[str, Histogram] = {}
        self._last_success: dict[str, float] = {}
        self._lateness = new_histogram(LATENESS_BUCKETS)
        self._reloads = {"ok": 0, "rejected": 0}
        self._lines = TaskLines()

    # ----- fed by events (each a few dict operations: see bench metrics) ---------------
    def subscribe(self, events: EventBus) -> None:
        events.subscribe(RunStarted, self.run_started)
        events.subscribe(RunEnded, self.run_ended)
        events.subscribe(RunNotStarted, self.not_started)
        events.subscribe(FireSkipped, self.fire_skipped)
        events.subscribe(FireMissed, self.fire_missed)

    def _count(self, key: tuple[str, str, str], count: int = 1) -> None:
        self._runs[key] = self._runs.get(key, 0) + count

    def run_started(self, event: RunStarted) -> None:
        """A scheduled fire's first attempt: how late it started (a retry, a catch-up or a
        manual run starts when it is meant to)."""
        if event.trigger is Trigger.SCHEDULE and event.attempt == 1:
            self._lateness.observe(LATENESS_BUCKETS, max(event.started - event.scheduled, 0.0))

    def run_ended(self, event: RunEnded) -> None:
        self._count((event.task, event.trigger, event.outcome))
        histogram = self._durations.get(event.task)
        if histogram is None:
            histogram = self._durations[event.task] = new_histogram(DURATION_BUCKETS)
        histogram.observe(DURATION_BUCKETS, event.duration)
        if event.outcome is RunOutcome.OK:
            self._last_success[event.task] = event.ended

    def not_started(self, event: RunNotStarted) -> None:
        self._count((event.task, event.trigger, RunOutcome.START_ERROR))

    def fire_skipped(self, event: FireSkipped) -> None:
        self._count((event.task, event.trigger,
                     RunOutcome.DROPPED if event.dropped else RunOutcome.SKIPPED))

    def fire_missed(self, event: FireMissed) -> None:
        self._count((event.task, Trigger.SCHEDULE, RunOutcome.MISSED), event.count)

    def reloaded(self, ok: bool) -> None:
        self._reloads["ok" if ok else "rejected"] += 1

    def seed_last_success(self, ends: dict[str, float]) -> None:
        """Each task's last successful run as the history had it at start (a run that
        ended since wins)."""
        for task, ended in ends.items():
            if ended > self._last_success.get(task, 0.0):
                self._last_success[task] = ended

    # ----- scraped --------------------------------------------------------------------
    async def render(self) -> tuple[bytes, str]:
        """The body and content type of /metrics."""
        hosts = claims = None
        if self._cluster is not None:
            hosts = await self._cluster.live_hosts()
            # Copied with the run counts below, with no await between: one instant.
            claims = dict(self._cluster.claim_counts)
        return await in_read_pool(self.text, self.read(claims, hosts))

    def read(self, claims: dict[str, int] | None = None,
             hosts: int | None = None) -> ScrapeData:
        """What a scrape needs, copied on the loop (events change the originals)."""
        return ScrapeData(
            tasks=self._tasks(), last_success=dict(self._last_success), runs=dict(self._runs),
            durations=[(task, list(h.counts), h.total) for task, h in self._durations.items()],
            lateness=Histogram(list(self._lateness.counts), self._lateness.total),
            reloads=dict(self._reloads), claims=claims, hosts=hosts)

    def text(self, scrape: ScrapeData) -> tuple[bytes, str]:
        """The body and content type for what a scrape read (in a thread)."""
        from torchd.web.promfamilies import exposition  # noqa: PLC0415 - at the first scrape

        return exposition(scrape, self._task_text(scrape))

    def _task_text(self, scrape: ScrapeData) -> str:
        lines = self._lines
        tasks = scrape.tasks
        names = [t.name for t in tasks]
        planned = [t for t in tasks if t.next_fire is not None]
        return "".join([
            lines.info("torchd_task_info", "A task of the running config (value 1), with its "
                       "schedule and type.",
                       [(t.name, (("schedule", t.schedule), ("type", t.kind))) for t in tasks]),
            lines.gauge("torchd_task_paused", "1 if the task is paused, else 0.", names,
                        [int(t.paused) for t in tasks]),
            lines.gauge("torchd_task_running", "Runs of the task going on now.", names,
                        [t.running for t in tasks]),
            lines.gauge("torchd_task_next_fire_timestamp_seconds", "When the task fires next "
                        "(Unix time); absent when no fire is planned.",
                        [t.name for t in planned], [t.next_fire or 0.0 for t in planned]),
            lines.gauge("torchd_task_last_success_timestamp_seconds", "When the task's last "
                        "successful run ended (Unix time), as far as the history goes.",
                        list(scrape.last_success), list(scrape.last_success.values())),
            lines.counter("torchd_runs_total", "Runs and fires that did not run, by task, "
                          "trigger and outcome, since the daemon started.",
                          list(scrape.runs.items()), ("trigger", "outcome")),
            lines.histogram("torchd_run_duration_seconds", "How long the task's runs took.",
                            DURATION_BUCKETS, scrape.durations),
        ])
