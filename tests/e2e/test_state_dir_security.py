"""The state dir as a way in: what a root daemon finds there must be its own (issue 21)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.test_operations import ended_runs
from tests.helpers import (
    Daemon,
    end_detached,
    require_root,
    torchd_as,
    torchd_cmd,
    user_owned_dir,
    wait_for,
)

Factory = Callable[..., Daemon]
NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_in(state: Path) -> dict[str, int]:
    """The mode of everything in a state dir, by name relative to it."""
    found = {".": mode(state)}
    for entry in state.rglob("*"):
        if not entry.is_socket():
            found[str(entry.relative_to(state))] = mode(entry)
    return found


@pytest.mark.parametrize(("daemon_keys", "dir_mode", "file_mode"), [
    ("", 0o700, 0o600), ("daemon: {socket_group: nogroup}", 0o2750, 0o640),
], ids=["private", "socket-group"])
def test_a_root_daemon_makes_its_state_dir_private_whatever_the_umask(
        write_tasks: Callable[..., Path], daemon_factory: Factory, daemon_keys: str,
        dir_mode: int, file_mode: int) -> None:
    """umask 000: the state dir and logs are 0700 and every file in them 0600; with
    daemon.socket_group 2750 and 0640, all of that group."""
    require_root()
    config = write_tasks(f"""
        {daemon_keys}
        tasks:
          - {{name: job, schedule: "* * * * * *", command: "echo out"}}
    """)
    daemon = daemon_factory(config)
    daemon.cmd = torchd_as(umask="000")
    daemon.start()
    ended_runs(daemon, "job", 1)
    found = modes_in(daemon.state_dir)
    assert found.pop(".") == dir_mode
    assert found.pop("logs") == dir_mode
    assert {"torchd.pid", "children.journal", "fires.ledger", "history.db",
            "logs/job.log"} <= set(found)
    assert {name: file_mode for name in found} == found
    groups = {entry.stat().st_gid for entry in daemon.state_dir.rglob("*")}
    assert groups == {NOBODY if daemon_keys else 0}


def test_a_detached_daemon_makes_its_log_private_whatever_the_umask(
        tmp_path: Path, write_tasks: Callable[..., Path]) -> None:
    """`torchd start` under umask 000: torchd.log too is 0600, in a 0700 state dir."""
    require_root()
    config = write_tasks("""
        tasks:
          - {name: job, schedule: "@hourly", command: "true"}
    """)
    state = tmp_path / "made" / "state"
    try:
        started = subprocess.run(torchd_as(umask="000")("start", "-c", str(config),
                                                         "--state-dir", str(state)),
                                 capture_output=True, text=True, timeout=60, check=False)
        assert started.returncode == 0, started.stderr
        assert mode(state) == 0o700
        assert mode(state.parent) == 0o755  # a directory it had to make on the way
        assert mode(state / "torchd.log") == 0o600
    finally:
        end_detached(state)


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    with user_owned_dir("nobody") as path:
        yield path


def test_an_unprivileged_daemon_makes_its_state_dir_private(
        nobody_dir: Path, daemon_factory: Factory) -> None:
    """As user nobody, under umask 000: 0700 and 0600 as well, all nobody's."""
    config = nobody_dir / "tasks.yaml"
    config.write_text('tasks:\n  - {name: job, schedule: "* * * * * *", command: "echo x"}\n')
    daemon = Daemon(config=config, state_dir=nobody_dir / "state",
                    cmd=torchd_as("nobody", umask="000"))
    try:
        daemon.start()
        ended_runs(daemon, "job", 1)
        found = modes_in(daemon.state_dir)
        assert found.pop(".") == 0o700
        assert found.pop("logs") == 0o700
        assert {name: 0o600 for name in found} == found
        assert {e.stat().st_uid for e in daemon.state_dir.rglob("*")} == {NOBODY}
    finally:
        daemon.kill_everything()


