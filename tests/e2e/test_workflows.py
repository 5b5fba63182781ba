"""Workflows (`after:`) through the real daemon and CLI: a chain, a fan-in, `on: failure`
after retries, a restart (kill -9) between two upstreams, trigger --no-cascade, a paused
downstream, and three daemons on one redis-server for `run_on: one`."""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Daemon, RedisServer, lines, torchd_cmd, wait_for
from torchd.core.timefmt import iso_utc

pytestmark = pytest.mark.e2e
Factory = Callable[..., Daemon]

# One line per run: its task, fire id, upstream task, run id and outcome, workflow id,
# and its own run id.
RECORD = ('echo "$TORCHD_TASK $TORCHD_FIRE_ID ${TORCHD_UPSTREAM_TASK:--} '
          '${TORCHD_UPSTREAM_RUN_ID:--} ${TORCHD_UPSTREAM_OUTCOME:--} '
          '${TORCHD_WORKFLOW_ID:--} $TORCHD_RUN_ID ${TORCHD_HOST_ID:--}" >> @FILE')
FIELDS = ("task", "fire", "up_task", "up_run", "up_outcome", "workflow", "run", "host")


def runs(out: Path, task: str | None = None) -> list[dict[str, str]]:
    found = [dict(zip(FIELDS, line.split(), strict=True)) for line in lines(out)]
    return [r for r in found if task is None or r["task"] == task]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def cli_json(daemon: Daemon, *args: str) -> Any:
    return json.loads(ok(daemon.cli(*args, "--json")))


def offline(*args: str) -> subprocess.CompletedProcess[str]:
    """A command on the task file alone (no state dir)."""
    return subprocess.run(torchd_cmd(*args), capture_output=True, text=True, timeout=60,
                          check=False)


def trigger(daemon: Daemon, task: str, *args: str) -> str:
    """Run a task by hand and wait for its end; its run id."""
    reply = cli_json(daemon, "trigger", task, "--wait", *args)
    return str(reply["run_id"])


