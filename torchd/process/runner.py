"""One run: spawn a command in its own session, copy its output to the task log, reap it.

No thread per child: exit is watched through a pidfd registered with the event loop, and
output through the pipe's read end. When the command exits, whatever is left of its
process group (a grandchild still holding the pipe, say) is sent TERM and, after the grace
period, KILL; the run is over when its own process has exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from torchd.core.model import RUN_MOVES, HttpCall, RunOutcome, RunState, Trigger, check_move
from torchd.core.timefmt import iso_utc
from torchd.core.workflow import Cause
from torchd.process.cgroups import RunCgroup, RunCgroupParent
from torchd.process.output import EchoStream, stamp_lines
from torchd.store.tasklog import TaskLog

log = logging.getLogger("torchd.runner")
READ_CHUNK = 65536
RELEASE_TRIES, RELEASE_EVERY = 50, 0.1  # a run's cgroup is removed within 5 s of KILL
LEASE_GUARD = str(Path(__file__).with_name("leaseguard.py"))
# Python ignores these; Popen restores them in its children, and so must posix_spawn (a
# shell pipeline like `yes | head -1` ends by SIGPIPE, and fails loudly while it is ignored).
RESTORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


class StartError(Exception):
    """The command could not be started (missing executable, bad cwd, no descriptors
    left, ...); `errno` is the system's error number where there is one."""

    def __init__(self, reason: str, errno: int | None = None) -> None:
        super().__init__(reason)
        self.errno = errno


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
    config_digest: str
    trigger: Trigger = Trigger.SCHEDULE
    cause: Cause | None = None  # a downstream fire's upstream run (`after:`)
    cascade: bool = True  # its final outcome may fire its downstreams
    attempt: int = 1
    umask: int | None = None
    timeout: float | None = None  # stop the run (TERM, kill_grace, KILL) after this long
    kill_grace: float = 10.0
    split_output: bool = False  # stderr to its own pipe and log file
    output_cap: int | None = None  # bytes of output kept; the rest is discarded
    cgroups: RunCgroupParent | None = None  # where its cgroup is made (see cgroups.py)
    lease_guard: tuple[float, float] | None = None  # (grace, margin): see leaseguard.py
    http: HttpCall | None = None  # an HTTP task's request, made instead of a command


@dataclass(eq=False, slots=True, kw_only=True)
class Run:
    request: LaunchRequest
    pid: int | None  # None: an HTTP run, which has no process
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
    processes: RunProcesses | None  # None: an HTTP run
    http_status: int | None = None  # an HTTP run's response status, if one came
    reason: str | None = None  # why an HTTP run failed (history's reason)
    cpu_seconds: float | None = None  # see _exited
    memory_peak: int | None = None  # bytes: the largest resident size (see _exited)
    log_file: str = ""  # where its output went, from log_start to log_end (the file may
    log_start: int | None = None  # have been rotated since: see logview)
    log_end: int | None = None
    err_start: int | None = None
    err_end: int | None = None
    captured: int = 0  # bytes of output written to its log
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop()
                                       .create_future())

    @property
    def run_id(self) -> str:
        return self.request.run_id

    def change(self, to: RunState) -> None:
        """The one way a run's state changes, along RUN_MOVES."""
        check_move(RUN_MOVES, self.state, to, f"run {self.run_id}")
        self.state = to

    @property
    def task(self) -> str:
        return self.request.task

    def ask_to_stop(self) -> bool:
        """Mark it stopped by torchd (running -> stopping); False if it was not running."""
        if self.state is not RunState.RUNNING:
            return False
        self.stop_requested = True
        self.change(RunState.STOPPING)  # running -> stopping
        return True

    def result_text(self) -> str:
        if self.request.http is not None:
            return "no-response" if self.http_status is None else f"status={self.http_status}"
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


GONE_POLL = 0.05  # seconds between looks at processes that were sent SIGTERM


async def until_gone(alive: Callable[[], bool], grace: float, *,
                     monotonic: Callable[[], float] = time.monotonic) -> None:
    """Wait until `alive()` is false or `grace` seconds have passed: the wait between the
    SIGTERM and the SIGKILL. A process group has no exit event to wait on, so it is
    polled."""
    deadline = monotonic() + grace
    while alive() and monotonic() < deadline:  # noqa: ASYNC110 - no event to wait on
        await asyncio.sleep(GONE_POLL)


