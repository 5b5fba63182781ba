"""A windowed `run_on: one` daemon task in cluster mode (real redis-server, two real
daemons on the real clock: under libfaketime the instance's lease guard, which inherits
LD_PRELOAD, reads a faked CLOCK_BOOTTIME and stops it): the lease is taken only inside
the window."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_cluster import status
from tests.helpers import Daemon, RedisServer, lines, wait_for

pytestmark = pytest.mark.e2e
Factory = Callable[..., Daemon]


def test_the_lease_is_taken_only_inside_the_window(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory,
        redis_server: RedisServer) -> None:
    """A window opens every 30 s for 12 s; both hosts start just after one closed: no
    lease until the next opening, then one host holds it and runs the one instance; at
    the close the instance stops and the lease is let go. (The first lease in a fresh
    Redis waits out the epoch hold, about 4 s, and a loaded machine's CLI takes seconds:
    hence `for: 12s`; the 18 s closed leave it time to start two daemons and ask one of
    them before the opening.)"""
    out = tmp_path / "out"
    command = (f"echo $TORCHD_HOST_ID >> {out}; trap 'echo term >> {out}; exit 0' TERM; "
               "while :; do sleep 0.1; done")
    config = write_tasks(f"""
        daemon:
          cluster: {{redis: "{redis_server.url}", name: t, lease_ttl: 3s}}
        tasks:
          - name: worker
            type: daemon
            run_on: one
            kill_grace: 2s
            window: {{schedule: "*/30 * * * * *", for: 12s}}
            command: "{command}"
        """)
    wait_for(lambda: 12.2 <= time.time() % 30 < 13, timeout=35, message="a window's close")
    hosts = [daemon_factory(config, state=f"host{i}", env={"TORCHD_HOST_ID": f"h{i}"}).start()
             for i in range(2)]
    assert time.time() % 30 >= 12, "started outside the window"
    assert status(hosts[0], "--cluster")["leases"] == {}
    wait_for(lambda: len(lines(out)) == 1, timeout=35, message="one instance in the window")
    holder = lines(out)[0]
    assert status(hosts[1], "--cluster")["leases"] == {"worker": holder}
    wait_for(lambda: lines(out) == [holder, "term"], timeout=15, message="the stop at close")
    wait_for(lambda: status(hosts[0], "--cluster")["leases"] == {}, timeout=10,
             message="the lease let go after the window")