def refused_start(config: Path, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(torchd_cmd("run", "-c", str(config), "--state-dir", str(state)),
                          capture_output=True, text=True, timeout=60, check=False)


NOT_OWN = ("{0} (owner uid 65534, mode {1}) is not the daemon's own (uid 0): chown 0 {0}, or "
           "give torchd a state dir of its own")
OPEN = ("{0} (owner uid 0, mode {1}) is writable by group or others, who could plant files "
        "that torchd acts on: chmod 700 {0} (and check what is in it)")


@pytest.mark.parametrize(("owner", "dir_mode", "expected"), [
    (NOBODY, 0o777, NOT_OWN), (NOBODY, 0o700, NOT_OWN), (0, 0o777, OPEN), (0, 0o770, OPEN),
], ids=["others-0777", "others-0700", "own-0777", "own-0770"])
def test_a_state_dir_that_is_not_its_own_alone_is_refused(
        tmp_path: Path, write_tasks: Callable[..., Path], owner: int, dir_mode: int,
        expected: str) -> None:
    """Refused at start with the path, owner, mode and the fix; nothing run."""
    require_root()
    marker = tmp_path / "ran"
    config = write_tasks(f"""
        tasks:
          - {{name: job, schedule: "@reboot", command: "touch {marker}"}}
    """)
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, owner, -1)
    state.chmod(dir_mode)
    result = refused_start(config, state)
    assert result.returncode == 1
    assert result.stderr == (f"torchd: cannot use the state dir: "
                             f"{expected.format(state, f'{dir_mode:04o}')}\n")
    assert not marker.exists()
    assert not (state / "torchd.pid").exists()


@pytest.mark.parametrize(("parent_mode", "refused"), [
    (0o777, True), (0o775, True), (0o1777, False), (0o755, False),
], ids=["0777", "0775", "sticky-1777", "0755"])
def test_a_parent_others_can_write_is_refused_unless_sticky(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory,
        parent_mode: int, refused: bool) -> None:
    """Whoever can write a directory above the state dir can swap the state dir."""
    require_root()
    config = write_tasks('tasks:\n  - {name: job, schedule: "@hourly", command: "true"}\n')
    parent = tmp_path / "parent"
    parent.mkdir()
    parent.chmod(parent_mode)
    if refused:
        result = refused_start(config, parent / "state")
        assert result.returncode == 1
        assert (f"directory {parent} (owner uid 0, mode {parent_mode:04o}) is writable by "
                f"group or others, who can replace what is in it: chmod go-w {parent}"
                in result.stderr)
        assert not (parent / "state").exists()
    else:
        daemon_factory(config, state="parent/state").start()
        assert mode(parent / "state") == 0o700