class RunProcesses:
    """Everything a run started: its process group (named after its first process), and
    its cgroup where it has one, which also holds what left the group. A group once found
    empty is never signalled again: its number may be another group's by then."""

    __slots__ = ("cgroup", "group_gone", "pgid")

    def __init__(self, pgid: int, cgroup: RunCgroup | None) -> None:
        self.pgid = pgid
        self.cgroup = cgroup
        self.group_gone = False

    def signal_group(self, signum: int) -> bool:
        """Signal the process group; False (and never again) once it is empty."""
        if self.group_gone:
            return False
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            self.group_gone = True
            return False
        except PermissionError:
            log.warning("not permitted to signal process group %d", self.pgid)
            return False
        return True

    def signal(self, signum: int) -> bool:
        """Signal them all; False if none was there."""
        sent = self.signal_group(signum)
        if self.cgroup is not None:
            sent = self.cgroup.signal(signum) or sent
        return sent

    def alive(self) -> bool:
        return self.signal_group(0) or (self.cgroup is not None and self.cgroup.populated())

    def release(self) -> bool:
        """Remove the cgroup once it is empty; True when nothing of the run is left in it."""
        if self.cgroup is None or self.cgroup.remove():
            self.cgroup = None
            return True
        return False


def pidfd_refused() -> str | None:
    """Why this system will not let torchd watch its children, or None if it will.

    Every run's exit is watched through a pidfd: Linux 5.3 or later, and a sandbox that
    allows pidfd_open (default container seccomp profiles older than late 2020 refuse it,
    Docker's before 20.10 among them)."""
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError as exc:
        return (f"cannot watch child processes: pidfd_open is refused here "
                f"({exc.strerror}); torchd needs Linux 5.3 or later, and a container "
                f"seccomp profile that allows pidfd_open")
    os.close(fd)
    return None


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


class _Stream:
    """One output pipe of a run, the log it is copied to, and where else its lines go."""

    __slots__ = ("echo", "fd", "line_start", "log", "open", "stamped")

    def __init__(self, fd: int, task_log: TaskLog, echo: EchoStream | None,
                 stamped: bool) -> None:
        self.fd = fd
        self.log = task_log
        self.open = True
        self.echo = echo
        self.stamped = stamped  # each line in the log starts with its arrival time
        self.line_start = True


class RunControl(Protocol):
    """What the engine does with a run going on, a process's (RunHandle) or an HTTP
    request's (process.httprun.HttpRunHandle)."""

    run: Run

    def stop(self, grace: float) -> None: ...

    def kill_now(self) -> None: ...

    def reap_if_exited(self) -> bool: ...

    def lease_renewed(self, expiry: float) -> None: ...


