"""One run: spawn a command in its own session, copy its output to the task log, reap it.

No thread per child: exit is watched through a pidfd registered with the event loop, and
output through the pipe's read end. When the command exits, whatever is left of its
process group (a grandchild still holding the pipe, say) is sent TERM and, after the grace
period, KILL; the run is over when its own process has exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torchd.clock import iso_utc
from torchd.model import RunOutcome, RunState

log = logging.getLogger("torchd.runner")
READ_CHUNK = 65536


class StartError(Exception):
    """The command could not be started (missing executable, bad cwd, ...)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchRequest:
    """Everything needed to start one run; built by the scheduler from a TaskSpec."""

    task: str
    run_id: str
    fire_id: str
    scheduled: float
    command: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str | None
    log_path: Path
    config_digest: str
    attempt: int = 1
    umask: int | None = None
    timeout: float | None = None  # stop the run (TERM, kill_grace, KILL) after this long
    kill_grace: float = 10.0


@dataclass(eq=False, slots=True, kw_only=True)
class Run:
    request: LaunchRequest
    pid: int
    started: float  # wall clock
    started_mono: float
    state: RunState = RunState.RUNNING
    outcome: RunOutcome | None = None
    exit_code: int | None = None
    signal: int | None = None
    ended: float | None = None
    duration: float | None = None
    stop_requested: bool = False
    timed_out: bool = False
    group_lingers: bool = False  # members of its group outlived it (TERM sent, KILL pending)
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop()
                                       .create_future())

    @property
    def run_id(self) -> str:
        return self.request.run_id

    @property
    def task(self) -> str:
        return self.request.task

    def result_text(self) -> str:
        if self.signal is not None:
            return f"signal={signal.Signals(self.signal).name}"
        return f"exit={self.exit_code}"


def signal_group(pgid: int, signum: int) -> bool:
    """Signal a process group; False if it is already gone (which is normal)."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("not permitted to signal process group %d", pgid)
        return False
    return True


def group_alive(pgid: int) -> bool:
    return signal_group(pgid, 0)


def seal_descriptors() -> int:
    """Mark every descriptor above stderr close-on-exec; return how many were not.

    posix_spawn closes nothing by itself, so a descriptor the daemon inherited from its
    parent, or one a library opened without O_CLOEXEC (watchdog's inotify handle), would
    otherwise leak into every run.
    """
    sealed = 0
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone already
            if os.get_inheritable(fd):
                os.set_inheritable(fd, False)
                sealed += 1
    return sealed


def _open_log(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)


def _write(fd: int, data: bytes, task: str) -> None:
    try:
        os.write(fd, data)
    except OSError as exc:
        log.error("task %s: cannot write its log: %s", task, exc)


class RunHandle:
    """Owns one running process and its descriptors until it has been reaped."""

    def __init__(self, run: Run, popen: subprocess.Popen[bytes] | None, *, out_fd: int,
                 log_fd: int,
                 kill_grace: float, clock_time: Callable[[], float],
                 clock_mono: Callable[[], float], on_exit: Callable[[Run], None]) -> None:
        self.run = run
        self._popen = popen
        self._out_fd = out_fd
        self._log_fd = log_fd
        self._kill_grace = kill_grace
        self._time = clock_time
        self._mono = clock_mono
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self._pidfd = os.pidfd_open(run.pid)
        self._loop.add_reader(self._pidfd, self._exited)
        self._loop.add_reader(self._out_fd, self._drain)
        self._out_open = True
        timeout = run.request.timeout
        self._deadline = (None if timeout is None
                          else self._loop.call_later(timeout, self._time_out))

    def _time_out(self) -> None:
        run = self.run
        if run.state is not RunState.RUNNING:
            return
        log.warning("task %s run %s timed out after %gs; stopping it (kill_grace %gs)",
                    run.task, run.run_id, run.request.timeout, run.request.kill_grace)
        run.timed_out = True
        self.stop(run.request.kill_grace)

    def _drain(self) -> None:
        while self._out_open:
            try:
                data = os.read(self._out_fd, READ_CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("task %s run %s: reading output failed: %s",
                            self.run.task, self.run.run_id, exc)
                data = b""
            if not data:
                self._close_output()
                return
            _write(self._log_fd, data, self.run.task)

    def _close_output(self) -> None:
        if self._out_open:
            self._out_open = False
            self._loop.remove_reader(self._out_fd)
            os.close(self._out_fd)

    def _exited(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        if self._popen is not None:
            returncode = self._popen.wait()  # Popen must reap its own child
        else:
            _, status = os.waitpid(self.run.pid, 0)
            returncode = os.waitstatus_to_exitcode(status)
        self._drain()
        self._close_output()
        run = self.run
        # The group is named after the leader's pid; anything left in it (a grandchild that
        # kept the pipe open, a stray background job) ends with the run.
        if signal_group(run.pid, signal.SIGTERM):
            run.group_lingers = True
            self._loop.call_later(self._kill_grace, signal_group, run.pid, signal.SIGKILL)
        run.ended = self._time()
        run.duration = self._mono() - run.started_mono
        if returncode < 0:
            run.signal = -returncode
        else:
            run.exit_code = returncode
        if run.timed_out:
            run.outcome = RunOutcome.TIMEOUT
        elif run.stop_requested:
            run.outcome = RunOutcome.KILLED
        elif returncode == 0:
            run.outcome = RunOutcome.OK
        else:
            run.outcome = RunOutcome.FAILED
        run.state = RunState.EXITED  # running|stopping -> exited
        footer = (f"--- torchd {iso_utc(run.ended)} end run={run.run_id} {run.result_text()} "
                  f"duration={run.duration:.3f}s outcome={run.outcome}\n")
        _write(self._log_fd, footer.encode(), run.task)
        os.close(self._log_fd)
        if not run.done.done():
            run.done.set_result(None)
        self._on_exit(run)

    def reap_if_exited(self) -> bool:
        """Handle the exit now if the process has exited but the loop has not seen it yet
        (it was busy): a limit must count processes, not unprocessed events."""
        if self.run.state is RunState.EXITED:
            return True
        try:
            exited = os.waitid(os.P_PID, self.run.pid,
                               os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            exited = False
        if exited:
            self._exited()  # removing its reader cancels the pending callback
        return exited

    def stop(self, grace: float) -> None:
        """TERM the run's group now, KILL it after `grace` seconds if it is still there."""
        run = self.run
        if run.state is not RunState.RUNNING:
            return
        run.stop_requested = True
        run.state = RunState.STOPPING  # running -> stopping
        signal_group(run.pid, signal.SIGTERM)
        self._loop.call_later(grace, self._kill_if_running)

    def kill_now(self) -> None:
        self.run.stop_requested = True
        signal_group(self.run.pid, signal.SIGKILL)

    def _kill_if_running(self) -> None:
        # The whole group, even if the leader has exited: a member that ignores TERM
        # must not outlive a stop.
        signal_group(self.run.pid, signal.SIGKILL)


def _spawn(request: LaunchRequest, out_fd: int) -> tuple[int, subprocess.Popen[bytes] | None]:
    """Start the command in a new session with stdin /dev/null and stdout+stderr on out_fd.

    posix_spawn (vfork+exec in glibc, environment converted in C) costs about half of
    Popen; Popen is kept for tasks with a `cwd` or `umask`, which posix_spawn cannot set.
    Every descriptor torchd holds is close-on-exec, so nothing else leaks into the child.
    """
    if request.cwd is None and request.umask is None:
        pid = os.posix_spawnp(
            request.command[0], request.command, request.env,
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                          (os.POSIX_SPAWN_DUP2, out_fd, 1),
                          (os.POSIX_SPAWN_DUP2, out_fd, 2)],
            setsid=True,
        )
        return pid, None
    popen = subprocess.Popen(
        request.command, stdin=subprocess.DEVNULL, stdout=out_fd, stderr=out_fd,
        cwd=request.cwd, env=request.env, start_new_session=True, close_fds=True,
        umask=-1 if request.umask is None else request.umask,
    )
    return popen.pid, popen


