"""The real daemon through the real CLI: start, stop, status, check, next, crashes."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers import (
    Daemon,
    end_detached,
    lines,
    process_gone,
    record_cmd,
    torchd_cmd,
    unavailable,
    wait_for,
)
from torchd.control.client import call

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def torchd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(torchd_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    yield path
    end_detached(path)


def _daemons_for(state: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "torchd" in cmdline and str(state) in cmdline:
            found.append(proc)
    return found


def test_start_status_stop(tmp_path: Path, write_tasks: Callable[..., Path],
                           state_dir: Path) -> None:
    out = tmp_path / "out"
    config = write_tasks(f"""
        tasks:
          - {{name: tick, schedule: "* * * * * *", command: '{record_cmd(out)}'}}
          - {{name: keeper, type: daemon, command: "sleep 300"}}
        """)
    started = torchd("start", "-c", str(config), "--state-dir", str(state_dir))
    assert started.returncode == 0, started.stderr
    pid = int((state_dir / "torchd.pid").read_text())
    assert started.stdout.strip() == (f"torchd started (pid {pid}), 2 task(s), state dir "
                                      f"{state_dir}")
    # start returns only once the daemon serves: status answers at once
    status = json.loads(torchd("status", "--json", "--state-dir", str(state_dir)).stdout)
    assert status["running"] is True
    assert status["pid"] == pid
    assert status["config_file"] == str(config)
    assert status["last_reload"]["ok"] is True
    assert stat.S_IMODE((state_dir / "torchd.sock").stat().st_mode) == 0o600
    wait_for(lambda: len(lines(out)) >= 2, timeout=10, message="fires of the detached daemon")
    human = torchd("status", "--state-dir", str(state_dir))
    assert human.returncode == 0
    assert f"running, pid {pid}" in human.stdout
    assert "tick" in human.stdout
    again = torchd("start", "-c", str(config), "--state-dir", str(state_dir))
    assert again.returncode == 1
    assert again.stderr.strip() == f"torchd: already running (pid {pid})"
    keeper_pid = wait_for(lambda: json.loads(torchd("status", "--json", "--state-dir",
                                                    str(state_dir)).stdout)["tasks"][0]["running"],
                          timeout=10, message="the keeper's pid")[0]
    stopped = torchd("stop", "--state-dir", str(state_dir))
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"torchd stopped (pid {pid})"
    assert process_gone(pid)
    assert process_gone(keeper_pid)
    assert not (state_dir / "torchd.pid").exists()
    assert not (state_dir / "torchd.sock").exists()
    gone = torchd("status", "--state-dir", str(state_dir))
    assert gone.returncode == 3
    assert gone.stdout.strip() == f"torchd is not running (state dir {state_dir})"


def test_start_with_invalid_file_leaves_nothing(tmp_path: Path,
                                                write_tasks: Callable[..., Path],
                                                state_dir: Path) -> None:
    config = write_tasks("""
        tasks:
          - name: bad
            schedule: "61 * * * * *"
            command: "true"
        """)
    result = torchd("start", "-c", str(config), "--state-dir", str(state_dir))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{config}:4: task 'bad': schedule: second field '61' is out of range 0-59",
        "1 problem found; nothing was changed",
    ]
    assert not (state_dir / "torchd.pid").exists()
    assert _daemons_for(state_dir) == []


def test_stale_pidfiles_are_taken_over(tmp_path: Path, write_tasks: Callable[..., Path],
                                       state_dir: Path) -> None:
    """A pidfile naming a dead pid, or a live process that is not torchd, does not block."""
    config = write_tasks('tasks: [{name: a, schedule: "@hourly", command: "true"}]\n')
    state_dir.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    for stale_pid in (dead.pid, os.getpid()):
        (state_dir / "torchd.pid").write_text(f"{stale_pid}\n")
        result = torchd("start", "-c", str(config), "--state-dir", str(state_dir))
        assert result.returncode == 0, result.stderr
        assert int((state_dir / "torchd.pid").read_text()) != stale_pid
        assert torchd("stop", "--state-dir", str(state_dir)).returncode == 0


def test_stop_ends_children_and_grandchildren(tmp_path: Path,
                                              write_tasks: Callable[..., Path],
                                              daemon_factory: Callable[..., Daemon]) -> None:
    """A grandchild that ignores TERM is killed after the grace period."""
    pids = tmp_path / "pids"
    daemon = daemon_factory(write_tasks(f"""
        tasks:
          - name: family
            type: daemon
            command: "sh -c 'trap \\"\\" TERM; sleep 300' & echo $$ $! > {pids}; sleep 300"
        """)).start()
    wait_for(lambda: lines(pids), timeout=10, message="the family's pids")
    child, grandchild = (int(p) for p in lines(pids)[0].split())
    assert psutil.pid_exists(child)
    assert psutil.pid_exists(grandchild)
    result = daemon.cli("stop", "--timeout", "1")
    assert result.returncode == 0, result.stderr
    assert daemon.wait_exit() == 0
    assert process_gone(child)
    wait_for(lambda: process_gone(grandchild), timeout=5, message="grandchild gone")


def test_kill_9_then_start_ends_what_the_dead_daemon_left(
        tmp_path: Path, write_tasks: Callable[..., Path], state_dir: Path) -> None:
    """No keep-alive task runs twice: the old instance is ended before a new one starts."""
    pids = tmp_path / "pids"
    config = write_tasks(f"""
        tasks:
          - name: singleton
            type: daemon
            command: "echo $$ >> {pids}; exec sleep 300"
        """)
    first_instance = _start_then_kill_the_daemon(config, state_dir, pids)
    assert psutil.pid_exists(first_instance), "the orphan should outlive the killed daemon"
    result = torchd("start", "-c", str(config), "--state-dir", str(state_dir))
    assert result.returncode == 0, result.stderr
    assert process_gone(first_instance)
    wait_for(lambda: len(lines(pids)) == 2, timeout=10, message="the second instance")
    assert psutil.pid_exists(int(lines(pids)[1]))
    log = (state_dir / "torchd.log").read_text()
    assert f"ended 1 process group(s) left by a previous daemon: [{first_instance}]" in log


def test_what_a_left_group_starts_after_the_term_is_killed_too(
        tmp_path: Path, write_tasks: Callable[..., Path], state_dir: Path) -> None:
    """A run left by a killed daemon that answers SIGTERM by starting another process in
    its group: after the grace, the whole group gets SIGKILL, that process too (without
    cgroups, where the process group is all there is to go by). Its stderr goes nowhere:
    the pipe to the dead daemon would end the shell with SIGPIPE."""
    pids, late = tmp_path / "pids", tmp_path / "late"
    config = write_tasks(f"""
        daemon: {{cgroups: false}}
        tasks:
          - name: stubborn
            type: daemon
            command: >-
              exec 2>/dev/null; trap 'sleep 300 & echo $! >> {late}' TERM;
              echo $$ >> {pids};
              while :; do sleep 0.1; done
        """)
    first_instance = _start_then_kill_the_daemon(config, state_dir, pids)
    try:
        result = torchd("start", "-c", str(config), "--state-dir", str(state_dir))
        assert result.returncode == 0, result.stderr
        (started_late,) = (int(pid) for pid in lines(late))
        assert process_gone(first_instance)
        assert process_gone(started_late)
    finally:
        torchd("stop", "--timeout", "1", "--state-dir", str(state_dir))
        for pid in (int(p) for p in lines(late)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_check_and_next(tmp_path: Path, write_tasks: Callable[..., Path]) -> None:
    config = write_tasks("""
        daemon: {timezone: UTC}
        tasks:
          - {name: quarter, schedule: "0 */15 * * * *", command: "true"}
          - {name: keeper, type: daemon, command: "sleep 1"}
        """)
    check = torchd("check", "-c", str(config))
    assert check.returncode == 0
    assert check.stdout.startswith(f"{config}: OK, 2 task(s), 2 active on this host, hash ")
    containment = check.stdout.splitlines()[1]
    assert containment.startswith("process containment for a daemon started from this "
                                  "shell: cgroup v2, a cgroup per run under " if os.geteuid()
                                  == 0 else "process containment for a daemon started ")
    assert containment.endswith("; child subreaper (as a systemd service its cgroup is the "
                                "unit's: `torchd status` tells)")
    nxt = torchd("next", "-c", str(config), "-n", "3", "quarter", "--json")
    assert nxt.returncode == 0
    times = json.loads(nxt.stdout)["quarter"]
    assert len(times) == 3
    assert all(t.endswith((":00:00.000Z", ":15:00.000Z", ":30:00.000Z", ":45:00.000Z"))
               for t in times)
    human = torchd("next", "-c", str(config), "-n", "1")
    assert "keeper  (daemon task: kept running, no schedule)" in human.stdout
    unknown = torchd("next", "-c", str(config), "nosuch")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == f"no task named 'nosuch' in {config}"
    bad = write_tasks("tasks:\n  - name: x\n", name="bad.yaml")
    result = torchd("check", "-c", str(bad))
    assert result.returncode == 2
    assert result.stderr.splitlines()[:2] == [
        f"{bad}:2: task 'x': command: is required",
        f"{bad}:2: task 'x': schedule: is required for a cron task (or 'at' for a one-time "
        "task)",
    ]


def test_control_socket_survives_malformed_requests(
        write_tasks: Callable[..., Path], daemon_factory: Callable[..., Daemon]) -> None:
    daemon = daemon_factory(write_tasks('tasks: [{name: a, schedule: "@hourly", '
                                        'command: "true"}]\n')).start()
    path = str(daemon.state_dir / "torchd.sock")
    for garbage in (b"not json\n", b'{"cmd": "rm -rf"}\n', b"[]\n", b"\xff\n"):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(garbage)
            reply = json.loads(sock.makefile("rb").readline())
        assert reply["ok"] is False
        assert reply["error"]["code"] == "bad-request"
    with socket.socket(socket.AF_UNIX) as sock:  # connect and hang up without a word
        sock.connect(path)
    assert daemon.cli("status").returncode == 0


def test_second_sigterm_forces_the_stop(tmp_path: Path, write_tasks: Callable[..., Path],
                                        daemon_factory: Callable[..., Daemon]) -> None:
    """A run that ignores TERM holds shutdown for the grace period, unless TERM comes twice."""
    pids = tmp_path / "pids"
    daemon, stubborn = _with_a_run_deaf_to_term(pids, write_tasks, daemon_factory)
    daemon.signal(signal.SIGTERM)
    wait_for(lambda: "stopping: ending 1 run(s)" in daemon.stderr(), timeout=5,
             message="the shutdown to begin")
    assert psutil.pid_exists(stubborn)
    daemon.signal(signal.SIGTERM)
    # Inside the 10 s grace: a forced stop. (Under heavy load one took 5.2 s after the
    # run's kill, the runs' end being awaited up to 5 s in Runs.stop_all.)
    assert daemon.wait_exit(timeout=9) == 0
    assert process_gone(stubborn)
    assert "stop signal during the stop: killing every run now" in daemon.stderr()
    assert "restarting" not in daemon.stderr()  # a stopping daemon starts nothing
    assert [int(pid) for pid in lines(pids)] == [stubborn]


def test_a_second_stop_request_does_not_kill_the_runs(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon]) -> None:
    """`torchd stop` twice: the second changes nothing (the runs keep their grace); a stop
    signal during the stop is what kills every run at once."""
    pids = tmp_path / "pids"
    daemon, stubborn = _with_a_run_deaf_to_term(pids, write_tasks, daemon_factory)
    sock = daemon.state_dir / "torchd.sock"
    assert call(sock, "stop", grace=30)["already"] is False
    wait_for(lambda: "stopping: ending 1 run(s), grace 30.0s" in daemon.stderr(), timeout=5,
             message="the shutdown to begin")
    second = daemon.cli("stop", "--timeout", "1")  # replied to at once, then waits 1 + 5 s
    assert second.returncode == 1
    assert "is still running after 6s" in second.stderr
    assert "a stop is under way already; this one changes nothing" in second.stderr
    assert "stop requested again (control request): the stop goes on" in daemon.stderr()
    assert psutil.pid_exists(stubborn)
    assert "killing every run now" not in daemon.stderr()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=5) == 0
    assert process_gone(stubborn)


def test_start_errors_are_reported_and_the_daemon_carries_on(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon]) -> None:
    out = tmp_path / "out"
    daemon = daemon_factory(write_tasks(f"""
        tasks:
          - {{name: nowhere, schedule: "* * * * * *", cwd: /nonexistent, command: ["true"]}}
          - {{name: missing, schedule: "* * * * * *", command: ["/nonexistent/bin"]}}
          - {{name: fine, schedule: "* * * * * *", command: '{record_cmd(out)}'}}
        """)).start()
    wait_for(lambda: len(lines(out)) >= 2, timeout=10, message="the healthy task firing")
    status = json.loads(daemon.cli("status", "--json").stdout)
    errors = {t["name"]: t["last_start_error"] for t in status["tasks"]}
    assert errors == {"fine": None, "missing": "No such file or directory: /nonexistent/bin",
                      "nowhere": "the working directory /nonexistent does not exist or is not "
                                 "a directory"}
    assert "start-error" in (daemon.log_dir / "missing.log").read_text()


# Runs the rest of its command line with pidfd_open refused (ENOSYS), as a kernel before
# 5.3 or an old container seccomp profile would; the filter outlives the exec.
WITHOUT_PIDFD = """
import ctypes, errno, os, sys
seccomp = ctypes.CDLL("libseccomp.so.2")
seccomp.seccomp_init.restype = ctypes.c_void_p
context = ctypes.c_void_p(seccomp.seccomp_init(0x7FFF0000))  # SCMP_ACT_ALLOW
number = seccomp.seccomp_syscall_resolve_name(b"pidfd_open")
refuse = 0x00050000 | errno.ENOSYS  # SCMP_ACT_ERRNO(ENOSYS)
if seccomp.seccomp_rule_add(context, refuse, number, 0) or seccomp.seccomp_load(context):
    sys.exit("seccomp filter not loaded")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def test_a_system_that_refuses_pidfd_open_is_refused_at_start(
        tmp_path: Path, write_tasks: Callable[..., Path], state_dir: Path) -> None:
    """Without pidfd_open no run's exit can be watched: torchd says so and does not start,
    instead of starting a first run and then stopping on an internal error."""
    if not glob.glob("/usr/lib/*/libseccomp.so.2") and not glob.glob("/lib/*/libseccomp.so.2"):
        unavailable("libseccomp2 is not installed")
    out = tmp_path / "out"
    config = write_tasks(f"""
        tasks:
          - {{name: every, schedule: "* * * * * *", command: '{record_cmd(out)}'}}
        """)
    wrapper = tmp_path / "without_pidfd.py"
    wrapper.write_text(WITHOUT_PIDFD)
    result = subprocess.run([sys.executable, str(wrapper), *torchd_cmd(
        "run", "-c", str(config), "--state-dir", str(state_dir))[1:]],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "torchd: cannot watch child processes: pidfd_open is refused here (Function not "
        "implemented); torchd needs Linux 5.3 or later, and a container seccomp profile "
        "that allows pidfd_open")
    assert not out.exists()
    assert not (state_dir / "torchd.pid").exists()


