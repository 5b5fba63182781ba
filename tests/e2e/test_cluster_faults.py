"""Cluster faults: a frozen lease holder, a Redis that comes back empty, clocks apart
(issue 21). Real redis-server, real daemons, libfaketime for a clock ahead."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import redis

from tests.e2e.test_cluster import cluster_file, per_second, record, start_hosts, status
from tests.helpers import Daemon, RedisServer, libfaketime, lines, process_gone, wait_for

pytestmark = pytest.mark.e2e
Factory = Callable[..., Daemon]


def test_a_frozen_lease_holder_loses_its_instance_before_another_host_starts_one(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory,
        redis_server: RedisServer) -> None:
    """SIGSTOP the daemon holding a leased instance: its guard ends the instance before
    the lease can expire; only then does the other host start the task, with a higher
    fencing token. Continued, the frozen daemon does not start it again."""
    out = tmp_path / "out"
    config = cluster_file(write_tasks, redis_server, f"""
          - name: worker
            type: daemon
            run_on: one
            command: >-
              echo "$TORCHD_HOST_ID $(date +%s.%N) $TORCHD_FENCING_TOKEN" >> {out};
              exec sleep 300
    """)
    hosts = start_hosts(daemon_factory, [config, config])
    wait_for(lambda: len(lines(out)) == 1, timeout=10, message="one instance")
    holder_id, _, first_token = lines(out)[0].split()
    holder = hosts[int(holder_id[1])]
    instance = wait_for(lambda: next((p.pid for p in holder.descendants()
                                      if p.name() == "sleep"), None),
                        message="the instance's sleep")
    holder.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: psutil.Process(holder.pid).status() == psutil.STATUS_STOPPED,
                 message="the holder stopped")
        wait_for(lambda: process_gone(instance), timeout=10, interval=0.01,
                 message="the frozen holder's instance ended by its guard")
        gone_at = time.time()
        wait_for(lambda: len(lines(out)) == 2, timeout=10, message="the other host takes over")
    finally:
        holder.signal(signal.SIGCONT)
    other_id, started, token = lines(out)[1].split()
    assert other_id != holder_id
    assert gone_at < float(started)  # never both at once
    assert int(token) > int(first_token)
    wait_for(lambda: status(holder)["tasks"][0]["lease_held"] is False, timeout=10,
             message="the continued daemon sees its lease gone")
    assert len(lines(out)) == 2
    assert [p.name() for p in holder.descendants() if p.name() == "sleep"] == []


def test_fencing_tokens_grow_with_each_holder(tmp_path: Path, write_tasks: Callable[..., Path],
                                             daemon_factory: Factory,
                                             redis_server: RedisServer) -> None:
    """TORCHD_FENCING_TOKEN: 1 for the first holder, higher for each later one."""
    out = tmp_path / "out"
    config = cluster_file(write_tasks, redis_server, f"""
          - name: worker
            type: daemon
            run_on: one
            command: 'echo "$TORCHD_HOST_ID $TORCHD_FENCING_TOKEN" >> {out}; exec sleep 300'
    """)
    hosts = start_hosts(daemon_factory, [config, config])
    wait_for(lambda: len(lines(out)) == 1, timeout=10, message="one instance")
    first_host, first = lines(out)[0].split()
    assert int(first) == 1
    assert hosts[int(first_host[1])].cli("stop").returncode == 0
    wait_for(lambda: len(lines(out)) == 2, timeout=10, message="the other host")
    assert int(lines(out)[1].split()[1]) == 2


def test_redis_that_comes_back_empty_runs_no_fire_twice(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory,
        redis_server: RedisServer) -> None:
    """Two hosts, one with its clock 2 s ahead, a `run_on: one` task every second; Redis
    restarts without persistence four times. No fire runs twice: the host ahead writes
    back the fires it ran before the lagging host may claim them. The skew is shown."""
    out = tmp_path / "out"
    config = cluster_file(write_tasks, redis_server, f"""
          - {{name: tick, schedule: "* * * * * *", run_on: one, command: '{record(out)}'}}
    """)
    ahead = daemon_factory(config, state="host0", env={"TORCHD_HOST_ID": "h0"})
    ahead.start_env = libfaketime(FAKETIME="+2")
    ahead.start()
    lagging = daemon_factory(config, state="host1", env={"TORCHD_HOST_ID": "h1"}).start()
    wait_for(lambda: len(per_second(out)) >= 4, timeout=15, message="fires")
    for _ in range(4):
        # Just past a whole second: the host ahead has claimed the next two fires, which
        # the lagging host is about to claim.
        time.sleep(1.1 - time.time() % 1)
        redis_server.stop()
        redis_server.start()
        count = len(per_second(out))
        wait_for(lambda n=count: len(per_second(out)) >= n + 5, timeout=20,
                 message="fires after the restart")
    runs = per_second(out)
    doubled = {second: hosts for (_, second), hosts in runs.items() if len(hosts) > 1}
    assert doubled == {}
    assert len(runs) >= 20
    assert status(lagging)["tasks"][0]["last_claim"]["host"] in {"h0", "h1"}  # it claims too
    assert "Redis came back without its data" in ahead.stderr() + lagging.stderr()
    warnings = lagging.cli("status", "--cluster").stderr
    assert "WARNING: host h0's clock is +2." in warnings
    problems = json.loads(ahead.cli("status", "--json").stdout)["problems"]
    assert [p["key"] for p in problems] == ["cluster-clock"]


def test_a_redis_that_refuses_writes_is_survived(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory,
        redis_server: RedisServer) -> None:
    """Redis answers, but refuses every write (NOREPLICAS, as a replica or a full Redis
    refuses): the lease cannot be renewed, so its instance stops; `status` says why; and
    once writes go through again the lease is taken back, without a restart."""
    out = tmp_path / "out"
    config = cluster_file(write_tasks, redis_server, f"""
          - name: worker
            type: daemon
            run_on: one
            command: 'echo "$TORCHD_FENCING_TOKEN" >> {out}; exec sleep 300'
    """)
    (host,) = start_hosts(daemon_factory, [config])
    wait_for(lambda: len(lines(out)) == 1, timeout=10, message="the instance")
    admin = redis.Redis.from_url(redis_server.url)
    try:
        admin.config_set("min-replicas-to-write", 1)
        wait_for(lambda: status(host)["tasks"][0]["lease_held"] is False, timeout=10,
                 message="the lease lost")
        (problem,) = [p for p in status(host)["problems"] if p["key"] == "cluster"]
        assert "NOREPLICAS" in problem["message"], problem
        admin.config_set("min-replicas-to-write", 0)
        wait_for(lambda: len(lines(out)) == 2, timeout=20, message="the lease taken back")
    finally:
        admin.close()
    assert [int(token) for token in lines(out)] == [1, 2]
    assert "internal error" not in host.stderr()