@dataclass(slots=True, kw_only=True)
class Spawned:
    """A started process whose supervision (log, exit watch) is not yet set up."""

    request: LaunchRequest
    pid: int
    popen: subprocess.Popen[bytes] | None
    out_fd: int
    started: float
    started_mono: float


def spawn(request: LaunchRequest, *, clock_time: Callable[[], float],
          clock_mono: Callable[[], float]) -> Spawned:
    """Start the command, doing as little else as possible: the scheduler spawns every
    due fire first and supervises them afterwards, so the last of a burst starts early.
    Raises StartError (after writing it to the task log) if the command cannot start."""
    try:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    except OSError as exc:
        raise StartError(f"cannot create output pipe: {exc.strerror}") from None
    try:
        pid, popen = _spawn(request, write_fd)
    except (OSError, ValueError) as exc:
        os.close(read_fd)
        reason = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) else str(exc)
        with contextlib.suppress(OSError):
            log_fd = _open_log(request.log_path)
            _write(log_fd, (f"--- torchd {iso_utc(clock_time())} start-error "
                            f"run={request.run_id} fire={request.fire_id} error={reason}\n"
                            ).encode(), request.task)
            os.close(log_fd)
        raise StartError(reason) from None
    finally:
        os.close(write_fd)
    return Spawned(request=request, pid=pid, popen=popen, out_fd=read_fd,
                   started=clock_time(), started_mono=clock_mono())


def supervise(spawned: Spawned, *, kill_grace: float, clock_time: Callable[[], float],
              clock_mono: Callable[[], float], on_exit: Callable[[Run], None]) -> RunHandle:
    """Write the log header and watch the process's output and exit."""
    request = spawned.request
    try:
        log_fd = _open_log(request.log_path)
    except OSError as exc:
        # The process runs already: keep supervising it, and say where its output went.
        log.error("task %s run %s: cannot open log %s (%s); its output is discarded",
                  request.task, request.run_id, request.log_path, exc.strerror)
        log_fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    os.set_blocking(spawned.out_fd, False)
    attempt = f" attempt={request.attempt}" if request.attempt > 1 else ""
    header = (f"--- torchd {iso_utc(spawned.started)} start run={request.run_id} "
              f"fire={request.fire_id}{attempt} pid={spawned.pid} "
              f"config={request.config_digest}\n")
    _write(log_fd, header.encode(), request.task)
    run = Run(request=request, pid=spawned.pid, started=spawned.started,
              started_mono=spawned.started_mono)
    return RunHandle(run, spawned.popen, out_fd=spawned.out_fd, log_fd=log_fd,
                     kill_grace=kill_grace, clock_time=clock_time, clock_mono=clock_mono,
                     on_exit=on_exit)