class RunHandle:
    """Owns one running process and its descriptors until it has been reaped."""

    def __init__(self, run: Run, popen: subprocess.Popen[bytes] | None, *, pidfd: int,
                 guard_fd: int | None, streams: list[_Stream],
                 kill_grace: float, clock_time: Callable[[], float],
                 clock_mono: Callable[[], float], on_exit: Callable[[Run], None]) -> None:
        self.run = run
        assert run.pid is not None  # noqa: S101 - a process's run
        assert run.processes is not None  # noqa: S101 - a process's run
        self._pid = run.pid
        self.processes = run.processes
        self._popen = popen
        self._streams = streams
        self._kill_grace = kill_grace
        self._time = clock_time
        self._mono = clock_mono
        self._on_exit = on_exit
        self._cap = run.request.output_cap
        self._loop = run.done.get_loop()  # get_running_loop() costs a getpid() call
        self._pidfd = pidfd
        self._guard_fd = guard_fd
        self._loop.add_reader(self._pidfd, self._exited)
        for stream in streams:
            self._loop.add_reader(stream.fd, self._drain, stream)
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

    def _drain(self, stream: _Stream) -> None:
        while stream.open:
            try:
                data = os.read(stream.fd, READ_CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("task %s run %s: reading output failed: %s",
                            self.run.task, self.run.run_id, exc)
                data = b""
            if not data:
                self._close_stream(stream)
                return
            self._keep(stream, data)

    def _keep(self, stream: _Stream, data: bytes) -> None:
        """Write output to the log, up to the run's cap; past it, drop it (marked once)."""
        if stream.echo is not None:
            stream.echo.feed(data)
        if stream.stamped:
            stamp = f"{iso_utc(self._time())} ".encode()
            data, stream.line_start = stamp_lines(data, stamp, stream.line_start)
        run, cap = self.run, self._cap
        if cap is not None and run.captured + len(data) > cap:
            room = cap - run.captured
            if room < 0:
                return  # past the cap already: read and discarded
            if room:
                stream.log.write(data[:room])
            stream.log.write(f"\n--- torchd {iso_utc(self._time())} run={run.run_id} output "
                             f"reached log.max_run_bytes={cap}; the rest is discarded\n"
                             .encode())
            run.captured = cap + 1
            return
        if stream.log.write(data) is not None:
            run.captured += len(data)

    def _close_stream(self, stream: _Stream) -> None:
        if stream.open:
            stream.open = False
            self._loop.remove_reader(stream.fd)
            os.close(stream.fd)
            if stream.echo is not None:
                stream.echo.close()

    def _exited(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        if self._guard_fd is not None:
            os.close(self._guard_fd)
            self._guard_fd = None
        if self.processes.cgroup is not None:
            self.processes.cgroup.close()  # no move once its pid may be reused
        # wait4, not waitpid: the run's CPU time and peak memory come with its status
        _, status, usage = os.wait4(self._pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
        if self._popen is not None:
            self._popen.returncode = returncode  # reaped here: Popen must not wait again
        for stream in self._streams:
            self._drain(stream)
            self._close_stream(stream)
        run = self.run
        processes = self.processes
        # CPU: of the process and the descendants it waited for, and with a cgroup, of all
        # it held; each may miss part of a run, so the larger. Memory: the largest
        # resident size among the process and the descendants it waited for.
        run.cpu_seconds = usage.ru_utime + usage.ru_stime
        run.memory_peak = usage.ru_maxrss * 1024
        if processes.cgroup is not None and processes.cgroup.moved:
            run.cpu_seconds = max(run.cpu_seconds, processes.cgroup.cpu_seconds() or 0.0)
        # Anything left of the run (a grandchild that kept the pipe open, a stray
        # background job) ends with it.
        lingers = processes.signal_group(signal.SIGTERM)
        if not processes.release():
            lingers = processes.signal(signal.SIGTERM) or lingers
        if lingers:
            run.group_lingers = True
            self._loop.call_later(self._kill_grace, self._end_what_is_left, RELEASE_TRIES)
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
        run.change(RunState.EXITED)  # running|stopping -> exited
        footer = (f"--- torchd {iso_utc(run.ended)} end run={run.run_id} {run.result_text()} "
                  f"duration={run.duration:.3f}s outcome={run.outcome}\n").encode()
        for index, stream in enumerate(self._streams):
            stream.log.write(footer)
            if index == 0:
                run.log_end = stream.log.size
            else:
                run.err_end = stream.log.size
            stream.log.release()
        if not run.done.done():
            run.done.set_result(None)
        self._on_exit(run)

    def lease_renewed(self, expiry: float) -> None:
        """Tell the run's lease guard the lease's new expiry (CLOCK_BOOTTIME seconds)."""
        if self._guard_fd is not None:
            with contextlib.suppress(OSError):  # a guard gone or busy: it acts on the last
                os.write(self._guard_fd, f"{expiry!r}\n".encode())

    def reap_if_exited(self) -> bool:
        """Handle the exit now if the process has exited but the loop has not seen it yet
        (it was busy): a limit must count processes, not unprocessed events."""
        if self.run.state is RunState.EXITED:
            return True
        try:
            exited = os.waitid(os.P_PID, self._pid,
                               os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            exited = False
        if exited:
            self._exited()  # removing its reader cancels the pending callback
        return exited

    def stop(self, grace: float) -> None:
        """TERM the run's group now, KILL it after `grace` seconds if it is still there."""
        if not self.run.ask_to_stop():
            return
        self.processes.signal(signal.SIGTERM)
        self._loop.call_later(grace, self._kill_if_running)

    def kill_now(self) -> None:
        self.run.stop_requested = True
        self.processes.signal(signal.SIGKILL)

    def _kill_if_running(self) -> None:
        # Everything, even if the leader has exited: a member that ignores TERM must not
        # outlive a stop.
        self.processes.signal(signal.SIGKILL)

    def _end_what_is_left(self, tries: int) -> None:
        """KILL what outlived the run's grace, then remove its cgroup once it is empty
        (a killed process takes a moment to go)."""
        processes = self.processes
        if tries == RELEASE_TRIES:
            processes.signal(signal.SIGKILL)
        if not processes.release() and tries > 1:
            self._loop.call_later(RELEASE_EVERY, self._end_what_is_left, tries - 1)


def _spawn(request: LaunchRequest, command: tuple[str, ...], out_fd: int, err_fd: int,
           in_fd: int | None) -> tuple[int, subprocess.Popen[bytes] | None]:
    """Start the command in a new session with stdin /dev/null (or in_fd), stdout on out_fd
    and stderr on err_fd.

    posix_spawn (vfork+exec in glibc, environment converted in C) costs about half of
    Popen; Popen is kept for tasks with a `cwd` or `umask`, which posix_spawn cannot set.
    Every descriptor torchd holds is close-on-exec, so nothing else leaks into the child.
    """
    if request.cwd is None and request.umask is None:
        stdin = ((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0) if in_fd is None
                 else (os.POSIX_SPAWN_DUP2, in_fd, 0))
        pid = os.posix_spawnp(
            command[0], command, request.env,
            file_actions=[stdin, (os.POSIX_SPAWN_DUP2, out_fd, 1),
                          (os.POSIX_SPAWN_DUP2, err_fd, 2)],
            setsid=True, setsigdef=RESTORED_SIGNALS,
        )
        return pid, None
    popen = subprocess.Popen(
        command, stdin=subprocess.DEVNULL if in_fd is None else in_fd, stdout=out_fd,
        stderr=err_fd,
        cwd=request.cwd, env=request.env, start_new_session=True, close_fds=True,
        umask=-1 if request.umask is None else request.umask,
    )
    return popen.pid, popen


def _start_problem(exc: OSError, request: LaunchRequest) -> str:
    """Why the command did not start, saying where it was looked for: a relative path
    is taken from the working directory, a bare name from PATH."""
    if request.cwd is not None and not os.path.isdir(request.cwd):
        return f"the working directory {request.cwd} does not exist or is not a directory"
    name = str(exc.filename or request.command[0])
    if exc.errno == errno.ENOENT and "/" not in name:
        return f"{name}: not found on PATH={request.env.get('PATH', os.defpath)}"
    if "/" in name and not os.path.isabs(name):
        where = request.cwd or _working_dir()
        return f"{exc.strerror}: {name} (looked in {where})"
    return f"{exc.strerror}: {name}"


def _working_dir() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "the daemon's working directory, which no longer exists"


@dataclass(slots=True, kw_only=True)
class Spawned:
    """A started process whose supervision (log, exit watch) is not yet set up."""

    request: LaunchRequest
    pid: int
    popen: subprocess.Popen[bytes] | None
    out_fd: int
    err_fd: int | None  # with split output
    pidfd: int  # its exit is watched through this
    cgroup: RunCgroup | None
    guard_fd: int | None  # where the lease's expiry is written to its guard
    started: float
    started_mono: float


def spawn(request: LaunchRequest, *, clock_time: Callable[[], float],
          clock_mono: Callable[[], float]) -> Spawned:
    """Start the command, doing as little else as possible: the scheduler spawns every
    due fire first and supervises them afterwards, so the last of a burst starts early.
    Raises StartError if the command cannot start."""
    pipes: list[int] = []
    guarded = request.lease_guard is not None
    try:
        for _ in range((2 if request.split_output else 1) + guarded):
            pipes.extend(os.pipe2(os.O_CLOEXEC))
    except OSError as exc:
        for fd in pipes:
            os.close(fd)
        raise StartError(f"cannot create a pipe: {exc.strerror}", exc.errno) from None
    out_read, out_write = pipes[0], pipes[1]
    err_read: int | None = pipes[2] if request.split_output else None
    err_write = pipes[3] if request.split_output else out_write
    guard_read, guard_write = (pipes[-2], pipes[-1]) if guarded else (None, None)
    cgroup = (None if request.cgroups is None
              else request.cgroups.make(f"run-{request.run_id}"))
    command = request.command
    if request.lease_guard is not None:
        grace, margin = request.lease_guard
        command = (sys.executable, "-I", "-S", LEASE_GUARD, f"{grace:g}", f"{margin:g}",
                   "--", *command)
    try:
        pid, popen = _spawn(request, command, out_write, err_write, guard_read)
    except (OSError, ValueError) as exc:
        _close(out_read, err_read, guard_write)
        if cgroup is not None:
            cgroup.remove()
        if isinstance(exc, OSError):
            raise StartError(_start_problem(exc, request), exc.errno) from None
        raise StartError(str(exc)) from None
    finally:
        os.close(out_write)
        if err_read is not None:
            os.close(err_write)
        _close(guard_read)
    if cgroup is not None:
        cgroup.home.move(cgroup, pid)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as exc:  # out of descriptors: a process nobody watches must not run
        _abandon(pid, popen, cgroup)
        _close(out_read, err_read, guard_write)
        raise StartError(f"cannot watch the started process: {exc.strerror}; it was "
                         "killed", exc.errno) from None
    return Spawned(request=request, pid=pid, popen=popen, out_fd=out_read, err_fd=err_read,
                   pidfd=pidfd, cgroup=cgroup, guard_fd=guard_write, started=clock_time(),
                   started_mono=clock_mono())


def _close(*fds: int | None) -> None:
    for fd in fds:
        if fd is not None:
            os.close(fd)


def _abandon(pid: int, popen: subprocess.Popen[bytes] | None,
             cgroup: RunCgroup | None) -> None:
    """Kill a process just started and reap it (it leads its own new group)."""
    RunProcesses(pid, cgroup).signal(signal.SIGKILL)
    if cgroup is not None:
        cgroup.close()
    if popen is not None:
        popen.wait()
    else:
        os.waitpid(pid, 0)
    if cgroup is not None:
        cgroup.remove()


def supervise(spawned: Spawned, *, out_log: TaskLog, err_log: TaskLog | None,
              kill_grace: float, clock_time: Callable[[], float],
              clock_mono: Callable[[], float], on_exit: Callable[[Run], None],
              echo: Callable[[bool], EchoStream] | None = None,
              stamped: bool = False) -> RunHandle:
    """Write the log header and watch the process's output and exit. The run releases the
    logs (acquired by the caller) when it has been reaped. `echo(err)` gives where a
    stream's lines are copied (see process.output); `stamped` starts each line in the log
    with its arrival time."""
    request = spawned.request
    attempt = f" attempt={request.attempt}" if request.attempt > 1 else ""
    header = (f"--- torchd {iso_utc(spawned.started)} start run={request.run_id} "
              f"fire={request.fire_id}{attempt} pid={spawned.pid} "
              f"config={request.config_digest}\n").encode()
    run = Run(request=request, pid=spawned.pid, started=spawned.started,
              started_mono=spawned.started_mono, log_file=out_log.name,
              processes=RunProcesses(spawned.pid, spawned.cgroup))
    os.set_blocking(spawned.out_fd, False)
    run.log_start = out_log.write(header)
    streams = [_Stream(spawned.out_fd, out_log, echo and echo(False), stamped)]
    if spawned.err_fd is not None and err_log is not None:
        os.set_blocking(spawned.err_fd, False)
        run.err_start = err_log.write(header)
        streams.append(_Stream(spawned.err_fd, err_log, echo and echo(True), stamped))
    if spawned.guard_fd is not None:
        os.set_blocking(spawned.guard_fd, False)
    return RunHandle(run, spawned.popen, pidfd=spawned.pidfd, guard_fd=spawned.guard_fd,
                     streams=streams, kill_grace=kill_grace,
                     clock_time=clock_time, clock_mono=clock_mono, on_exit=on_exit)