def test_next_previews_a_dst_day_from_any_instant(write_tasks: Callable[..., Path]) -> None:
    config = write_tasks("""
        daemon: {timezone: UTC}
        tasks:
          - {name: nightly, schedule: "0 30 1 * * *", command: "true",
             timezone: America/New_York}
          - {name: hourly, schedule: "0 0 * * * *", command: "true",
             timezone: America/New_York}
        """)
    preview = torchd("next", "-c", str(config), "-n", "3", "--after",
                     "2026-11-01T00:00:00-04:00")
    assert preview.returncode == 0, preview.stderr
    assert preview.stdout.splitlines() == [  # text: in the task's zone
        "nightly", "  2026-11-01T01:30:00-04:00", "  2026-11-02T01:30:00-05:00",
        "  2026-11-03T01:30:00-05:00",
        "hourly", "  2026-11-01T01:00:00-04:00",
        "  2026-11-01T01:00:00-05:00  (repeated hour, second showing)",
        "  2026-11-01T02:00:00-05:00"]
    as_json = torchd("next", "-c", str(config), "-n", "3", "--after",
                     "2026-11-01T00:00:00-04:00", "--json")
    assert json.loads(as_json.stdout)["hourly"] == [  # JSON: in UTC
        "2026-11-01T05:00:00.000Z", "2026-11-01T06:00:00.000Z", "2026-11-01T07:00:00.000Z"]
    naive = torchd("next", "-c", str(config), "nightly", "-n", "1", "--after",
                   "2026-03-08T06:00:00")  # no offset: daemon.timezone (UTC)
    assert naive.stdout.splitlines() == ["nightly", "  2026-03-08T01:30:00-05:00"]
    wrong = torchd("next", "-c", str(config), "--after", "tomorrow")
    assert wrong.returncode == 2  # a usage error
    assert "--after: 'tomorrow' is not an ISO 8601 time" in wrong.stderr


