"""What a run starts ends with it, whatever group or session it moved to; torchd reaps
every child, as PID 1 too; `stop` keeps to its timeout (issue 21)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.test_operations import as_json, ended_runs
from tests.helpers import (
    Daemon,
    lines,
    process_gone,
    remove_run_cgroups,
    require_root,
    require_tool,
    torchd_cmd,
    wait_for,
)

Factory = Callable[..., Daemon]


def strays_task(out: Path, *, then: str, timeout: str = "", deaf: bool = False) -> str:
    """A task that starts two processes outside its process group, one with `setsid cmd &`
    and one by a double fork, each writing its pid to OUT/a and OUT/b, then does `then`.
    `deaf` strays ignore SIGTERM."""
    limit = f"\n            timeout: {timeout}" if timeout else ""
    trap = 'trap "" TERM; ' if deaf else ""
    return (f"""
          - name: leaky{limit}
            schedule: "@yearly"
            command: >-
              setsid sh -c '{trap}echo $$ > {out}/a; exec sleep 600' &
              (setsid sh -c '{trap}echo $$ > {out}/b; exec sleep 601' &);
              while [ ! -s {out}/a ] || [ ! -s {out}/b ]; do sleep 0.01; done; {then}
    """)


def stray_pids(out: Path) -> list[int]:
    return wait_for(lambda: [int(p.read_text()) for p in (out / "a", out / "b")
                             if p.exists() and p.read_text().strip()] if all(
        (out / n).exists() and (out / n).read_text().strip() for n in "ab") else None,
        message="the strays' pids")


class Strays:
    """The strays a test found, each known by pid and start time, so that teardown kills
    them, pass or fail (a stray that survives must not stay), and nothing that reused a
    pid since."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self._processes: list[psutil.Process] = []

    def add(self, *pids: int) -> None:
        for pid in pids:
            self.pids.append(pid)
            with contextlib.suppress(psutil.Error):
                self._processes.append(psutil.Process(pid))

    def kill(self) -> None:
        for process in self._processes:
            with contextlib.suppress(psutil.Error):
                process.kill()  # psutil checks the start time first


@pytest.fixture
def strays() -> Iterator[Strays]:
    found = Strays()
    yield found
    found.kill()


CGROUPS = pytest.mark.parametrize("cgroups", [True, False], ids=["cgroup", "subreaper"])


def start_leaky(tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory,
                *, cgroups: bool, then: str, timeout: str = "",
                deaf: bool = False) -> tuple[Daemon, Path]:
    if cgroups:
        require_root()  # a cgroup per run needs a writable cgroup
    out = tmp_path / "pids"
    out.mkdir()
    config = write_tasks(f"""
        daemon: {{cgroups: {str(cgroups).lower()}}}
        tasks:{strays_task(out, then=then, timeout=timeout, deaf=deaf)}
    """)
    daemon = daemon_factory(config).start()
    mode = json.loads(daemon.cli("status", "--json").stdout)["containment"]
    assert mode["subreaper"] is True
    assert mode["cgroups"].startswith("cgroup v2" if cgroups else "no cgroups"), mode
    return daemon, out


@CGROUPS
@pytest.mark.parametrize("ending", ["exit", "timeout", "kill"])
def test_descendants_outside_the_group_end_with_the_run(  # noqa: PLR0917 - fixtures
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory,
        strays: Strays, cgroups: bool, ending: str) -> None:
    """`setsid cmd &` and a double fork: both end when the run ends by itself, times out
    or is killed."""
    then = "exit 0" if ending == "exit" else "sleep 600"
    daemon, out = start_leaky(tmp_path, write_tasks, daemon_factory, cgroups=cgroups,
                              then=then, timeout="1s" if ending == "timeout" else "")
    daemon.cli("trigger", "leaky")
    strays.add(*stray_pids(out))
    if ending == "kill":
        assert daemon.cli("kill", "leaky").returncode == 0
    wait_for(lambda: all(process_gone(pid) for pid in strays.pids), timeout=20,
             message="the strays ended")
    (run,) = ended_runs(daemon, "leaky", 1)
    assert run["outcome"] == {"exit": "ok", "timeout": "timeout", "kill": "killed"}[ending]


