"""torchd under systemd: the notify protocol on a datagram socket standing in for
systemd's, the shipped files (`torchd example`, `torchd unit`), and the units under a real
systemd booted as PID 1 in a container."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.helpers import Daemon, lines, require_root, require_tool, torchd_cmd, wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SO_TIMESTAMP = 29  # Linux's; Python's socket module does not name it
ONE_TASK = """\
daemon: {watch: false}
tasks: [{name: a, schedule: "@hourly", command: "true"}]
"""
UNITS = ["torchd.service", "torchd-hardened.service"]


def torchd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(torchd_cmd(*args), capture_output=True, text=True, timeout=60,
                          check=False)


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class NotifySocket:
    """Stands in for systemd's $NOTIFY_SOCKET: each datagram as its NAME=VALUE fields."""

    def __init__(self, path: Path) -> None:
        self.address = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.address)
        # The kernel stamps each datagram as it arrives: its time does not depend on when
        # a loaded test process gets round to reading it.
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)

    def next(self, timeout: float = 20) -> dict[str, str]:
        self._sock.settimeout(timeout)
        fields = self._sock.recv(4096).decode().split("\n")
        return dict(field.split("=", 1) for field in fields)

    def arrivals(self, seconds: float) -> list[tuple[float, dict[str, str]]]:
        """Every message for `seconds`, with when it arrived (the kernel's stamp, Unix
        time)."""
        found = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._sock.settimeout(left)
            try:
                data, ancillary, _, _ = self._sock.recvmsg(4096, socket.CMSG_SPACE(16))
            except TimeoutError:
                break
            ((_, kind, stamp),) = ancillary
            assert kind == SO_TIMESTAMP
            seconds_part, micros = struct.unpack("qq", stamp)
            fields = data.decode().split("\n")
            found.append((seconds_part + micros / 1e6,
                          dict(field.split("=", 1) for field in fields)))
        return found

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(tmp_path / "notify.sock")
    yield listener
    listener.close()


def watched_by_pid(*args: str) -> list[str]:
    """torchd with WATCHDOG_PID its own pid, as systemd sets it."""
    return ["sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh", *torchd_cmd(*args)]


def test_ready_then_stopping(write_tasks: Callable[..., Path],
                             daemon_factory: Callable[..., Daemon],
                             notify_socket: NotifySocket) -> None:
    daemon = daemon_factory(write_tasks(ONE_TASK), env={"NOTIFY_SOCKET": notify_socket.address})
    daemon.start()
    assert notify_socket.next() == {"READY": "1",
                                    "STATUS": f"config {_hash(daemon)}, 1 task(s)"}
    daemon.signal(signal.SIGTERM)
    assert notify_socket.next() == {"STOPPING": "1"}
    assert daemon.wait_exit() == 0


def _hash(daemon: Daemon) -> str:
    status = daemon.cli("status", "--json")
    return str(json.loads(status.stdout)["config_hash"])


@pytest.mark.parametrize("how", ["request", "signal"])
def test_a_reload_is_told_as_reloading_then_ready(
        how: str, write_tasks: Callable[..., Path], daemon_factory: Callable[..., Daemon],
        notify_socket: NotifySocket) -> None:
    """RELOADING=1 with the monotonic time it began (what Type=notify-reload needs to
    match it with its signal), then READY=1 with the new config."""
    path = write_tasks(ONE_TASK)
    daemon = daemon_factory(path, env={"NOTIFY_SOCKET": notify_socket.address}).start()
    assert notify_socket.next()["READY"] == "1"
    path.write_text(ONE_TASK.replace("tasks: [", 'tasks: [{name: b, schedule: "@daily", '
                                                 'command: "true"}, '))
    before = monotonic_usec()
    if how == "request":
        assert daemon.cli("reload").returncode == 0
    else:
        daemon.signal(signal.SIGHUP)
    reloading = notify_socket.next()
    assert reloading.keys() == {"RELOADING", "MONOTONIC_USEC"}
    assert before <= int(reloading["MONOTONIC_USEC"]) <= monotonic_usec()
    assert notify_socket.next() == {"READY": "1",
                                    "STATUS": f"config {_hash(daemon)}, 2 task(s)"}


