"""/metrics' pieces: the per-task text, the counters fed by events, and JSON log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from torchd.config.loader import parse_config
from torchd.core.errors import ConfigError
from torchd.core.events import FireMissed, FireSkipped, RunEnded, RunNotStarted, RunStarted
from torchd.core.logfields import run_fields
from torchd.core.model import LogFormat, RunOutcome, TaskGauges, TaskKind, Trigger
from torchd.system.logformat import JsonFormatter, formatter_for
from torchd.web.bulktext import TaskLines, label_value
from torchd.web.metrics import DURATION_BUCKETS, Metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, parsed by prometheus-client: (name, labels) -> value."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def started(task: str, *, late: float, trigger: Trigger = Trigger.SCHEDULE,
            attempt: int = 1) -> RunStarted:
    return RunStarted(task=task, run_id="r", pid=1, started=100.0 + late, scheduled=100.0,
                      fire_id=f"{task}@x", attempt=attempt, trigger=trigger, log_file="",
                      log_start=None)


def ended(task: str, outcome: RunOutcome, duration: float, *, at: float = 200.0,
          trigger: Trigger = Trigger.SCHEDULE) -> RunEnded:
    return RunEnded(task=task, run_id="r", pid=1, outcome=outcome, exit_code=0, signal=None,
                    started=at - duration, ended=at, duration=duration, scheduled=at,
                    fire_id=f"{task}@x", attempt=1, trigger=trigger, log_file="",
                    log_end=None, err_start=None, err_end=None)


def gauges() -> list[TaskGauges]:
    return [TaskGauges("a", "*/5 * * * * *", TaskKind.CRON, False, 1, 1_800_000_000.5),
            TaskGauges("b", "", TaskKind.DAEMON, True, 0, None)]


def scrape(metrics: Metrics) -> tuple[Samples, str]:
    body, content_type = asyncio.run(metrics.render())
    return samples(body.decode()), content_type


def test_label_values_are_escaped_as_the_text_format_wants() -> None:
    """A backslash, a double quote and a newline survive the parser."""
    odd = 'a\\b"c\nd'
    lines = TaskLines()
    text = lines.info("x_info", "help", [("t", (("schedule", odd),))])
    assert label_value("plain") == "plain"
    assert samples(text) == {("x_info", frozenset({("task", "t"), ("schedule", odd)})): 1.0}


def test_histogram_lines_are_cumulative_with_sum_and_count() -> None:
    """Counts per bucket become the cumulative le buckets, +Inf and _count equal."""
    text = TaskLines().histogram("d_seconds", "help", (1.0, 5.0), [("t", [2, 0, 3], 40.5)])
    found = samples(text)
    assert value(found, "d_seconds_bucket", task="t", le="1.0") == 2
    assert value(found, "d_seconds_bucket", task="t", le="5.0") == 2
    assert value(found, "d_seconds_bucket", task="t", le="+Inf") == 5
    assert value(found, "d_seconds_count", task="t") == 5
    assert value(found, "d_seconds_sum", task="t") == 40.5


def test_events_feed_runs_total_by_task_trigger_and_outcome() -> None:
    """Ended runs, start errors, skipped, dropped and missed fires, each under its labels."""
    metrics = Metrics(gauges)
    metrics.run_ended(ended("a", RunOutcome.OK, 0.2))
    metrics.run_ended(ended("a", RunOutcome.OK, 0.3))
    metrics.run_ended(ended("a", RunOutcome.FAILED, 2.0, trigger=Trigger.MANUAL))
    metrics.not_started(RunNotStarted(task="a", run_id="r", scheduled=1.0, fire_id="a@x",
                                      attempt=1, trigger=Trigger.SCHEDULE, error="no", time=1.0))
    metrics.fire_skipped(FireSkipped(task="a", scheduled=1.0, reason="paused"))
    metrics.fire_skipped(FireSkipped(task="a", scheduled=1.0, reason="full", dropped=True,
                                     run_id="m", trigger=Trigger.MANUAL))
    metrics.fire_missed(FireMissed(task="b", first=1.0, last=3.0, count=3))
    found, _ = scrape(metrics)
    runs = {labels: v for (name, labels), v in found.items() if name == "torchd_runs_total"}
    assert {tuple(sorted(labels)): v for labels, v in runs.items()} == {
        (("outcome", "ok"), ("task", "a"), ("trigger", "schedule")): 2,
        (("outcome", "failed"), ("task", "a"), ("trigger", "manual")): 1,
        (("outcome", "start-error"), ("task", "a"), ("trigger", "schedule")): 1,
        (("outcome", "skipped"), ("task", "a"), ("trigger", "schedule")): 1,
        (("outcome", "dropped"), ("task", "a"), ("trigger", "manual")): 1,
        (("outcome", "missed"), ("task", "b"), ("trigger", "schedule")): 3,
    }


def test_durations_and_last_success_per_task() -> None:
    """Each run's duration in the task's histogram; the last success is the latest ok end."""
    metrics = Metrics(gauges)
    metrics.seed_last_success({"a": 150.0, "b": 90.0})
    metrics.run_ended(ended("a", RunOutcome.OK, 0.05, at=160.0))
    metrics.run_ended(ended("a", RunOutcome.FAILED, 7.0, at=170.0))
    metrics.seed_last_success({"a": 120.0})  # older than what a run told: kept
    found, _ = scrape(metrics)
    assert value(found, "torchd_run_duration_seconds_bucket", task="a", le="0.1") == 1
    assert value(found, "torchd_run_duration_seconds_bucket", task="a", le="10.0") == 2
    assert value(found, "torchd_run_duration_seconds_count", task="a") == 2
    assert value(found, "torchd_run_duration_seconds_sum", task="a") == pytest.approx(7.05)
    assert value(found, "torchd_task_last_success_timestamp_seconds", task="a") == 160.0
    assert value(found, "torchd_task_last_success_timestamp_seconds", task="b") == 90.0
    assert len(DURATION_BUCKETS) == 10


def test_lateness_counts_first_attempts_of_scheduled_fires_only() -> None:
    """A retry, a catch-up or a manual run is not late: it starts when it is meant to."""
    metrics = Metrics(gauges)
    metrics.run_started(started("a", late=0.003))
    metrics.run_started(started("a", late=2.0))
    metrics.run_started(started("a", late=9.0, attempt=2))
    metrics.run_started(started("a", late=9.0, trigger=Trigger.MANUAL))
    metrics.run_started(started("a", late=9.0, trigger=Trigger.CATCHUP))
    found, _ = scrape(metrics)
    assert value(found, "torchd_fire_lateness_seconds_count") == 2
    assert value(found, "torchd_fire_lateness_seconds_bucket", le="0.005") == 1
    assert value(found, "torchd_fire_lateness_seconds_bucket", le="2.5") == 2


def test_gauges_come_from_the_tasks_at_scrape_time() -> None:
    """info, paused, running, next fire (absent when none); build info and reloads."""
    metrics = Metrics(gauges)
    metrics.reloaded(True)
    metrics.reloaded(False)
    metrics.reloaded(True)
    found, content_type = scrape(metrics)
    assert content_type.startswith("text/plain; version=0.0.4")
    assert value(found, "torchd_task_info", task="a", schedule="*/5 * * * * *",
                 type="cron") == 1
    assert value(found, "torchd_task_info", task="b", schedule="", type="daemon") == 1
    assert value(found, "torchd_task_paused", task="b") == 1
    assert value(found, "torchd_task_running", task="a") == 1
    assert value(found, "torchd_task_next_fire_timestamp_seconds", task="a") == 1_800_000_000.5
    assert ("torchd_task_next_fire_timestamp_seconds",
            frozenset({("task", "b")})) not in found
    assert value(found, "torchd_reloads_total", result="ok") == 2
    assert value(found, "torchd_reloads_total", result="rejected") == 1
    assert not any(name.startswith(("torchd_cluster", "torchd_redis")) for name, _ in found)
    [build] = [labels for name, labels in found if name == "torchd_build_info"]
    assert dict(build)["python"] == ".".join(map(str, sys.version_info[:3]))


class FakeCluster:
    def __init__(self, hosts: int | None) -> None:
        self.claim_counts = {"won": 4, "lost": 2, "later": 0, "error": 1}
        self.hosts = hosts

    async def live_hosts(self) -> int | None:
        return self.hosts


@pytest.mark.parametrize(("hosts", "up"), [(3, 1), (None, 0)], ids=["redis-up", "redis-down"])
def test_cluster_families(hosts: int | None, up: int) -> None:
    """Claims by result; hosts and redis_up as Redis answers the scrape."""
    found, _ = scrape(Metrics(gauges, FakeCluster(hosts)))
    assert value(found, "torchd_cluster_claims_total", result="won") == 4
    assert value(found, "torchd_cluster_claims_total", result="error") == 1
    assert value(found, "torchd_redis_up") == up
    assert found.get(("torchd_cluster_hosts", frozenset())) == hosts


def test_run_fields_set_only_what_applies() -> None:
    """None is left out; the duration is rounded to the millisecond."""
    assert run_fields("t") == {"task": "t"}
    assert run_fields("t", run_id="r", fire_id="t@x", outcome=RunOutcome.OK,
                      duration=1.23456, host="h1") == {
        "task": "t", "run_id": "r", "fire_id": "t@x", "outcome": "ok", "duration_s": 1.235,
        "host": "h1"}


def test_json_line_carries_the_record_and_its_fields() -> None:
    """ts in UTC to the millisecond, level, msg, logger, the run's fields, a traceback."""
    record = logging.LogRecord("torchd.scheduler", logging.WARNING, __file__, 1,
                               "task %s ended %s", ("t", "failed"), None)
    record.created = 1_800_000_000.25
    record.__dict__.update(run_fields("t", run_id="r1", outcome=RunOutcome.FAILED,
                                      duration=0.5))
    assert json.loads(JsonFormatter().format(record)) == {
        "ts": "2027-01-15T08:00:00.250Z", "level": "WARNING", "msg": "task t ended failed",
        "logger": "torchd.scheduler", "task": "t", "run_id": "r1", "outcome": "failed",
        "duration_s": 0.5}
    try:
        raise ValueError("boom\nline two")
    except ValueError:
        failed = logging.LogRecord("torchd", logging.ERROR, __file__, 1, "x", (),
                                   sys.exc_info())
    line = JsonFormatter().format(failed)
    assert "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exc"]


def test_formatter_for_picks_json_over_the_journal() -> None:
    """json wins everywhere; a file (fd None) gets the text format."""
    assert isinstance(formatter_for(2, LogFormat.JSON), JsonFormatter)
    assert not isinstance(formatter_for(None), JsonFormatter)


def test_daemon_log_format_is_read_from_the_file() -> None:
    """daemon.log_format: json; text by default; anything else is refused by name."""
    def parsed(text: str) -> LogFormat:
        config = parse_config(text.encode(), "t.yaml", identity=None)
        return config.daemon.log_format

    tasks = 'tasks: [{name: a, schedule: "* * * * * *", command: "true"}]\n'
    assert parsed("daemon: {log_format: json}\n" + tasks) is LogFormat.JSON
    assert parsed(tasks) is LogFormat.TEXT
    with pytest.raises(ConfigError) as caught:
        parsed("daemon: {log_format: xml}\n" + tasks)
    [problem] = caught.value.problems
    assert str(problem) == "t.yaml:1: daemon.log_format: 'xml' is not one of: text, json"
