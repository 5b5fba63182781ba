"""`torchd why` through the real CLI against what a real daemon recorded, read with the
daemon stopped; and `torchd check`'s warnings and `--strict`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Daemon, RedisServer, torchd_cmd, wait_for
from torchd.core.timefmt import from_iso

pytestmark = pytest.mark.e2e

TASKS = """\
    tasks:
      - {name: tick, schedule: "* * * * * *", command: ["/bin/true"]}
      - {name: slow, schedule: "* * * * * *", command: ["/bin/sleep", "1.5"]}
    """
LATE = '  - {name: late, schedule: "* * * * * *", command: ["/bin/true"]}\n'


def answers(daemon: Daemon, task: str, last: int) -> list[dict[str, Any]]:
    result = daemon.cli("why", task, "-c", str(daemon.config), "--last", str(last), "--json")
    assert result.returncode == 0, result.stderr
    found: list[dict[str, Any]] = json.loads(result.stdout)["answers"]
    return found


def history(daemon: Daemon, task: str) -> list[dict[str, Any]]:
    result = daemon.cli("history", task, "-n", "200", "--json")
    return json.loads(result.stdout or "[]")  # type: ignore[no-any-return]


def after(instant: float) -> Callable[[], bool]:
    return lambda: time.time() > instant


def test_why_tells_what_happened_to_each_fire(
        write_tasks: Callable[..., Path], daemon_factory: Callable[..., Daemon]) -> None:
    """Ran, skipped by max_running, paused, not in the file yet, missed while the daemon was
    stopped and while it was killed: each instant told, read with the daemon stopped."""
    began = time.time()
    config = write_tasks(TASKS)
    daemon = daemon_factory(config).start()
    wait_for(lambda: any(r["outcome"] == "skipped" for r in history(daemon, "slow")),
             timeout=15, message="a skipped fire of slow")
    assert daemon.cli("pause", "tick").returncode == 0
    wait_for(lambda: any(r["reason"] == "the task is paused" for r in history(daemon, "tick")),
             timeout=15, message="a paused fire of tick")
    assert daemon.cli("resume", "tick").returncode == 0
    config.write_text(textwrap.dedent(TASKS) + LATE)
    assert daemon.cli("reload", "-c", str(config)).returncode == 0
    wait_for(lambda: any(r["outcome"] == "ok" for r in history(daemon, "late")), timeout=15,
             message="a run of late")
    assert daemon.cli("stop").returncode == 0
    daemon.wait_exit()
    wait_for(after(time.time() + 2.5), timeout=5, message="fires pass with no daemon")
    daemon.start()
    wait_for(lambda: len({r["run_id"] for r in history(daemon, "tick")
                          if from_iso(r["at"]) > daemon.spawned_by}) >= 1, timeout=15,
             message="tick runs again")
    daemon.signal(signal.SIGKILL)
    daemon.wait_exit()
    wait_for(after(time.time() + 2.5), timeout=5, message="fires pass after a kill -9")
    daemon.start()
    wait_for(lambda: any(from_iso(r["at"]) > daemon.spawned_by for r in history(daemon, "tick")),
             timeout=15, message="tick runs after the kill")
    assert daemon.cli("stop").returncode == 0
    daemon.wait_exit()

    # the daemon is stopped from here on: why reads the state dir, for every second of
    # the test (however long a loaded machine made it)
    span = int(time.time() - began) + 5
    ticks = answers(daemon, "tick", span)
    verdicts = [a["verdict"] for a in ticks]
    assert {"ran", "skipped", "down"} <= set(verdicts), verdicts
    paused = [a for a in ticks if a["verdict"] == "skipped"]
    assert {a["reason"] for a in paused} == {"skipped: the task is paused"}
    downs = [a["reason"] for a in ticks if a["verdict"] == "down"]
    assert any("the daemon was down: stopped " in r for r in downs), downs
    assert any("ended without a stop record (killed?)" in r for r in downs), downs
    assert ticks[-1]["verdict"] == "next"
    ran = next(a for a in ticks if a["verdict"] == "ran")
    assert ran["records"][0]["outcome"] == "ok"
    assert ran["fire_id"] == ran["records"][0]["fire_id"]

    slow = [a for a in answers(daemon, "slow", span) if a["verdict"] == "skipped"]
    assert slow
    assert all("(max_running=1)" in a["reason"] for a in slow), slow

    late = [a["verdict"] for a in answers(daemon, "late", span)]
    first_run = late.index("ran")
    assert "absent" in late[:first_run], late
    assert "absent" not in late[first_run:], late
    absent = next(a for a in answers(daemon, "late", span) if a["verdict"] == "absent")
    assert absent["reason"].startswith("not run: the task was not in the file at that time")

    text = daemon.cli("why", "tick", "-c", str(config), "--last", "3", "--utc")
    assert text.returncode == 0, text.stderr
    shown = text.stdout.splitlines()
    assert len(shown) == 4  # three instants and the next fire
    assert shown[-1].endswith("  next fire")
    assert all(line[19:25] == "+00:00"
               for line in shown)


def test_why_finds_the_file_the_daemon_ran(
        write_tasks: Callable[..., Path], daemon_factory: Callable[..., Daemon]) -> None:
    """Without -c, the task file the last daemon loaded; --at picks one instant."""
    config = write_tasks(TASKS)
    daemon = daemon_factory(config).start()
    wait_for(lambda: len([r for r in history(daemon, "tick") if r["outcome"] == "ok"]) >= 2,
             timeout=15, message="two runs of tick")
    assert daemon.cli("stop").returncode == 0
    daemon.wait_exit()
    run = next(r for r in history(daemon, "tick") if r["outcome"] == "ok")
    at = run["fire_id"].split("@", 1)[1]
    result = daemon.cli("why", "tick", "--at", at, "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["file"] == str(config)
    assert [a["fire_id"] for a in found["answers"]] == [run["fire_id"]]
    assert found["answers"][0]["reason"].startswith(f"ran: run {run['run_id']} on ")


def test_why_names_the_upstream_run_that_counts_for_the_edge(
        write_tasks: Callable[..., Path], daemon_factory: Callable[..., Daemon]) -> None:
    """For a task fired by upstreams, the last upstream run of the outcome its edge counts
    (`on: failure` a failure, the default a success)."""
    config = write_tasks("""
        tasks:
          - {name: load, schedule: "@yearly", command: ["/bin/false"]}
          - {name: alert, after: {tasks: [load], on: failure}, command: ["/bin/true"]}
          - {name: report, after: load, command: ["/bin/true"]}
        """)
    daemon = daemon_factory(config).start()
    daemon.cli("trigger", "load", "--wait")
    (failed,) = [r for r in history(daemon, "load") if r["outcome"] == "failed"]
    shown = daemon.cli("why", "alert", "-c", str(config), "--utc").stdout.splitlines()[-1]
    assert shown.endswith("fires when its upstreams end (load): the last upstream failure "
                          f"ended at {failed['ended'][:19]}+00:00"), shown
    assert answers(daemon, "report", 1)[-1]["reason"] == (
        "fires when its upstreams end (load): no upstream success yet")


def check(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(torchd_cmd("check", "-c", str(path), *extra), capture_output=True,
                          text=True, timeout=60, check=False)


def test_check_warns_and_strict_fails(write_tasks: Callable[..., Path]) -> None:
    """Warnings leave the exit code 0; --strict makes any warning exit 2."""
    path = write_tasks("""\
        tasks:
          - name: nightly
            schedule: "0 30 2 * * *"
            timezone: Europe/Paris
            command: ["/bin/true"]
          - name: either
            schedule: "0 0 9 1 * MON"
            command: ["/bin/true"]
        """)
    plain = check(path)
    assert plain.returncode == 0, plain.stderr
    found = [line for line in plain.stderr.splitlines() if line.startswith("warning:")]
    assert [line.split("[")[-2].split("]")[0] if "[" in line else "" for line in found] \
        == ["dst", "dst", "day-or"]
    assert found[0].startswith(f"warning: {path}:3: task 'nightly': schedule: ")
    assert found[2].startswith(f"warning: {path}:7: task 'either': schedule: ")
    assert "3 warning(s)" in plain.stderr
    strict = check(path, "--strict")
    assert strict.returncode == 2
    assert "(--strict: exit 2)" in strict.stderr
    path.write_text(path.read_text().replace(
        "command: [\"/bin/true\"]\n", "command: [\"/bin/true\"]\n    lint: {ignore: [all]}\n"))
    quiet = check(path, "--strict")
    assert (quiet.returncode, "warning" in quiet.stderr) == (0, False), quiet.stderr


def test_why_names_the_host_that_claimed_a_fire(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon], redis_server: RedisServer) -> None:
    """Two hosts, a `run_on: one` task: each host's why tells of the fires the other ran,
    by the other's host id, from its own state dir with the daemons stopped."""
    config = write_tasks(f'daemon:\n  cluster: {{redis: "{redis_server.url}", name: t}}\n'
                         'tasks:\n  - {name: one, schedule: "* * * * * *", run_on: one, '
                         'command: ["/bin/true"]}\n')
    hosts = [daemon_factory(config, state=f"host{i}", env={"TORCHD_HOST_ID": f"h{i}"}).start()
             for i in range(2)]
    wait_for(lambda: all(any(r["outcome"] == "ok" for r in history(h, "one")) for h in hosts),
             timeout=30, message="both hosts ran a fire")
    for host in hosts:
        assert host.cli("stop").returncode == 0
        host.wait_exit()
    for mine, other in (("h0", "h1"), ("h1", "h0")):
        told = answers(hosts[int(mine[1])], "one", 30)
        ran_here = {a["fire_id"] for a in told if a["verdict"] == "ran"}
        elsewhere = [a for a in told if a["verdict"] == "elsewhere"]
        assert ran_here
        assert elsewhere
        claimed = [a for a in elsewhere if a["records"]]
        assert claimed, elsewhere
        named = [a for a in claimed if a["records"][0]["holder"]]
        assert named, claimed  # a late claim finds a later fire run: told apart below
        assert {a["reason"] for a in named} == {
            f"not run here: claimed and run by host {other} (run_on: one; its history has "
            "the run)"}
        assert {a["reason"] for a in claimed if a not in named} <= {
            "not run: the cluster had already run a later fire of the task (run_on: one)"}
        ran_there = {r["fire_id"] for r in history(hosts[int(other[1])], "one")
                     if r["outcome"] == "ok"}
        assert {a["fire_id"] for a in named} <= ran_there


