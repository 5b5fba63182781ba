"""Shared test helpers: waiting with deadlines, and the real daemon as a subprocess."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TypeVar

import psutil

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05,
             message: str = "condition") -> T:
    """Poll until predicate() is truthy; fail the test with `message` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def unavailable(reason: str) -> NoReturn:
    """End a test that cannot run here: a failure under CI (where a skip would hide a
    missing install), a skip elsewhere."""
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"{reason}, and CI must run every test")
    pytest.skip(reason)


def require_tool(name: str) -> str:
    """Path of an external tool."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed")
    return path


def libfaketime(**settings: str) -> dict[str, str]:
    """Environment that runs a process under libfaketime, e.g. FAKETIME="+120". The library
    is preloaded directly: the `faketime` wrapper keeps a semaphore per pid in /dev/shm, and
    one that a killed wrapper left makes a later wrapper with the same pid fail at start
    ("sem_open: File exists")."""
    found = glob.glob("/usr/lib/*/faketime/libfaketime.so.1")
    if not found:
        unavailable("libfaketime is not installed")
    # The monotonic clock stays real: the daemon's timers and deadlines follow it.
    return {"LD_PRELOAD": found[0], "FAKETIME_DONT_FAKE_MONOTONIC": "1", **settings}


def require_root() -> None:
    """Root-only behaviour (running tasks as another user, the task-file owner check) is
    tested as root; CI runs as root."""
    if os.geteuid() != 0:
        unavailable("these tests need root")


@contextlib.contextmanager
def full_filesystem(path: Path) -> Iterator[Path]:
    """A tiny tmpfs mounted at `path` (made if missing) and filled to the last byte, so
    that every write there fails with ENOSPC; unmounted afterwards (root only)."""
    require_root()
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(path)],
                   check=True)
    try:
        filler = os.open(path / ".filler", os.O_WRONLY | os.O_CREAT, 0o600)
        with contextlib.suppress(OSError):
            while os.write(filler, b"\0" * 512):
                pass
        os.close(filler)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def torchd_as(user: str | None = None, *, umask: str | None = None) -> Callable[..., list[str]]:
    """Like torchd_cmd, but running torchd as `user` (with that user's primary group and
    no other; root only) and/or under `umask`."""
    prefix: list[str] = []
    python = [sys.executable]
    if user is not None:
        require_root()
        prefix = ["setpriv", f"--reuid={user}", f"--regid={pwd.getpwnam(user).pw_gid}",
                  "--clear-groups", "--"]
        python = _python_for(prefix)
    if umask is not None:
        prefix += ["sh", "-c", f'umask {umask}; exec "$@"', "sh"]
    return lambda *args: [*prefix, *python, "-m", "torchd", *args]


def _python_for(prefix: list[str]) -> list[str]:
    """An interpreter that can run torchd under `prefix`: the tests' own, or, where another
    user cannot reach it (a Python under /root), the system's with the venv's packages."""
    # Through a shell: setpriv itself can exec what the user alone cannot reach.
    probe = [*prefix, "sh", "-c", 'exec "$@"', "sh", sys.executable, "-c", "import torchd"]
    if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return [sys.executable]
    packages = [p for p in sys.path if p.endswith("site-packages")]
    root = str(Path(__file__).resolve().parents[1])
    return ["env", f"PYTHONPATH={':'.join([root, *packages])}", "/usr/bin/python3"]


@contextlib.contextmanager
def user_owned_dir(user: str = "nobody") -> Iterator[Path]:
    """A fresh directory in /tmp that `user` owns (the test's own tmp_path is root's 0700,
    which another user cannot enter); removed afterwards."""
    require_root()
    path = Path(tempfile.mkdtemp(prefix="torchd-user-"))
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def torchd_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "torchd", *args]


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


@dataclass
class Daemon:
    """A `torchd run` subprocess with its own state dir; always fully ended in teardown."""

    config: Path
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    seen: dict[int, int] = field(default_factory=dict)  # its pid and its descendants':
    # pid -> when the process started (_start_ticks)
    start_env: dict[str, str] = field(default_factory=dict)  # the daemon's alone, not the CLI's
    spawned_by: float = 0.0  # time.time() once the daemon process had started (exec done)
    cmd: Callable[..., list[str]] = field(default=torchd_cmd)
    # how torchd is run, daemon and CLI alike: e.g. torchd_as("nobody")

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def stderr_path(self) -> Path:
        return self.state_dir.parent / f"{self.state_dir.name}.stderr"

    def start(self, *extra: str) -> Daemon:
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)  # the daemon makes its own
        env = {**os.environ, **self.env, **self.start_env}
        with self.stderr_path.open("ab") as err:
            self.proc = subprocess.Popen(
                self.cmd("run", "-c", str(self.config), "--state-dir", str(self.state_dir),
                         *extra),
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env,
                start_new_session=True,
            )
        self.spawned_by = time.time()
        proc = self.proc
        started = _start_ticks(proc.pid)  # its group is killed in teardown
        if started is not None:
            self.seen[proc.pid] = started
        # Connecting (not just seeing the file) skips a socket a killed daemon left behind.
        wait_for(lambda: self._answers() or proc.poll() is not None, timeout=20,
                 message="daemon socket")
        assert self.proc.poll() is None, self.stderr()
        return self

    def _answers(self) -> bool:
        with socket.socket(socket.AF_UNIX) as sock:
            try:
                sock.connect(str(self.state_dir / "torchd.sock"))
            except OSError:
                return False
        return True

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text()
        except FileNotFoundError:
            return ""

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.cmd(*args, "--state-dir", str(self.state_dir)),
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.env}, check=False)

    def descendants(self) -> list[psutil.Process]:
        assert self.proc is not None
        try:
            found = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for process in found:
            started = _start_ticks(process.pid)
            if started is not None:
                self.seen[process.pid] = started
        return found

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill_everything(self) -> None:
        """Teardown: end the daemon and every process it started, pass or fail."""
        if self.proc is None:
            return
        self.descendants()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            # Reaped just now: its group's id is not yet anybody else's.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        # What it started and is still there: a group led by such a process whole, another
        # process alone. Each only if its pid still names the process seen: the suite
        # starts tens of thousands of processes and pids wrap (pid_max 32768), so a pid
        # seen early in a test may name another test's process, or group, by now. What a
        # run left without being seen is its cgroup's to end.
        for pid, started in self.seen.items():
            if _start_ticks(pid) != started:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
        remove_run_cgroups(self.state_dir)


def _start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat:
    unlike a time of day, no clock step changes it); None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def remove_run_cgroups(state_dir: Path) -> None:
    """Teardown: end and remove the cgroups a daemon of this state dir made (a daemon
    killed with SIGKILL leaves them)."""
    from torchd.process.cgroups import RunCgroupParent, set_up_run_cgroups

    parent = set_up_run_cgroups(state_dir).parent
    if parent is None:
        return
    runs = RunCgroupParent(parent)
    for cgroup in runs.leftovers():
        cgroup.signal(signal.SIGKILL)
        wait_for(cgroup.remove, timeout=10, message=f"{cgroup.path} removed")
    runs.release()


def record_cmd(out: Path, extra: str = "") -> str:
    """A task command that appends its fire id and start time to `out`, in one write."""
    return f'echo "$TORCHD_FIRE_ID $(date +%s.%N){extra}" >> {out}'


def fire_ids(out: Path) -> list[str]:
    return [line.split()[0] for line in lines(out)]


def end_detached(state_dir: Path) -> None:
    """Teardown for daemons started with `torchd start`: TERM, then KILL them and their runs."""
    pidfile = state_dir / "torchd.pid"
    try:
        pid = int(pidfile.read_text().strip())
        proc = psutil.Process(pid)
        if "torchd" not in " ".join(proc.cmdline()):
            return
    except (FileNotFoundError, ValueError, psutil.Error):
        return
    children = {child.pid: _start_ticks(child.pid) for child in proc.children(recursive=True)}
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except psutil.TimeoutExpired:
        proc.kill()
    for child, started in children.items():
        if started is None or _start_ticks(child) != started:
            continue  # gone, and its pid may name another test's process by now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child, signal.SIGKILL)


def process_gone(pid: int) -> bool:
    """Exited (a zombie counts: it has stopped, whoever is left to reap it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class RedisServer:
    binary: str
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(self.answers, timeout=10, message="redis-server")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
