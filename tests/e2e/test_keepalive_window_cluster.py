"""A windowed `run_on: one` daemon task in cluster mode (real redis-server, two real
daemons under libfaketime): the lease is taken only inside the window."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_cluster import status
from tests.helpers import Daemon, RedisServer, libfaketime, lines, wait_for

pytestmark = pytest.mark.e2e
Factory = Callable[..., Daemon]


def test_the_lease_is_taken_only_inside_the_window(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory,
        redis_server: RedisServer) -> None:
    """Both hosts start at 10:00:07: no lease until 10:00:10, then one host holds it and
    runs the one instance; at 10:00:14 the instance stops and the lease is let go."""
    out = tmp_path / "out"
    # cgroups: false: see tests/e2e/test_keepalive_window.py (libfaketime and the freeze)
    command = (f"echo $TORCHD_HOST_ID >> {out}; trap 'echo term >> {out}; exit 0' TERM; "
               "while :; do sleep 0.1; done")
    config = write_tasks(f"""
        daemon:
          cgroups: false
          cluster: {{redis: "{redis_server.url}", name: t, lease_ttl: 3s}}
        tasks:
          - name: worker
            type: daemon
            run_on: one
            kill_grace: 2s
            window: {{schedule: "*/10 * * * * *", for: 4s}}
            command: "{command}"
        """)
    hosts = []
    for i in range(2):
        host = daemon_factory(config, state=f"host{i}", env={"TORCHD_HOST_ID": f"h{i}"})
        host.start_env = libfaketime(FAKETIME="@2026-11-22 10:00:07")
        hosts.append(host.start())
    assert status(hosts[0], "--cluster")["leases"] == {}
    wait_for(lambda: len(lines(out)) == 1, timeout=10, message="one instance in the window")
    holder = lines(out)[0]
    assert status(hosts[1], "--cluster")["leases"] == {"worker": holder}
    wait_for(lambda: lines(out) == [holder, "term"], timeout=10, message="the stop at close")
    wait_for(lambda: status(hosts[0], "--cluster")["leases"] == {}, timeout=5,
             message="the lease let go after the window")