def test_a_rejected_reload_fails_the_command_and_still_ends_with_ready(
        write_tasks: Callable[..., Path], daemon_factory: Callable[..., Daemon],
        notify_socket: NotifySocket) -> None:
    """systemd waits for READY=1 after RELOADING=1 whatever the outcome; the status line
    says the reload was rejected, and `torchd reload` (ExecReload=) exits 2."""
    path = write_tasks(ONE_TASK)
    daemon = daemon_factory(path, env={"NOTIFY_SOCKET": notify_socket.address}).start()
    assert notify_socket.next()["READY"] == "1"
    running = _hash(daemon)
    path.write_text("tasks: [{name: x}]\n")
    assert daemon.cli("reload").returncode == 2
    assert notify_socket.next()["RELOADING"] == "1"
    ready = notify_socket.next()
    last = json.loads(daemon.cli("status", "--json").stdout)["last_reload"]
    assert ready == {"READY": "1", "STATUS": f"reload (request) REJECTED at {last['time']}, "
                     f"2 problems (torchd status tells); running config {running}, 1 task(s)"}


def test_the_watchdog_is_pinged_at_half_its_interval(
        write_tasks: Callable[..., Path], daemon_factory: Callable[..., Daemon],
        notify_socket: NotifySocket) -> None:
    daemon = daemon_factory(write_tasks(ONE_TASK), env={
        "NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "1000000"})
    daemon.cmd = watched_by_pid
    daemon.start()
    pings = [at for at, message in notify_socket.arrivals(4.0) if "WATCHDOG" in message]
    gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
    assert len(pings) >= 6, pings
    # Half a second after the last ping, plus the loop's lateness: never later than
    # systemd allows, never early.
    assert all(0.45 < gap < 1.0 for gap in gaps), gaps
    assert statistics.median(gaps) < 0.75, gaps


@pytest.mark.parametrize("watchdog", [{}, {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}],
                         ids=["no-WATCHDOG_USEC", "WATCHDOG_PID-of-another"])
def test_no_watchdog_pings_unless_the_daemon_is_the_one_watched(
        watchdog: dict[str, str], write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon], notify_socket: NotifySocket) -> None:
    daemon = daemon_factory(write_tasks(ONE_TASK),
                            env={"NOTIFY_SOCKET": notify_socket.address, **watchdog})
    daemon.start()
    assert notify_socket.next()["READY"] == "1"  # the pings would begin before it
    assert notify_socket.arrivals(1.5) == []  # three would-be intervals


def test_runs_do_not_inherit_the_notify_variables(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon], notify_socket: NotifySocket) -> None:
    """They would notify the unit in torchd's name (and a run's own sd_notify code would
    take torchd's watchdog for its own)."""
    out = tmp_path / "env"
    daemon = daemon_factory(write_tasks(f"""\
        tasks:
          - name: env
            schedule: "@reboot"
            command: "env > {out}.tmp && mv {out}.tmp {out}"
        """), env={"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "1000000"})
    daemon.cmd = watched_by_pid
    daemon.start()
    wait_for(out.exists, message="the run's environment")
    names = {line.split("=", 1)[0] for line in lines(out)}
    assert "TORCHD_RUN_ID" in names
    assert names & {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} == set()


def test_the_example_is_the_shipped_file_and_loads(tmp_path: Path) -> None:
    printed = torchd("example")
    assert printed.returncode == 0
    assert printed.stdout == (ROOT / "etc" / "tasks.example.yaml").read_text()
    path = tmp_path / "tasks.yaml"
    path.write_text(printed.stdout)
    check = torchd("check", "-c", str(path))
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(f"{path}: OK, ")


@pytest.mark.parametrize("unit", UNITS)
def test_the_shipped_unit_verifies(unit: str, tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    printed = torchd("unit", *(["--hardened"] if "hardened" in unit else []))
    assert printed.returncode == 0
    assert printed.stdout == (ROOT / "systemd" / unit).read_text()
    # verify insists that ExecStart's binary exists: point it at this environment's torchd
    here = Path(sys.executable).with_name("torchd")
    assert "ExecStart=/usr/local/bin/torchd run -c /etc/torchd/tasks.yaml" in printed.stdout
    (tmp_path / unit).write_text(printed.stdout.replace("/usr/local/bin/torchd", str(here)))
    result = subprocess.run([analyze, "verify", str(tmp_path / unit)],
                            capture_output=True, text=True, check=False)
    problems = [line for line in result.stderr.splitlines() if unit in line]
    assert result.returncode == 0, result.stderr
    assert problems == []


# ----- under a real systemd ------------------------------------------------------------------
GOOD = """\
daemon: {watch: false}
tasks:
  - name: whoami
    schedule: "*/2 * * * * *"
    command: "id -un > /var/lib/torchd/whoami"
"""
BAD = "daemon: {watch: false}\ntasks: [{name: x}]\n"


@dataclass
class Container:
    """systemd booted as PID 1 by systemd-nspawn on an overlay of this host's root (what
    it writes goes to a tmpfs), with this checkout, its interpreter and its packages bound
    in read-only under /opt/torchd, and /usr/local/bin/torchd running them."""

    nspawn: subprocess.Popen[bytes]
    root: Path

    def init_pid(self) -> int | None:
        children = psutil.Process(self.nspawn.pid).children()
        return children[0].pid if children else None

    def run(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        init = self.init_pid()
        assert init is not None, "the container is not running"
        return subprocess.run(["nsenter", "-t", str(init), "-a", *cmd], capture_output=True,
                              text=True, timeout=60, check=False)

    def booted(self) -> bool:
        if self.nspawn.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {self.nspawn.returncode}")
        if self.init_pid() is None:
            return False
        return self.run("systemctl", "is-system-running").stdout.strip() in ("running",
                                                                             "degraded")

    def write(self, path: str, text: str) -> None:
        """A root-owned file, 0644, in directories 0755, as the task-file check wants."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.parent.chmod(0o755)
        target.write_text(text)
        target.chmod(0o644)

    def show(self, unit: str, prop: str) -> str:
        return self.run("systemctl", "show", "-p", prop, "--value", unit).stdout.strip()


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def _binds() -> tuple[list[str], str]:
    """nspawn's --bind-ro options and the wrapper that runs torchd inside."""
    prefix = Path(sys.base_prefix).resolve()
    python = Path(sys.executable).resolve().relative_to(prefix)
    sites = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))
             and Path(p).is_dir()]
    binds = [f"--bind-ro={ROOT}:/opt/torchd/src", f"--bind-ro={prefix}:/opt/torchd/python",
             *(f"--bind-ro={site}:/opt/torchd/site{i}" for i, site in enumerate(sites))]
    path = ":".join(["/opt/torchd/src", *(f"/opt/torchd/site{i}" for i in range(len(sites)))])
    wrapper = (f"#!/bin/sh\nPYTHONPATH={path} PYTHONDONTWRITEBYTECODE=1 "
               f'exec /opt/torchd/python/{python} -m torchd "$@"\n')
    return binds, wrapper


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    require_root()
    nspawn = require_tool("systemd-nspawn")
    require_tool("nsenter")
    base = tmp_path_factory.mktemp("container")
    layers, root = base / "layers", base / "root"
    layers.mkdir()
    root.mkdir()
    _mount("-t", "tmpfs", "tmpfs", str(layers))
    try:
        (layers / "upper").mkdir()
        (layers / "work").mkdir()
        _mount("-t", "overlay", "overlay", "-o",
               f"lowerdir=/,upperdir={layers}/upper,workdir={layers}/work", str(root))
        binds, wrapper = _binds()
        (root / "usr/local/bin/torchd").write_text(wrapper)
        (root / "usr/local/bin/torchd").chmod(0o755)
        with (base / "console.log").open("wb") as console:
            proc = subprocess.Popen(
                [nspawn, "-D", str(root), "--boot", "--register=no", "--keep-unit",
                 "--private-network", f"--machine=torchd-test-{os.getpid()}", *binds,
                 "systemd.unit=basic.target"],  # the services this host runs stay off
                stdin=subprocess.DEVNULL, stdout=console, stderr=console,
                start_new_session=True)
        box = Container(proc, root)
        try:
            wait_for(box.booted, timeout=60, interval=0.2, message="systemd in the container")
            yield box
        finally:
            proc.terminate()  # nspawn asks the container's systemd to power off
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False, capture_output=True)
        subprocess.run(["umount", "-l", str(layers)], check=False, capture_output=True)