def rows(daemon: Daemon, task: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cli_json(daemon, "history", task, "-n", "100")
    return found


def test_a_chain_runs_each_link_with_its_upstream_and_workflow(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """extract (scheduled) -> transform -> load: each link starts after its upstream's
    success, with the upstream's task, run id and outcome, and the root's fire id as
    workflow id; its fire id is derived from the upstream run."""
    out = tmp_path / "out"
    record = RECORD.replace("@FILE", str(out))
    config = write_tasks(f"""
        tasks:
          - {{name: extract, schedule: "*/2 * * * * *", command: '{record}'}}
          - {{name: transform, after: extract, command: '{record}'}}
          - {{name: load, after: transform, command: '{record}'}}
    """)
    daemon = daemon_factory(config).start()
    wait_for(lambda: runs(out, "load"), timeout=20, message="a load run")
    load = runs(out, "load")[0]
    transform = next(r for r in runs(out, "transform") if r["run"] == load["up_run"])
    extract = next(r for r in runs(out, "extract") if r["run"] == transform["up_run"])
    assert (extract["up_task"], extract["workflow"]) == ("-", "-")
    assert (transform["up_task"], transform["up_outcome"]) == ("extract", "ok")
    assert transform["fire"] == f"transform@extract.{extract['run']}"
    assert (load["up_task"], load["up_outcome"]) == ("transform", "ok")
    assert load["fire"] == f"load@transform.{transform['run']}"
    assert transform["workflow"] == load["workflow"] == extract["fire"]
    row = next(r for r in rows(daemon, "load") if r["run_id"] == load["run"])
    assert (row["trigger"], row["fire_id"], row["outcome"]) == ("upstream", load["fire"], "ok")
    listed = {r["name"]: r for r in cli_json(daemon, "list")}
    assert listed["load"]["idle"] == "after transform"
    tasks = {t["name"]: t for t in cli_json(daemon, "status")["tasks"]}
    assert (tasks["transform"]["upstreams"], tasks["transform"]["downstreams"]) == (
        ["extract"], ["load"])
    assert tasks["transform"]["next_fire"] is None
    index = {t["name"]: t for t in daemon_index(daemon)}
    assert (index["load"]["after"], index["extract"]["after"]) == (True, False)
    # why finds a downstream's runs by their fire ids (named after the upstream run)
    why = daemon.cli("why", "load", "--last", "1", "-c", str(config))
    assert why.returncode == 0, why.stderr
    assert f"ran: run {load['run']}" in why.stdout


def daemon_index(daemon: Daemon) -> list[dict[str, object]]:
    from torchd.control import client

    reply: dict[str, list[dict[str, object]]] = client.call(
        daemon.state_dir / "torchd.sock", "index")
    return reply["tasks"]


def test_fan_in_fires_once_when_every_upstream_succeeded(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """report after [a, b]: two successes of a before b's collapse into one run, fired by
    b's run; a further b alone does not fire it again."""
    out = tmp_path / "out"
    record = RECORD.replace("@FILE", str(out))
    config = write_tasks(f"""
        tasks:
          - {{name: a, schedule: "0 0 0 1 1 *", command: '{record}'}}
          - {{name: b, schedule: "0 0 0 1 1 *", command: '{record}'}}
          - {{name: report, after: [a, b], command: '{record}'}}
    """)
    daemon = daemon_factory(config).start()
    trigger(daemon, "a")
    trigger(daemon, "a")
    second_b = trigger(daemon, "b")
    wait_for(lambda: runs(out, "report"), timeout=10, message="a report run")
    trigger(daemon, "b")
    trigger(daemon, "a")  # a and b again: the second report
    wait_for(lambda: len(runs(out, "report")) == 2, timeout=10, message="a second report")
    first, second = runs(out, "report")
    assert (first["up_task"], first["up_run"]) == ("b", second_b)
    assert second["up_task"] == "a"
    assert len(runs(out, "a")) == 3


def test_on_failure_fires_after_the_retries_and_success_edges_say_why(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """extract fails, is retried, fails again: alert (on: failure) runs once, after the
    last attempt; transform (on success) gets a skipped row naming extract's run."""
    out = tmp_path / "out"
    record = RECORD.replace("@FILE", str(out))
    config = write_tasks(f"""
        tasks:
          - name: extract
            schedule: "0 0 0 1 1 *"
            retries: {{max: 1, delay: 0.2}}
            command: '{record}; exit 3'
          - {{name: transform, after: extract, command: '{record}'}}
          - name: alert
            after: {{tasks: [extract, transform], on: failure}}
            command: '{record}'
    """)
    daemon = daemon_factory(config).start()
    ok(daemon.cli("trigger", "extract"))
    wait_for(lambda: runs(out, "alert"), timeout=10, message="an alert run")
    attempts = runs(out, "extract")
    assert len(attempts) == 2  # the alert came after the retry, not after the first failure
    alert = runs(out, "alert")[0]
    assert (alert["up_task"], alert["up_outcome"], alert["up_run"]) == (
        "extract", "failed", attempts[1]["run"])
    skipped = wait_for(lambda: [r for r in rows(daemon, "transform")
                                if r["outcome"] == "skipped"], timeout=10,
                       message="transform's skipped row")
    assert skipped[0]["reason"] == f"upstream failed: extract run {attempts[1]['run']}"
    assert skipped[0]["fire_id"] == f"transform@extract.{attempts[1]['run']}"
    assert skipped[0]["trigger"] == "upstream"  # counted as what it was for
    assert runs(out, "transform") == []
    assert len(runs(out, "alert")) == 1


def test_a_satisfied_edge_survives_a_killed_daemon_and_fires_once(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """a succeeds, the daemon is killed (-9) and started again, b succeeds: report runs
    once; b again alone does not run it."""
    out = tmp_path / "out"
    record = RECORD.replace("@FILE", str(out))
    config = write_tasks(f"""
        tasks:
          - {{name: a, schedule: "0 0 0 1 1 *", command: '{record}'}}
          - {{name: b, schedule: "0 0 0 1 1 *", command: '{record}'}}
          - {{name: report, after: [a, b], command: '{record}'}}
    """)
    daemon = daemon_factory(config).start()
    first_a = trigger(daemon, "a")
    daemon.signal(signal.SIGKILL)
    daemon.wait_exit()
    daemon.start()
    trigger(daemon, "b")
    wait_for(lambda: runs(out, "report"), timeout=10, message="a report run")
    assert runs(out, "report")[0]["up_task"] == "b"
    trigger(daemon, "b")
    trigger(daemon, "b")
    # A downstream starts before its upstream's --wait is answered: after the stop the
    # history holds every report run there was.
    ok(daemon.cli("stop"))
    daemon.wait_exit()
    reports = [r for r in rows(daemon, "report") if r["trigger"] == "upstream"]
    assert len(reports) == 1
    assert runs(out, "a")[0]["run"] == first_a


def test_trigger_no_cascade_and_a_paused_downstream(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """`trigger --no-cascade` fires no downstream; a paused downstream records the trigger
    as skipped; `trigger` cascades by default."""
    out = tmp_path / "out"
    record = RECORD.replace("@FILE", str(out))
    config = write_tasks(f"""
        tasks:
          - {{name: a, schedule: "0 0 0 1 1 *", command: '{record}'}}
          - {{name: b, after: a, command: '{record}'}}
    """)
    daemon = daemon_factory(config).start()
    trigger(daemon, "a", "--no-cascade")
    ok(daemon.cli("pause", "b"))
    paused_a = trigger(daemon, "a")
    skipped = wait_for(lambda: [r for r in rows(daemon, "b") if r["outcome"] == "skipped"],
                       timeout=10, message="b's skipped row")
    assert skipped[0]["reason"] == "the task is paused"
    assert skipped[0]["fire_id"] == f"b@a.{paused_a}"
    ok(daemon.cli("resume", "b"))
    cascaded_a = trigger(daemon, "a")
    wait_for(lambda: runs(out, "b"), timeout=10, message="a b run")
    assert [r["up_run"] for r in runs(out, "b")] == [cascaded_a]


def test_graph_prints_the_workflow(write_tasks: Callable[..., Path]) -> None:
    """`torchd graph` and `torchd graph --dot` from the task file alone."""
    config = write_tasks("""
        tasks:
          - {name: extract, schedule: "0 0 2 * * *", command: "true"}
          - {name: transform, after: extract, command: "true"}
          - name: alert
            after: {tasks: [extract, transform], on: failure}
            command: "true"
    """)
    text = ok(offline("graph", "-c", str(config)))
    assert text.splitlines() == [
        "extract  (0 0 2 * * *)  -> alert, transform",
        "transform  (after extract)  -> alert",
        "alert  (after extract, transform on failure)",
    ]
    dot = ok(offline("graph", "-c", str(config), "--dot"))
    assert '"extract" -> "alert" [label="failure"];' in dot
    assert '"extract" -> "transform";' in dot


def test_a_cycle_is_a_load_error_with_its_path(write_tasks: Callable[..., Path]) -> None:
    """`torchd check` names the file, the line and the cycle's path."""
    config = write_tasks("""
        tasks:
          - {name: a, after: c, command: "true"}
          - {name: b, after: a, command: "true"}
          - {name: c, after: b, command: "true"}
    """)
    result = offline("check", "-c", str(config))
    assert result.returncode == 2
    assert f"{config}:3: task 'a': after: a cycle: a -> b -> c -> a" in result.stderr


def cluster_file(write_tasks: Callable[..., Path], redis: RedisServer, tasks: str) -> Path:
    items = textwrap.indent(textwrap.dedent(tasks).strip("\n"), "  ")
    return write_tasks(f'daemon:\n  cluster: {{redis: "{redis.url}", name: w}}\n'
                       f"tasks:\n{items}\n")


def test_three_daemons_run_a_run_on_one_downstream_once_per_upstream_run(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory,
        redis_server: RedisServer) -> None:
    """Three daemons on one Redis: a `run_on: one` upstream every second, a `run_on: one`
    downstream after it (no max_running: on a loaded machine a run may outlast a second,
    and a trigger skipped by the limit is not what this counts), and a fan-in after two
    `run_on: one` upstreams that may run on different hosts: each downstream runs exactly
    once per triggering upstream run."""
    out = tmp_path / "out"
    record = RECORD.replace("@FILE", str(out))
    config = cluster_file(write_tasks, redis_server, f"""
        - {{name: up, schedule: "* * * * * *", run_on: one, command: '{record}'}}
        - {{name: down, after: up, run_on: one, max_running: 0, command: '{record}'}}
        - {{name: left, schedule: "*/2 * * * * *", run_on: one, command: '{record}'}}
        - {{name: right, schedule: "*/2 * * * * *", run_on: one, command: '{record}'}}
        - {{name: both, after: [left, right], run_on: one, max_running: 0,
            command: '{record}'}}
    """)
    hosts = [daemon_factory(config, state=f"host{i}", env={"TORCHD_HOST_ID": f"h{i}"}).start()
             for i in range(3)]
    wait_for(lambda: len(runs(out, "down")) >= 15 and len(runs(out, "both")) >= 6,
             timeout=60, interval=0.5, message="15 downstream runs and 6 fan-ins")
    # An upstream whose exit the daemon handles after its stop began triggers nothing (on
    # purpose): count only those that ended 2 s before, whose exits a loaded machine has
    # surely handled. (The JSON form sorts as time does.)
    stopping = iso_utc(time.time() - 2.0)
    for host in hosts:
        ok(host.cli("stop"))
        host.wait_exit()
    # A downstream is spawned as its upstream's exit is handled: every upstream run that
    # succeeded before the stops has its downstream row (started, maybe killed by a stop).
    history = {f"h{i}": [r for task in ("up", "down", "both")
                         for r in rows(host, task)] for i, host in enumerate(hosts)}
    ups = {r["run_id"]: host for host, found in history.items() for r in found
           if r["task"] == "up" and r["outcome"] == "ok" and r["ended"] < stopping}
    downs = [(r, host) for host, found in history.items() for r in found
             if r["task"] == "down" and r["trigger"] == "upstream"]
    per_upstream = Counter(r["fire_id"].split(".")[-1] for r, _host in downs)
    assert set(per_upstream.values()) == {1}  # never twice for one upstream run
    others = [(r["fire_id"], r["outcome"], r["reason"]) for found in history.values()
              for r in found if r["task"] == "down" and r["trigger"] != "upstream"]
    assert set(ups) <= set(per_upstream), (set(ups) - set(per_upstream), others)  # none lost
    assert all(host == ups[r["fire_id"].split(".")[-1]] for r, host in downs
               if r["fire_id"].split(".")[-1] in ups)  # on the host that ran its upstream
    assert len(set(ups.values())) > 1  # the fleet shared the upstream
    # fan-in: once per pair (left, right) of the same instant, whichever hosts ran them
    both = [r for found in history.values() for r in found
            if r["task"] == "both" and r["trigger"] == "upstream"]
    assert set(Counter(r["fire_id"] for r in both).values()) == {1}
    lefts, rights = len(runs(out, "left")), len(runs(out, "right"))
    assert min(lefts, rights) - 2 <= len(both) <= min(lefts, rights)