def test_planted_state_is_not_acted_on(tmp_path: Path,
                                       write_tasks: Callable[..., Path]) -> None:
    """The reproduction: in a state dir anyone can write, a planted submitted.json (a
    command to run as root) and a children.journal line naming an unrelated process. The
    daemon refuses the dir: nothing planted runs, the process lives."""
    require_root()
    marker = tmp_path / "planted-ran"
    config = write_tasks('tasks:\n  - {name: job, schedule: "@hourly", command: "true"}\n')
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    (state / "submitted.json").write_text(json.dumps([{
        "name": "submit:evil", "command": ["touch", str(marker)], "at": 0.0, "hosts": [],
        "submitted": "2026-01-01T00:00:00.000Z"}]))
    victim = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        ticks = psutil.Process(victim.pid)
        wait_for(lambda: ticks.cmdline()[:1] == ["sleep"], message="victim exec")
        with open(f"/proc/{victim.pid}/stat", encoding="ascii") as stat_file:
            fields = stat_file.read().rsplit(")", 1)[1].split()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        (state / "children.journal").write_text(
            f"# boot {boot}\n+ {victim.pid} {fields[19]} {fields[3]}\n"
            f"+ {victim.pid} {fields[19]}\n")  # in the journal's format of before, too
        result = refused_start(config, state)
        assert result.returncode == 1, result.stderr
        assert "is writable by group or others" in result.stderr
        assert not marker.exists()
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_a_symlinked_task_log_is_not_followed(tmp_path: Path, write_tasks: Callable[..., Path],
                                              daemon_factory: Factory) -> None:
    """logs/job.log -> a file of root's: the daemon does not append to it; it says why,
    once, and the runs go on."""
    require_root()
    victim = tmp_path / "victim"
    victim.write_text("root's own\n")
    config = write_tasks("""
        tasks:
          - {name: job, schedule: "* * * * * *", command: "echo appended"}
    """)
    daemon = daemon_factory(config)
    (daemon.state_dir / "logs").mkdir(parents=True)
    (daemon.state_dir / "logs" / "job.log").symlink_to(victim)
    daemon.start()
    assert {run["outcome"] for run in ended_runs(daemon, "job", 2)} == {"ok"}
    assert victim.read_text() == "root's own\n"
    errors = [line for line in daemon.stderr().splitlines() if " torchd.tasklog: " in line
              and "a symlink; torchd does not follow symlinks in its state dir" in line]
    assert len(errors) == 1, daemon.stderr()