@pytest.fixture
def install(container: Container) -> Iterator[Callable[..., str]]:
    """Install a shipped unit with a task file (and a drop-in); stopped and its state dir
    removed afterwards."""
    installed: list[str] = []

    def install_unit(unit: str, tasks: str, drop_in: str | None = None) -> str:
        container.write(f"/etc/systemd/system/{unit}", (ROOT / "systemd" / unit).read_text())
        container.write("/etc/torchd/tasks.yaml", tasks)
        if drop_in is not None:
            container.write(f"/etc/systemd/system/{unit}.d/test.conf", drop_in)
        assert container.run("systemctl", "daemon-reload").returncode == 0
        installed.append(unit)
        return unit

    yield install_unit
    for unit in installed:
        container.run("systemctl", "stop", unit)
        container.run("systemctl", "reset-failed", unit)
        container.run("rm", "-rf", f"/etc/systemd/system/{unit}.d", "/var/lib/torchd")
        container.run("systemctl", "daemon-reload")


def test_systemctl_reload_fails_on_a_file_torchd_rejects(
        container: Container, install: Callable[..., str]) -> None:
    unit = install("torchd.service", GOOD)
    assert container.run("systemctl", "start", unit).returncode == 0
    container.write("/etc/torchd/tasks.yaml", BAD)
    assert container.run("systemctl", "reload", unit).returncode != 0
    assert container.show(unit, "ActiveState") == "active"
    assert "REJECTED" in container.show(unit, "StatusText")
    journal = container.run("journalctl", "-u", unit, "--no-pager").stdout
    assert "2 problems found; the daemon keeps its previous config" in journal
    container.write("/etc/torchd/tasks.yaml", GOOD.replace("*/2", "*/3"))
    assert container.run("systemctl", "reload", unit).returncode == 0
    assert container.show(unit, "StatusText").startswith("config ")


