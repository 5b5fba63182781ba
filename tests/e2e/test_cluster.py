"""Cluster mode with a real redis-server on a free loopback port and several real daemons
on this machine (distinct state dirs and host ids)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Daemon, RedisServer, lines, process_gone, wait_for

pytestmark = pytest.mark.e2e
Factory = Callable[..., Daemon]


def cluster_file(write_tasks: Callable[..., Path], redis: RedisServer, tasks: str,
                 name: str = "tasks.yaml", extra: str = "") -> Path:
    """A task file in cluster mode; `tasks` is YAML list items (any common indentation)."""
    items = textwrap.indent(textwrap.dedent(tasks).strip("\n"), "  ")
    return write_tasks(f'daemon:\n  cluster: {{redis: "{redis.url}", name: t, lease_ttl: 3s'
                       f'{extra}}}\ntasks:\n{items}\n', name)


def start_hosts(factory: Factory, configs: list[Path]) -> list[Daemon]:
    return [factory(config, state=f"host{i}", env={"TORCHD_HOST_ID": f"h{i}"}).start()
            for i, config in enumerate(configs)]


def record(out: Path) -> str:
    return f'echo "$TORCHD_FIRE_ID $TORCHD_HOST_ID" >> {out}'


def per_second(out: Path) -> dict[tuple[str, int], list[str]]:
    """(task, epoch second) -> the hosts that ran that fire."""
    runs: dict[tuple[str, int], list[str]] = {}
    for line in lines(out):
        fire, host = line.split()
        task, stamp = fire.split("@")
        second = int(time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone)
        runs.setdefault((task, second), []).append(host)
    return runs


def status(daemon: Daemon, *args: str) -> Any:
    result = daemon.cli("status", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.timeout(240)  # a minute of fires, and three daemons' starts on a loaded machine
def test_three_hosts_run_each_fire_exactly_once(tmp_path: Path,
                                                write_tasks: Callable[..., Path],
                                                daemon_factory: Factory,
                                                redis_server: RedisServer) -> None:
    """3 daemons x 20 per-second `run_on: one` tasks for 60 s: one run per task per
    second, spread over the hosts."""
    out = tmp_path / "out"
    tasks = "\n".join(f'- {{name: t{i}, schedule: "* * * * * *", run_on: one, '
                      f"command: '{record(out)}'}}" for i in range(20))
    config = cluster_file(write_tasks, redis_server, tasks)
    hosts = start_hosts(daemon_factory, [config] * 3)
    begin = int(time.time()) + 2
    end = begin + 59
    wait_for(lambda: time.time() > end + 2, timeout=90, interval=0.5, message="60 s")

    def last_second_recorded() -> bool:
        runs = per_second(out)
        return all((f"t{i}", end) in runs for i in range(20))

    # Under load a claim may wait 1 s (every host over max_load) and a run take a while to
    # write its line: give the last second's runs time. A fire that never ran is a gap below.
    with contextlib.suppress(AssertionError):
        wait_for(last_second_recorded, timeout=30, interval=0.2, message="the last second")
    runs = per_second(out)
    window = {key: ran for key, ran in runs.items() if begin <= key[1] <= end}
    duplicates = sum(len(ran) - 1 for ran in window.values())
    gaps = 20 * 60 - len(window)
    spread = Counter(host for ran in window.values() for host in ran)
    print(f"exactly-once: {len(window)} fires, {duplicates} duplicates, {gaps} gaps, "
          f"per host {dict(spread)}")
    missing = sorted({second - begin for second in range(begin, end + 1) for i in range(20)
                      if (f"t{i}", second) not in window})
    assert (duplicates, gaps) == (0, 0), f"seconds after the first with gaps: {missing}"
    assert len(spread) == 3  # every host won some
    view = status(hosts[0], "--cluster")
    assert [h["host_id"] for h in view["hosts"]] == ["h0", "h1", "h2"]
    assert view["config_drift"] is False
    last = status(hosts[1])["tasks"][0]["last_claim"]
    assert last["host"] in {"h0", "h1", "h2"}
    def ran_on(index: int) -> set[str]:
        return {f"t0@{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(second))}"
                for (task, second), ran in per_second(out).items() if task == "t0"
                and ran == [f"h{index}"]}

    for index, host in enumerate(hosts):  # each host's history holds the runs it won
        before = ran_on(index)
        rows = json.loads(host.cli("history", "t0", "-n", "1000", "--json").stdout)
        after = ran_on(index)  # the hosts go on firing: read around the history
        assert {r["host"] for r in rows} == {f"h{index}"}
        recorded = {r["fire_id"] for r in rows}
        assert before <= recorded
        assert len(recorded - after) <= 2  # only what it won (a run may not have written yet)


def test_a_daemon_task_fails_over_when_its_holder_dies(tmp_path: Path,
                                                       write_tasks: Callable[..., Path],
                                                       daemon_factory: Factory,
                                                       redis_server: RedisServer) -> None:
    """kill -9 of the lease holder: its instance goes with it (its lease guard sees the
    daemon gone) and another host starts the task within the lease TTL (3 s here) and a
    renewal period."""
    out = tmp_path / "out"
    config = cluster_file(write_tasks, redis_server, f"""
          - name: worker
            type: daemon
            run_on: one
            command: 'echo "$TORCHD_HOST_ID" >> {out}; exec sleep 300'
    """)
    hosts = start_hosts(daemon_factory, [config, config])
    wait_for(lambda: len(lines(out)) == 1, timeout=10, message="one instance")
    holder_id = lines(out)[0]
    holder = hosts[int(holder_id[1])]
    other = hosts[1 - int(holder_id[1])]
    view = status(other, "--cluster")
    assert view["leases"] == {"worker": holder_id}
    instance = wait_for(lambda: next((p.pid for p in holder.descendants()
                                      if p.name() == "sleep"), None),
                        message="the instance's sleep")
    os.kill(holder.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: process_gone(instance), timeout=5, message="the instance fenced")
    wait_for(lambda: len(lines(out)) == 2, timeout=10, message="the failover")
    failover = time.monotonic() - killed_at
    print(f"failover after {failover:.2f}s (lease_ttl 3s)")
    assert lines(out)[1] == other.env["TORCHD_HOST_ID"]
    # Not before the lease (renewed every second) could expire; within the TTL and what a
    # loaded machine takes to claim and start the instance.
    assert 3 - 1 - 0.5 <= failover < 3 + 3
    assert status(other)["tasks"][0]["lease_held"] is True


def test_redis_outage_skips_one_runs_and_work_resumes(tmp_path: Path,
                                                      write_tasks: Callable[..., Path],
                                                      daemon_factory: Factory,
                                                      redis_server: RedisServer) -> None:
    """Redis stops for a few seconds: `run_on: all` tasks go on everywhere; `run_on: one`
    fires are missed and recorded with the reason; both resume without a restart."""
    out = tmp_path / "out"
    config = cluster_file(write_tasks, redis_server, f"""
          - {{name: single, schedule: "* * * * * *", run_on: one, command: '{record(out)}'}}
          - {{name: every, schedule: "* * * * * *", command: '{record(out)}'}}
    """)
    hosts = start_hosts(daemon_factory, [config, config])
    wait_for(lambda: len(per_second(out)) >= 4, timeout=10, message="fires")
    redis_server.stop()
    down_from = int(time.time()) + 1
    wait_for(lambda: time.time() > down_from + 4, timeout=10, message="4 s of outage")
    down_to = int(time.time()) - 1
    redis_server.start()
    restarted = time.time()

    def first_single_after_outage() -> int | None:
        return min((second for (task, second) in per_second(out)
                    if task == "single" and second > down_to), default=None)

    resumed = wait_for(first_single_after_outage, timeout=15,
                       message="run_on: one fires again")
    print(f"run_on: one resumed {resumed - restarted:.1f}s after Redis came back")
    def settled() -> bool:
        runs = per_second(out)
        return (all(len(runs.get(("every", s), [])) >= 2 for s in range(down_from, resumed + 4))
                and all(runs.get(("single", s)) for s in range(resumed, resumed + 4)))

    wait_for(settled, timeout=20, message="fires after the outage")
    runs = per_second(out)
    for second in range(down_from, resumed + 4):
        assert sorted(runs.get(("every", second), [])) == ["h0", "h1"], second
    for second in range(down_from, down_to + 1):
        assert ("single", second) not in runs, second
    for second in range(resumed, resumed + 4):
        assert len(runs.get(("single", second), [])) == 1, second
    missed = [r for r in json.loads(hosts[0].cli("history", "single", "-n", "200", "--json")
                                    .stdout) if r["outcome"] == "missed"]
    assert missed
    assert "cluster: Redis unavailable" in missed[0]["reason"]
    assert "no longer: cluster: Redis unavailable" in hosts[0].stderr()


def test_an_overloaded_host_leaves_fires_to_idle_ones(tmp_path: Path,
                                                      write_tasks: Callable[..., Path],
                                                      daemon_factory: Factory,
                                                      redis_server: RedisServer) -> None:
    """max_load 0 makes h0 always overloaded: h1 wins every fire while it runs; alone, h0
    still runs them (after its 1 s of deference)."""
    out = tmp_path / "out"
    task = f'- {{name: job, schedule: "* * * * * *", run_on: one, command: \'{record(out)}\'}}'
    busy = cluster_file(write_tasks, redis_server, task, "busy.yaml", ", max_load: 0")
    idle = cluster_file(write_tasks, redis_server, task, "idle.yaml", ", max_load: 100")
    busy_host, idle_host = start_hosts(daemon_factory, [busy, idle])

    # h0 started first and ran the fires alone until h1 came up. Judged by each fire's
    # second, not by the order of the lines: h0's last claim, a second late, may write its
    # line after h1's first.
    def seconds_of(host: str) -> list[int]:
        return sorted(second for (_, second), ran in per_second(out).items() if host in ran)

    first = wait_for(lambda: next(iter(seconds_of("h1")), None), timeout=10,
                     message="h1's first fire")
    wait_for(lambda: len([s for s in seconds_of("h1") if s > first + 1]) >= 8, timeout=15,
             message="eight more fires")
    assert [s for s in seconds_of("h0") if s > first + 1] == []
    assert status(busy_host, "--cluster")["config_drift"] is True
    idle_host.signal(signal.SIGTERM)
    idle_host.wait_exit()
    count = len(lines(out))
    wait_for(lambda: len(lines(out)) >= count + 3, timeout=10, message="h0 alone")
    assert {line.split()[1] for line in lines(out)[count:]} == {"h0"}


def test_a_restarted_host_does_not_catch_up_what_others_ran(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory,
        redis_server: RedisServer) -> None:
    """`catchup: all` on a host that was down while another ran the fires: its catch-up
    claims lose, so no fire runs twice."""
    out = tmp_path / "out"
    config = cluster_file(write_tasks, redis_server, f"""
          - name: job
            schedule: "* * * * * *"
            run_on: one
            catchup: all
            command: '{record(out)}'
    """)
    first, second = start_hosts(daemon_factory, [config, config])
    wait_for(lambda: len(lines(out)) >= 2, timeout=10, message="fires")
    first.signal(signal.SIGTERM)
    first.wait_exit()
    count = len(lines(out))
    wait_for(lambda: len(lines(out)) >= count + 4, timeout=10, message="fires by h1 alone")
    first.start()
    wait_for(lambda: "catching up" in first.stderr(), timeout=10, message="the catch-up")
    settle = len(lines(out))
    wait_for(lambda: len(lines(out)) >= settle + 3, timeout=10, message="fires after")
    runs = per_second(out)
    assert all(len(hosts) == 1 for hosts in runs.values()), runs
    assert second.proc is not None
    assert second.proc.poll() is None