@CGROUPS
@pytest.mark.parametrize("deaf", [False, True], ids=["plain", "ignoring-term"])
def test_descendants_outside_the_group_end_at_stop(  # noqa: PLR0917 - fixtures
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory,
        strays: Strays, cgroups: bool, deaf: bool) -> None:
    """`torchd stop` ends the strays of runs still going; strays that ignore SIGTERM get
    SIGKILL once the stop's grace is over, though the runs themselves ended at once."""
    daemon, out = start_leaky(tmp_path, write_tasks, daemon_factory, cgroups=cgroups,
                              then="sleep 600", deaf=deaf)
    daemon.cli("trigger", "leaky")
    strays.add(*stray_pids(out))
    started = time.monotonic()
    stop = daemon.cli("stop", "--timeout", "4")
    assert stop.returncode == 0, stop.stderr + daemon.stderr()
    assert all(process_gone(pid) for pid in strays.pids)
    if deaf:
        assert time.monotonic() - started >= 4


def test_a_cgroup_ends_what_the_subreaper_could_not_tell(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory,
        strays: Strays) -> None:
    """A stray that cleared its environment (no TORCHD_RUN_ID to tell its run by) ends
    with its run in cgroup mode: it is in the run's cgroup."""
    require_root()
    out = tmp_path / "pids"
    out.mkdir()
    config = write_tasks(f"""
        tasks:
          - name: hidden
            schedule: "@yearly"
            command: >-
              sleep 0.5; setsid env -i sh -c 'echo $$ > {out}/a; exec sleep 600' &
              while [ ! -s {out}/a ]; do sleep 0.01; done; exit 0
    """)
    daemon = daemon_factory(config).start()
    daemon.cli("trigger", "hidden")
    stray = wait_for(lambda: (out / "a").exists() and (out / "a").read_text().strip(),
                     message="the stray's pid")
    strays.add(int(stray))
    wait_for(lambda: process_gone(int(stray)), timeout=20, message="the stray ended")


def test_a_run_s_cpu_time_is_in_the_history(write_tasks: Callable[..., Path],
                                            daemon_factory: Factory) -> None:
    """With a cgroup per run, the CPU its processes used is recorded, a process nobody
    waits for included (its time is in no parent's rusage: only the cgroup has it). The
    run first waits for its move into the cgroup: what leaves the tree before that is
    ended with the run but not counted (see cgroups.py). The orphan burns one second of
    CPU (RLIMIT_CPU ends it), however long a loaded machine takes to give it that; the run
    waits for it to end (a zombie: the daemon reaps adopted orphans in its own time)."""
    require_root()
    config = write_tasks("""
        tasks:
          - name: burn
            schedule: "@yearly"
            command: >-
              until grep -q /run- /proc/$$/cgroup; do sleep 0.01; done;
              (sh -c 'echo $$ > burner.pid; ulimit -t 1; while :; do :; done' &);
              until [ -s burner.pid ]; do sleep 0.01; done; p=$(cat burner.pid);
              while kill -0 $p 2>/dev/null && ! grep -qs '^State:.Z' /proc/$p/status;
              do sleep 0.05; done
    """)
    daemon = daemon_factory(config).start()
    daemon.cli("trigger", "burn", "--wait")
    (run,) = as_json(daemon, "history", "burn")
    assert 0.8 <= run["cpu_seconds"] <= 3.0, run


def zombies_of(pid: int) -> set[int]:
    found = set()
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):  # reaped meanwhile
            if child.status() == psutil.STATUS_ZOMBIE:
                found.add(child.pid)
    return found