def test_a_file_rejected_at_start_is_not_restarted(
        container: Container, install: Callable[..., str]) -> None:
    unit = install("torchd.service", BAD)
    assert container.run("systemctl", "start", unit).returncode != 0
    assert container.show(unit, "ExecMainStatus") == "2"
    deadline = time.monotonic() + 5.0  # RestartSec=2: two restarts' time
    while time.monotonic() < deadline:
        assert container.show(unit, "NRestarts") == "0"
        assert container.show(unit, "ActiveState") == "failed"
        time.sleep(0.2)


def test_the_watchdog_keeps_a_live_daemon_and_ends_a_stuck_one(
        container: Container, install: Callable[..., str]) -> None:
    unit = install("torchd.service", GOOD, "[Service]\nWatchdogSec=2\n")
    assert container.run("systemctl", "start", unit).returncode == 0
    pid = container.show(unit, "MainPID")
    deadline = time.monotonic() + 5.0  # two and a half intervals: the pings keep it
    while time.monotonic() < deadline:
        assert (container.show(unit, "NRestarts"), container.show(unit, "MainPID")) == \
            ("0", pid)
        time.sleep(0.2)
    assert container.run("kill", "-STOP", pid).returncode == 0
    wait_for(lambda: container.show(unit, "NRestarts") == "1"
             and container.show(unit, "ActiveState") == "active", timeout=20,
             message="the watchdog's restart")
    assert container.show(unit, "MainPID") != pid
    journal = container.run("journalctl", "-u", unit, "--no-pager").stdout
    assert "Watchdog timeout (limit 2s)!" in journal


def test_the_hardened_unit_runs_its_tasks_as_the_torchd_user(
        container: Container, install: Callable[..., str]) -> None:
    if container.run("id", "torchd").returncode != 0:
        assert container.run("useradd", "--system", "--home-dir", "/var/lib/torchd",
                             "--shell", "/usr/sbin/nologin", "torchd").returncode == 0
    unit = install("torchd-hardened.service", GOOD)
    started = container.run("systemctl", "start", unit)
    assert started.returncode == 0, container.run("journalctl", "-u", unit).stdout
    whoami = container.root / "var/lib/torchd/whoami"
    wait_for(lambda: whoami.exists() and whoami.read_text() == "torchd\n", timeout=10,
             message="a run's `id -un`")
    status = container.run("torchd", "status")  # root's CLI, the torchd user's daemon
    assert status.returncode == 0, status.stderr
    assert "whoami" in status.stdout
    container.write("/etc/torchd/tasks.yaml", BAD)
    assert container.run("systemctl", "reload", unit).returncode != 0
    assert container.show(unit, "ActiveState") == "active"
