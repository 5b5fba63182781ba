"""The schedulers measured side by side: torchd and what a user would pick instead.

Every peer runs the same task program (stamp.c) and is installed by the harness itself,
into bench/.work (a venv per PyPI peer; busybox from Debian), never as a torchd dependency.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import psutil
import yaml

HERE = Path(__file__).resolve().parent
WORK = HERE / ".work"


@dataclass(frozen=True)
class Task:
    name: str
    schedule: str  # six fields, seconds first
    argv: tuple[str, ...]


def _wait(predicate: object, timeout: float, what: str, proc: subprocess.Popen[bytes],
          log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: the peer exited: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout}s: {log.read_text()[-2000:]}")
        time.sleep(0.01)


def _venv(name: str, requirement: str) -> Path:
    venv = WORK / f"venv-{name}"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", requirement], check=True)
    return python


@dataclass
class Peer:
    """One running scheduler; subclasses say how to configure, start and stop it."""

    name: ClassVar[str]
    seconds: ClassVar[bool]  # can it fire at second granularity?
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)
    started_at: float | None = None  # when its process was started (its files written)
    ready_at: float | None = None  # when it said it had loaded its tasks, if it says

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = self.workdir / f"{self.name}.log"

    def install(self) -> None:
        """Make sure the peer can run here."""

    def start(self, tasks: list[Task]) -> psutil.Process:
        raise NotImplementedError

    def _popen(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            self.started_at = time.time()
            self.proc = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                         start_new_session=True, **kwargs)  # type: ignore[call-overload]
        return self.proc

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class TorchdPeer(Peer):
    name = "torchd"
    seconds = True
    history = True  # daemon.history (the default); TorchdNoHistoryPeer turns it off
    cgroups = True  # daemon.cgroups (the default); TorchdNoCgroupsPeer turns it off
    cluster_url: str | None = None  # TorchdClusterPeer: every task run_on: one

    def _daemon_keys(self, watch: bool) -> str:
        keys = f"watch: {str(watch).lower()}, history: {str(self.history).lower()}"
        if not self.cgroups:
            keys += ", cgroups: false"
        if self.cluster_url:
            keys += f', cluster: {{redis: "{self.cluster_url}", name: bench}}'
        return keys

    @property
    def config(self) -> Path:
        return self.workdir / "tasks.yaml"

    @property
    def state(self) -> Path:
        return self.workdir / "state"

    def write(self, tasks: list[Task], *, watch: bool = False) -> float:
        """Replace the task file in one rename; returns the monotonic time of the rename,
        when the change happens for a watcher."""
        run_on = ", run_on: one" if self.cluster_url else ""
        lines = [f'  - {{name: {t.name}, schedule: "{t.schedule}"{run_on}, '
                 f'command: {json.dumps(list(t.argv))}}}' for t in tasks]
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(f"daemon: {{{self._daemon_keys(watch)}}}\ntasks:\n"
                       + "\n".join(lines) + "\n")
        renamed = time.monotonic()
        os.replace(tmp, self.config)
        return renamed

    def start(self, tasks: list[Task]) -> psutil.Process:
        self.write(tasks)
        proc = self._popen([sys.executable, "-m", "torchd", "run", "-c", str(self.config),
                            "--state-dir", str(self.state)], env=self._environment())
        socket = self.state / "torchd.sock"
        _wait(socket.exists, 300, "torchd", proc, self.log)  # bound once the table is built
        self.ready_at = time.time()
        return psutil.Process(proc.pid)


    def _environment(self) -> dict[str, str] | None:
        return None  # the harness's own: torchd as installed


class TorchdBasePeer(TorchdPeer):
    """torchd from another checkout (`TORCHD_BENCH_BASE=DIR`), beside `torchd`: a change
    against its base in the same rounds."""

    name = "torchd-base"

    def _environment(self) -> dict[str, str]:
        base = os.environ.get("TORCHD_BENCH_BASE")
        if not base or not (Path(base) / "torchd" / "__init__.py").exists():
            raise RuntimeError("torchd-base needs TORCHD_BENCH_BASE=DIR, a checkout of torchd")
        return {**os.environ, "PYTHONPATH": str(Path(base).resolve())}


class TorchdNoCgroupsPeer(TorchdPeer):
    """torchd with `daemon.cgroups: false`: the cost of a cgroup per run, side by side."""

    name = "torchd-nocgroups"
    cgroups = False


class TorchdNoHistoryPeer(TorchdPeer):
    """torchd with `daemon.history: false`: the cost of recording runs, side by side."""

    name = "torchd-nohistory"
    history = False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server on a free loopback port (Debian: apt install redis-server)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt install redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    deadline = time.monotonic() + 10
    while not answers():
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0"


class TorchdHttpPeer(TorchdPeer):
    """torchd with `daemon.http` on a free loopback port (`/metrics` open): beside
    `torchd`, what the listener costs a daemon nobody looks at."""

    name = "torchd-http"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.port = free_port()

    def _daemon_keys(self, watch: bool) -> str:
        return (super()._daemon_keys(watch) + f', http: {{listen: "127.0.0.1:{self.port}", '
                'metrics_auth: false}, log: {max_bytes: 1GB}')

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.state / "http.token").read_text().strip()

    def start(self, tasks: list[Task]) -> psutil.Process:
        proc = super().start(tasks)

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        assert self.proc is not None
        _wait(answers, 60, "torchd-http listener", self.proc, self.log)
        return proc


class TorchdClusterPeer(TorchdPeer):
    """torchd in cluster mode, one host, every task `run_on: one`: each fire is claimed in
    a private redis-server first (the claim's cost, side by side with `torchd`)."""

    name = "torchd-cluster"
    redis: subprocess.Popen[bytes] | None = None

    def start(self, tasks: list[Task]) -> psutil.Process:
        self.redis, self.cluster_url = start_redis(self.workdir)
        return super().start(tasks)

    def stop(self) -> None:
        super().stop()
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait()


APS_RUNNER = '''
import json, subprocess, sys
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.events import EVENT_SCHEDULER_STARTED

tasks = json.load(open(sys.argv[1]))
scheduler = BlockingScheduler(timezone="UTC")
for task in tasks:
    second, minute, hour, day, month, dow = task["schedule"].split()
    scheduler.add_job(subprocess.run, CronTrigger(second=second, minute=minute, hour=hour,
                      day=day, month=month, day_of_week=dow, timezone="UTC"),
                      args=[task["argv"]], id=task["name"])
scheduler.add_listener(lambda e: open(sys.argv[2], "w").close(), EVENT_SCHEDULER_STARTED)
scheduler.start()
'''


class APSchedulerPeer(Peer):
    """APScheduler 3.x as a Python user would write it: BlockingScheduler, CronTrigger with
    seconds, each job running the command with subprocess.run (default 10-thread pool)."""

    name = "apscheduler"
    seconds = True

    def install(self) -> None:
        self.python = _venv("apscheduler", "apscheduler>=3.10,<4")

    def start(self, tasks: list[Task]) -> psutil.Process:
        runner = self.workdir / "aps_runner.py"
        runner.write_text(APS_RUNNER)
        spec = self.workdir / "tasks.json"
        spec.write_text(json.dumps([{"name": t.name, "schedule": t.schedule,
                                     "argv": list(t.argv)} for t in tasks]))
        ready = self.workdir / "aps.ready"
        proc = self._popen([str(self.python), str(runner), str(spec), str(ready)])
        _wait(ready.exists, 600, "apscheduler", proc, self.log)
        self.ready_at = time.time()
        return psutil.Process(proc.pid)


def _five_fields(schedule: str) -> str:
    second, *rest = schedule.split()
    if second != "0":
        raise ValueError(f"minute-level peers fire at second 0 only, not {schedule!r}")
    return " ".join(rest)


FLOOR_RUNNER = '''
import asyncio, json, os, sys, time

history = None
if len(sys.argv) > 3:  # asyncio-floor-history: record every run with torchd's own writer
    from pathlib import Path
    from torchd.core.events import RunEnded, RunStarted
    from torchd.store.history import HistoryWriter
    from torchd.core.model import HistoryPolicy

def start(loop, argv):
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.posix_spawn(argv[0], argv, os.environ, setsid=True, file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, write_end, 1), (os.POSIX_SPAWN_DUP2, write_end, 2)])
    os.close(write_end)
    pidfd = os.pidfd_open(pid)
    started = time.time()
    run_id = f"{pid}-{started}"
    if history:
        history.run_started(RunStarted(
            task=argv[-1], run_id=run_id, pid=pid, started=started, scheduled=started,
            fire_id=run_id, attempt=1, trigger="schedule", log_file="", log_start=None))

    def exited():
        loop.remove_reader(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        os.read(read_end, 65536)
        os.close(read_end)
        if history:
            ended = time.time()
            history.run_ended(RunEnded(
                task=argv[-1], run_id=run_id, pid=pid, outcome="ok",
                exit_code=os.waitstatus_to_exitcode(status), signal=None, started=started,
                ended=ended, duration=ended - started, scheduled=started, fire_id=run_id,
                attempt=1, trigger="schedule", log_file="", log_end=None, err_start=None,
                err_end=None))
    loop.add_reader(pidfd, exited)

def every_second(loop, argvs):
    for argv in argvs:
        start(loop, argv)
    loop.call_later(int(time.time()) + 1 - time.time(), every_second, loop, argvs)

async def main():
    global history
    argvs = [t["argv"] for t in json.load(open(sys.argv[1])) if t["schedule"] == "* * * * * *"]
    loop = asyncio.get_running_loop()
    if len(sys.argv) > 3:  # as the daemon makes it: on the loop, holding starts
        history = HistoryWriter(Path(sys.argv[3]), HistoryPolicy(), host="bench",
                                call_later=loop.call_later)
        history.start(lambda pid, started: False)
    loop.call_later(int(time.time()) + 1 - time.time(), every_second, loop, argvs)
    open(sys.argv[2], "w").close()
    await asyncio.Event().wait()

asyncio.run(main())
'''


class AsyncioFloorPeer(Peer):
    """Not a scheduler: the least a Python asyncio daemon does per fire. It starts every
    task whose schedule is every second (the others are ignored) with posix_spawn, output
    to a pipe it drains, exit seen through a pidfd, and nothing else: no log, no history,
    no timetable. Beside torchd in `idle`, it shows what the fire itself costs."""

    name = "asyncio-floor"
    seconds = True

    def runner_args(self) -> list[str]:
        return []

    def start(self, tasks: list[Task]) -> psutil.Process:
        runner = self.workdir / "floor_runner.py"
        runner.write_text(FLOOR_RUNNER)
        spec = self.workdir / "tasks.json"
        spec.write_text(json.dumps([{"schedule": t.schedule, "argv": list(t.argv)}
                                    for t in tasks]))
        ready = self.workdir / "floor.ready"
        proc = self._popen([sys.executable, str(runner), str(spec), str(ready),
                            *self.runner_args()])
        _wait(ready.exists, 60, self.name, proc, self.log)
        self.ready_at = time.time()
        return psutil.Process(proc.pid)


class AsyncioFloorHistoryPeer(AsyncioFloorPeer):
    """asyncio-floor plus torchd's run history writer (the same thread, batching and SQLite
    rows): what recording each run adds to the least a Python asyncio daemon does."""

    name = "asyncio-floor-history"

    def runner_args(self) -> list[str]:
        return [str(self.workdir / "history.db")]


class YacronPeer(Peer):
    name = "yacron"
    seconds = False

    def install(self) -> None:
        python = _venv("yacron", "yacron")
        self.binary = python.with_name("yacron")

    def start(self, tasks: list[Task]) -> psutil.Process:
        config = self.workdir / "yacron.yaml"
        jobs = [{"name": t.name, "command": list(t.argv), "schedule": _five_fields(t.schedule),
                 "captureStdout": False, "captureStderr": False, "concurrencyPolicy": "Allow",
                 "utc": True} for t in tasks]
        # yacron reads strictyaml, which refuses flow style ({...}): write block style
        config.write_text(yaml.safe_dump({"jobs": jobs}, default_flow_style=False))
        proc = self._popen([str(self.binary), "-c", str(config)])
        time.sleep(2)  # yacron prints nothing on readiness; minute-level measures allow it
        if proc.poll() is not None:
            raise RuntimeError(f"yacron exited: {self.log.read_text()[-2000:]}")
        return psutil.Process(proc.pid)


class BusyboxCronPeer(Peer):
    """busybox crond in the foreground with its own crontab directory (Debian's cron would
    need the system's spool). Debian's busybox lacks the crond applet; busybox-static has
    it, so its package is unpacked into bench/.work (the system's busybox is untouched)."""

    name = "crond"
    seconds = False

    def install(self) -> None:
        root = WORK / "busybox-static"
        self.busybox = root / "bin" / "busybox"
        if self.busybox.exists():
            return
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "-q", "busybox-static"], cwd=root, check=True)
        package = next(root.glob("busybox-static_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(package), str(root)], check=True)

    def start(self, tasks: list[Task]) -> psutil.Process:
        spool = self.workdir / "crontabs"
        spool.mkdir(exist_ok=True)
        user = psutil.Process().username()
        lines = [f"{_five_fields(t.schedule)} {' '.join(t.argv)}" for t in tasks]
        (spool / user).write_text("\n".join(lines) + "\n")
        proc = self._popen([str(self.busybox), "crond", "-f", "-c", str(spool),
                            "-L", str(self.log)])
        time.sleep(2)
        if proc.poll() is not None:
            raise RuntimeError(f"crond exited: {self.log.read_text()[-2000:]}")
        return psutil.Process(proc.pid)


PEERS: dict[str, type[Peer]] = {p.name: p for p in (TorchdPeer, TorchdNoHistoryPeer,
                                                     TorchdBasePeer, TorchdNoCgroupsPeer,
                                                     TorchdClusterPeer, TorchdHttpPeer,
                                                     APSchedulerPeer, YacronPeer,
                                                     BusyboxCronPeer, AsyncioFloorPeer,
                                                     AsyncioFloorHistoryPeer)}