def test_as_pid_1_every_orphan_is_reaped_and_stop_is_quick(
        tmp_path: Path, write_tasks: Callable[..., Path]) -> None:
    """In a PID namespace of its own (a container), orphans from the runs come to torchd;
    none is left a zombie, and a stop takes well under the grace period (10 s)."""
    require_root()
    unshare = require_tool("unshare")
    fired = tmp_path / "fired"
    config = write_tasks(f"""
        tasks:
          - {{name: orphans, schedule: "* * * * * *",
             command: "(sleep 0.1 &); (sleep 0.2 &); (sleep 0.3 &); echo . >> {fired}"}}
    """)
    state = tmp_path / "state"
    err = (tmp_path / "stderr").open("wb")
    outer = subprocess.Popen([unshare, "--pid", "--fork", "--mount-proc", "--",
                              *torchd_cmd("run", "-c", str(config), "--state-dir", str(state))],
                             stdout=err, stderr=err, start_new_session=True)
    try:
        daemon = wait_for(lambda: psutil.Process(outer.pid).children(), timeout=20,
                          message="torchd as pid 1")[0]
        wait_for((state / "torchd.sock").exists, timeout=20, message="serving")
        # Six runs leave eighteen orphans, each exiting within 0.3 s: unreaped, they would
        # pile up; reaped, any zombie seen now is gone soon after.
        wait_for(lambda: len(lines(fired)) >= 6, timeout=30, message="six runs of orphans")
        seen = zombies_of(daemon.pid)
        wait_for(lambda: not seen & zombies_of(daemon.pid), timeout=10,
                 message=f"the zombies {sorted(seen)} reaped")
        started = time.monotonic()
        stop = subprocess.run(torchd_cmd("stop", "--state-dir", str(state)),
                              capture_output=True, text=True, timeout=60, check=False)
        assert stop.returncode == 0, stop.stderr
        assert time.monotonic() - started < 8  # with the CLI's own start on a loaded machine
        outer.wait(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(outer.pid, signal.SIGKILL)
        outer.wait()
        err.close()
        remove_run_cgroups(state)


def test_stop_keeps_to_its_timeout_against_a_stopped_daemon(
        write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """A daemon stopped by SIGSTOP: `stop --timeout 3` answers at once, says so, and the
    stop happens once the daemon is continued."""
    config = write_tasks('tasks:\n  - {name: a, schedule: "@hourly", command: "true"}\n')
    daemon = daemon_factory(config).start()
    daemon.signal(signal.SIGSTOP)
    started = time.monotonic()
    result = daemon.cli("stop", "--timeout", "3")
    assert time.monotonic() - started < 8
    assert result.returncode == 1
    assert result.stderr == (
        f"torchd (pid {daemon.pid}) is stopped (SIGSTOP or a debugger) and cannot act until "
        f"it is continued: sent SIGTERM, which it acts on then (kill -CONT {daemon.pid})\n")
    daemon.signal(signal.SIGCONT)
    assert daemon.wait_exit(timeout=15) == 0


def test_stop_keeps_to_its_timeout_when_the_socket_does_not_answer(
        write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """The socket gone, `stop` sends SIGTERM, says so, and waits at most timeout + 5 s."""
    config = write_tasks('tasks:\n  - {name: a, schedule: "@hourly", command: "true"}\n')
    daemon = daemon_factory(config).start()
    (daemon.state_dir / "torchd.sock").unlink()
    started = time.monotonic()
    result = daemon.cli("stop", "--timeout", "1")
    assert time.monotonic() - started < 7
    assert result.returncode == 0, result.stderr
    assert f"sent SIGTERM to pid {daemon.pid}" in result.stderr
    assert result.stdout == f"torchd stopped (pid {daemon.pid})\n"


def test_stop_gives_up_after_its_timeout_on_a_daemon_that_does_not_end(
        tmp_path: Path) -> None:
    """What holds the state dir's pidfile ignores SIGTERM and has no socket (a wedged
    daemon): `stop --timeout 1` sends SIGTERM, waits 1 + 5 s, and says it still runs."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    pidfile = state / "torchd.pid"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, signal, sys, time\n"
         "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
         f"pidfile = open({str(pidfile)!r}, 'a')\n"
         "fcntl.flock(pidfile, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\n"
         "time.sleep(600)\n"], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        started = time.monotonic()
        stop = subprocess.run(torchd_cmd("stop", "--timeout", "1", "--state-dir", str(state)),
                              capture_output=True, text=True, timeout=60, check=False)
        took = time.monotonic() - started
        assert stop.returncode == 1
        assert stop.stderr.splitlines()[-1] == (
            f"torchd (pid {holder.pid}) is still running after 6s; its runs were given 1s "
            "to end")
        assert f"sent SIGTERM to pid {holder.pid}" in stop.stderr
        assert 6 <= took < 12, took
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.communicate()
