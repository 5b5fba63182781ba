"""/metrics of a real daemon, parsed with prometheus-client's parser and checked against
the runs that really happened (its history), the reloads made, and, in cluster mode, a
real redis-server."""

from __future__ import annotations

import json
import platform
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import RedisServer, wait_for
from tests.webhelpers import WebDaemon
from torchd import __version__
from torchd.core.timefmt import from_iso

pytestmark = pytest.mark.e2e
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

TASKS = """\
daemon:
  http: {listen: LISTEN}
  watch: false  # reloads only when asked: each is counted
tasks:
  - {name: good, schedule: "* * * * * *", command: "true"}
  - {name: bad, schedule: "* * * * * *", command: "exit 3"}
  - {name: byhand, schedule: "0 0 0 1 1 *", command: "true"}
"""


def scrape(web: WebDaemon) -> Samples:
    status, headers, body = web.request("/metrics")
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def scrape_when(web: WebDaemon, ready: Callable[[Samples], bool]) -> Samples | None:
    """A scrape, if `ready` says it is the one waited for (for wait_for)."""
    found = scrape(web)
    return found if ready(found) else None


def get(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def runs_total(found: Samples) -> Counter[tuple[str, str, str]]:
    """(task, trigger, outcome) -> count, of the runs that started."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for (name, labels), count in found.items():
        tags = dict(labels)
        if name == "torchd_runs_total" and tags["outcome"] in ("ok", "failed"):
            counts[tags["task"], tags["trigger"], tags["outcome"]] = int(count)
    return counts


def history(web: WebDaemon) -> list[dict[str, Any]]:
    result = web.daemon.cli("history", "--json", "-n", "10000")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def history_runs(rows: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    return Counter((r["task"], r["trigger"], r["outcome"]) for r in rows
                   if r["outcome"] in ("ok", "failed"))


def test_metrics_agree_with_the_runs_that_happened(web_daemon: Callable[[str], WebDaemon]
                                                   ) -> None:
    """Runs that succeed, fail and are triggered, a reload accepted and one rejected, then
    everything paused: /metrics counts what the history recorded."""
    web = web_daemon(TASKS)
    daemon = web.daemon
    assert web.request("/metrics", token=None)[0] == 401  # metrics_auth is on by default
    wait_for(lambda: (c := runs_total(scrape(web)))[("good", "schedule", "ok")] >= 2
             and c[("bad", "schedule", "failed")] >= 2, timeout=20, message="runs")
    triggered = daemon.cli("trigger", "byhand", "--wait")
    assert triggered.returncode == 0, triggered.stderr
    daemon.config.write_text(TASKS.replace("LISTEN", web.url.removeprefix("http://"))
                             + '  - {name: added, schedule: "0 0 0 1 1 *", command: "true"}\n')
    assert daemon.cli("reload").returncode == 0
    good_file = daemon.config.read_text()
    daemon.config.write_text(good_file + '  - {name: broken, schedule: "61 * * * * *", '
                             'command: "true"}\n')
    assert daemon.cli("reload").returncode == 2
    assert daemon.cli("pause", "--all").returncode == 0
    wait_for(lambda: all(v == 0 for (name, _), v in scrape(web).items()
                         if name == "torchd_task_running"), message="runs to end")
    wait_for(lambda: get(scrape(web), "torchd_runs_total", task="good", trigger="schedule",
                         outcome="skipped"), message="a paused task's fire, skipped")

    # Paused and idle: the history catches up with what /metrics counted, exactly.
    wait_for(lambda: history_runs(history(web)) == runs_total(scrape(web)), timeout=15,
             message="the history and /metrics to agree")
    found = scrape(web)
    rows = history(web)
    counts = runs_total(found)
    assert counts[("byhand", "manual", "ok")] == 1
    assert counts[("good", "schedule", "ok")] >= 2
    assert counts[("bad", "schedule", "failed")] >= 2
    assert get(found, "torchd_reloads_total", result="ok") == 1
    assert get(found, "torchd_reloads_total", result="rejected") == 1
    last_good = max(r["ended"] for r in rows if r["task"] == "good" and r["outcome"] == "ok")
    assert get(found, "torchd_task_last_success_timestamp_seconds",
               task="good") == pytest.approx(from_iso(last_good), abs=0.002)
    assert get(found, "torchd_task_last_success_timestamp_seconds", task="bad") is None
    assert get(found, "torchd_run_duration_seconds_count", task="good") == \
        counts[("good", "schedule", "ok")]
    assert get(found, "torchd_run_duration_seconds_bucket", task="bad", le="+Inf") == \
        counts[("bad", "schedule", "failed")]
    for task in ("good", "bad", "byhand", "added"):
        assert get(found, "torchd_task_paused", task=task) == 1
    assert get(found, "torchd_task_info", task="added", schedule="0 0 0 1 1 *",
               type="cron") == 1
    assert get(found, "torchd_task_info", task="broken", schedule="61 * * * * *",
               type="cron") is None
    next_rare = get(found, "torchd_task_next_fire_timestamp_seconds", task="byhand")
    assert next_rare is not None
    assert next_rare > time.time()
    lateness = get(found, "torchd_fire_lateness_seconds_count")
    assert lateness is not None
    assert lateness >= 4  # every scheduled first attempt of good and bad
    assert get(found, "torchd_build_info", version=__version__,
               python=platform.python_version()) == 1


def test_metrics_without_a_token_when_metrics_auth_is_off(
        web_daemon: Callable[[str], WebDaemon]) -> None:
    """daemon.http.metrics_auth: false opens /metrics, and only it."""
    web = web_daemon("daemon:\n  http: {listen: LISTEN, metrics_auth: false}\ntasks: []\n")
    status, _, body = web.request("/metrics", token=None)
    assert status == 200
    assert b"torchd_build_info" in body
    assert web.request("/api/v1/status", token=None)[0] == 401


def test_cluster_metrics_with_a_real_redis(web_daemon: Callable[[str], WebDaemon],
                                           redis_server: RedisServer) -> None:
    """Claims won, hosts alive and Redis up; once Redis is gone, torchd_redis_up is 0."""
    web = web_daemon(f'daemon:\n  http: {{listen: LISTEN}}\n  cluster: {{redis: '
                     f'"{redis_server.url}", name: m, lease_ttl: 3s}}\ntasks:\n'
                     f'  - {{name: once, schedule: "* * * * * *", run_on: one, '
                     f'command: "true"}}\n')
    found = wait_for(lambda: scrape_when(web, lambda f: (get(
        f, "torchd_cluster_claims_total", result="won") or 0) >= 2), timeout=20,
        message="claims won")
    assert get(found, "torchd_redis_up") == 1
    assert get(found, "torchd_cluster_hosts") == 1
    won = get(found, "torchd_cluster_claims_total", result="won")
    ran = get(found, "torchd_runs_total", task="once", trigger="schedule", outcome="ok") or 0
    # One scrape is one instant: no run without a claim won before it, and at most the
    # runs of the last claims (a loaded machine) still going on.
    assert won - 2 <= ran <= won
    redis_server.stop()
    down = wait_for(lambda: scrape_when(web, lambda f: get(f, "torchd_redis_up") == 0),
                    timeout=20, message="torchd_redis_up 0")
    assert get(down, "torchd_cluster_hosts") is None