def test_a_symlinked_daemon_log_stops_a_detached_start(tmp_path: Path,
                                                       write_tasks: Callable[..., Path]) -> None:
    """torchd.log -> a file of root's: `torchd start` refuses, saying why."""
    require_root()
    victim = tmp_path / "victim"
    victim.write_text("root's own\n")
    config = write_tasks('tasks:\n  - {name: job, schedule: "@hourly", command: "true"}\n')
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "torchd.log").symlink_to(victim)
    try:
        result = subprocess.run(torchd_cmd("start", "-c", str(config), "--state-dir",
                                           str(state)),
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 1
        assert "a symlink; torchd does not follow symlinks in its state dir" in result.stderr
        assert victim.read_text() == "root's own\n"
    finally:
        end_detached(state)


def test_journal_entries_that_are_not_its_runs_are_ignored(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """Entries naming pid 1, a process that leads no session, or one whose start time or
    session differ are not acted on; an entry that is a real leftover run is."""
    require_root()
    config = write_tasks('tasks:\n  - {name: job, schedule: "@hourly", command: "true"}\n')
    leftover = subprocess.Popen(["sleep", "600"], start_new_session=True)
    other = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        wait_for(lambda: psutil.Process(leftover.pid).cmdline()[:1] == ["sleep"]
                 and psutil.Process(other.pid).cmdline()[:1] == ["sleep"],
                 message="sleeps exec")

        def stat_of(pid: int) -> list[str]:
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat_file:
                return stat_file.read().rsplit(")", 1)[1].split()

        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        one, mine, theirs = stat_of(1), stat_of(os.getpid()), stat_of(other.pid)
        daemon = daemon_factory(config)
        daemon.state_dir.mkdir(mode=0o700)
        (daemon.state_dir / "children.journal").write_text(
            f"# boot {boot}\n"
            f"+ 1 {one[19]} {one[3]}\n"  # pid 1: kill(-1) would signal everything
            f"+ {os.getpid()} {mine[19]} {mine[3]}\n"  # this test: no session leader
            f"+ {other.pid} {int(theirs[19]) + 1} {theirs[3]}\n"  # another start time
            f"+ {other.pid} {theirs[19]} {int(theirs[3]) + 1}\n"  # another session
            f"+ {leftover.pid} {stat_of(leftover.pid)[19]} {leftover.pid}\n")
        daemon.start()
        wait_for(lambda: leftover.poll() is not None, message="the leftover run ended")
        assert other.poll() is None
        assert f"ending process group {leftover.pid} left behind" in daemon.stderr()
        assert daemon.stderr().count("left behind by a previous torchd") == 1
    finally:
        for proc in (leftover, other):
            proc.kill()
            proc.wait()


def test_the_daemons_own_group_is_never_a_leftover() -> None:
    """A session leader asks of itself: a journal entry naming the reader's own group is
    not one of its runs, whatever the entry says."""
    code = ("import os; from torchd.process.journal import ours; "
            "from torchd.system.procstat import proc_stat; s = proc_stat(os.getpid()); "
            "print(s.session == os.getpid() == os.getpgrp(), "
            "ours(os.getpid(), s.start_ticks, s.session))")
    result = subprocess.run([*torchd_cmd()[:1], "-c", code], capture_output=True, text=True,
                            check=True, start_new_session=True)
    assert result.stdout.split() == ["True", "False"]


def test_files_planted_in_its_own_state_dir_are_refused(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """A state dir of the daemon's own, left with files it did not make (a submission of
    another user's, a journal and a temporary file that are FIFOs, pauses hard-linked to
    another file): none is acted on, none blocks the start, the other file is untouched."""
    require_root()
    marker = tmp_path / "planted-ran"
    config = write_tasks('tasks:\n  - {name: job, schedule: "@hourly", command: "true"}\n')
    daemon = daemon_factory(config)
    daemon.state_dir.mkdir(mode=0o700)
    submitted = daemon.state_dir / "submitted.json"
    submitted.write_text(json.dumps([{
        "name": "submit:evil", "command": ["touch", str(marker)], "at": 0.0, "hosts": [],
        "submitted": "2026-01-01T00:00:00.000Z"}]))
    os.chown(submitted, NOBODY, -1)
    os.mkfifo(daemon.state_dir / "children.journal")
    os.mkfifo(daemon.state_dir / "fires.tmp")
    other = tmp_path / "other"
    other.write_text('{"all": true, "tasks": []}')
    os.link(other, daemon.state_dir / "paused.json")
    daemon.start()
    status = json.loads(daemon.cli("status", "--json").stdout)
    assert {task["name"]: task["paused"] for task in status["tasks"]} == {"job": False}
    assert not marker.exists()
    assert other.read_text() == '{"all": true, "tasks": []}'
    log = daemon.stderr()
    assert "owned by uid 65534, not the daemon's; refusing it in the state dir" in log
    assert "a hard link to another file; refusing it in the state dir" in log
    journal = daemon.state_dir / "children.journal"
    assert (f"child journal {journal} not read: not a regular file; refusing it in the "
            "state dir") in log
    assert journal.is_file()  # a new one in its place
    assert status["problems"] == []


def test_an_entry_of_another_boot_is_ignored(tmp_path: Path, write_tasks: Callable[..., Path],
                                             daemon_factory: Factory) -> None:
    """A journal from an earlier boot names pids that mean nothing now."""
    require_root()
    config = write_tasks('tasks:\n  - {name: job, schedule: "@hourly", command: "true"}\n')
    other = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        wait_for(lambda: psutil.Process(other.pid).cmdline()[:1] == ["sleep"],
                 message="sleep exec")
        with open(f"/proc/{other.pid}/stat", encoding="ascii") as stat_file:
            fields = stat_file.read().rsplit(")", 1)[1].split()
        daemon = daemon_factory(config)
        daemon.state_dir.mkdir(mode=0o700)
        (daemon.state_dir / "children.journal").write_text(
            f"# boot 00000000-0000-0000-0000-000000000000\n"
            f"+ {other.pid} {fields[19]} {fields[3]}\n")
        daemon.start()
        assert daemon.cli("status").returncode == 0
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A root-owned 0755 directory in /tmp: others can pass through it (the test's own
    tmp_path is 0700, which would deny them whatever the daemon does)."""
    with user_owned_dir("root") as path:
        path.chmod(0o755)
        yield path


def test_a_task_run_as_another_user_cannot_read_the_daemons_records(
        open_dir: Path, write_tasks: Callable[..., Path]) -> None:
    """`user: nobody` cannot read the history, the daemon log or another task's log."""
    state = open_dir / "state"
    out = open_dir / "out"
    out.mkdir()
    os.chown(out, NOBODY, -1)
    targets = [state / "history.db", state / "torchd.log", state / "logs" / "secret.log"]
    reads = "; ".join(f"cat {t} >/dev/null 2>&1 && echo read {t.name} || echo denied {t.name}"
                      for t in targets)
    config = write_tasks(f"""
        tasks:
          - {{name: secret, schedule: "* * * * * *", command: "echo top-secret"}}
          - {{name: snoop, schedule: "@yearly", user: nobody,
              command: "({reads}) > {out}/report"}}
    """)
    try:
        started = subprocess.run(torchd_cmd("start", "-c", str(config), "--state-dir",
                                            str(state)),
                                 capture_output=True, text=True, timeout=60, check=False)
        assert started.returncode == 0, started.stderr
        wait_for((state / "logs" / "secret.log").exists, message="secret's log")
        trigger = subprocess.run(torchd_cmd("trigger", "snoop", "--wait", "--state-dir",
                                            str(state)),
                                 capture_output=True, text=True, timeout=60, check=False)
        assert trigger.returncode == 0, trigger.stdout + trigger.stderr
        assert (out / "report").read_text().split("\n")[:3] == [
            "denied history.db", "denied torchd.log", "denied secret.log"]
    finally:
        end_detached(state)


def test_stop_never_signals_the_pid_a_pidfile_names(tmp_path: Path) -> None:
    """A pidfile whose text names an unrelated process while another process holds its
    lock: `torchd stop` (as root, no socket to answer) does not signal the named one."""
    require_root()
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    pidfile = state / "torchd.pid"
    named = subprocess.Popen(["sleep", "600"], start_new_session=True)
    holder = None
    try:
        pidfile.write_text(f"{named.pid}\n")
        holder = subprocess.Popen(["flock", str(pidfile), "sleep", "600"],
                                  start_new_session=True)

        def locked() -> bool:
            with pidfile.open() as probe:
                try:
                    fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return True
                return False

        wait_for(locked, message="the lock held")
        stop = subprocess.run(torchd_cmd("stop", "--timeout", "1", "--state-dir", str(state)),
                              capture_output=True, text=True, timeout=60, check=False)
        assert f"sent SIGTERM to pid {holder.pid}" in stop.stderr
        assert named.poll() is None
    finally:
        for proc in (named, holder):
            if proc is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_a_journal_or_ledger_that_cannot_be_written_is_tried_again(
        write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """Directories in the way of the child journal's rewrite and of the fire ledger: the
    daemon starts and runs, `status` shows both problems; once the directories are gone,
    both files are written again (within 10 s) and the problems clear."""
    config = write_tasks('tasks:\n  - {name: tick, schedule: "* * * * * *", command: "true"}\n')
    daemon = daemon_factory(config)
    daemon.state_dir.mkdir(mode=0o700)
    in_the_way = [daemon.state_dir / "children.tmp", daemon.state_dir / "fires.ledger"]
    for path in in_the_way:
        (path / "sub").mkdir(parents=True)  # not empty: unlink and rename fail

    def problems() -> set[str]:
        return {p["key"] for p in json.loads(daemon.cli("status", "--json").stdout)[
            "problems"]}

    daemon.start()
    assert problems() == {"child-journal", "fire-ledger"}
    ended_runs(daemon, "tick", 1)
    for path in in_the_way:
        shutil.rmtree(path)
    wait_for(lambda: problems() == set(), timeout=20, message="both written again")
    assert (daemon.state_dir / "fires.ledger").read_text().startswith("tick ")
    journal = (daemon.state_dir / "children.journal").read_text()
    assert journal.startswith("# boot ")