def test_check_reads_usual_durations_from_the_state_dir(
        write_tasks: Callable[..., Path], daemon_factory: Callable[..., Daemon]) -> None:
    """`@every 1s` whose runs take 1.5 s: the overrun warning needs --state-dir's history."""
    config = write_tasks('tasks:\n  - {name: long, schedule: "@every 1s", '
                         'command: ["/bin/sleep", "1.5"]}\n')
    daemon = daemon_factory(config).start()
    wait_for(lambda: any(r["outcome"] == "ok" for r in history(daemon, "long")), timeout=15,
             message="a run of long")
    assert "[overrun]" not in check(config).stderr
    result = check(config, "--state-dir", str(daemon.state_dir))
    assert result.returncode == 0, result.stderr
    assert re.search(rf"warning: {re.escape(str(config))}:2: task 'long': schedule: '@every "
                     r"1s' is shorter than the task's usual run time \([1-9][0-9.]*s, from "
                     r"the history\)", result.stderr), result.stderr


def test_check_warns_of_hosts_the_cluster_does_not_know(
        write_tasks: Callable[..., Path], daemon_factory: Callable[..., Daemon],
        redis_server: RedisServer) -> None:
    """In cluster mode a hosts entry is checked against the registry's heartbeats, through
    the daemon of the state dir; with none answering, a note says it was not checked."""
    config = write_tasks(f'daemon:\n  cluster: {{redis: "{redis_server.url}", name: t}}\n'
                         'tasks:\n  - {name: job, schedule: "@hourly", hosts: ["h0", "web-*"], '
                         'command: ["/bin/true"]}\n')
    daemon = daemon_factory(config, state="host0", env={"TORCHD_HOST_ID": "h0"})
    alone = check(config, "--state-dir", str(daemon.state_dir))
    assert "note: hosts entries not checked against the cluster: no daemon answered" \
        in alone.stderr
    daemon.start()
    wait_for(lambda: "h0" in daemon.cli("status", "--cluster").stdout, timeout=15,
             message="the heartbeat in Redis")
    result = check(config, "--state-dir", str(daemon.state_dir))
    warned = [line for line in result.stderr.splitlines() if "[hosts]" in line]
    assert warned == [f"warning: {config}:4: task 'job': hosts: 'web-*' matches none of the 1 "
                      "host(s) the cluster's registry knows [hosts] (correct the entry, or "
                      "start torchd on that host; or silence it with lint: {ignore: [hosts]})"]