def _start_then_kill_the_daemon(config: Path, state_dir: Path, pids: Path) -> int:
    """Start the daemon, wait for its keep-alive task to write its pid, SIGKILL the
    daemon and give back the orphaned task's pid."""
    assert torchd("start", "-c", str(config), "--state-dir", str(state_dir)).returncode == 0
    wait_for(lambda: lines(pids), timeout=10, message="the first instance")
    daemon_pid = int((state_dir / "torchd.pid").read_text())
    os.kill(daemon_pid, signal.SIGKILL)
    wait_for(lambda: process_gone(daemon_pid), timeout=5, message="the daemon to die")
    return int(lines(pids)[0])


def _with_a_run_deaf_to_term(pids: Path, write_tasks: Callable[..., Path],
                             daemon_factory: Callable[..., Daemon]) -> tuple[Daemon, int]:
    """A started daemon whose keep-alive task ignores SIGTERM, and that task's pid (also
    written to `pids`)."""
    daemon = daemon_factory(write_tasks(f"""
        tasks:
          - name: stubborn
            type: daemon
            command: "trap '' TERM; echo $$ > {pids}; while true; do sleep 1; done"
        """)).start()
    wait_for(lambda: lines(pids), timeout=10, message="the stubborn run")
    return daemon, int(lines(pids)[0])
