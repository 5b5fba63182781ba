"""The runs going on: how a fire's run is built and started, watched, and ended. It keeps
every run by task until it exits, records what it tells (RunStarted, RunNotStarted,
RunEnded), and hands each exit back to the scheduler, which decides what follows (a
retry, a queued fire, a keep-alive restart)."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial
from pathlib import Path

from torchd.core.clock import Clock
from torchd.core.events import Event, RunEnded, RunNotStarted, RunStarted
from torchd.core.health import Health
from torchd.core.logfields import run_fields
from torchd.core.model import RunOutcome, RunState, TaskKind, fire_id
from torchd.core.runid import new_run_id
from torchd.core.schedule.zones import load_zone
from torchd.engine.participation import Participation
from torchd.engine.tasks import Fire, TaskState
from torchd.process.cgroups import RunCgroupParent
from torchd.process.httprun import HttpClient, HttpRunHandle, HttpStarted, prepare
from torchd.process.output import OutputEcho
from torchd.process.runas import wrap_command
from torchd.process.runner import (
    LaunchRequest,
    Run,
    RunControl,
    RunProcesses,
    Spawned,
    StartError,
    spawn,
    supervise,
    until_gone,
)
from torchd.store.statedir import FileModes
from torchd.store.tasklog import LogFiles, start_error_line
from torchd.system.accounts import account_env

log = logging.getLogger("torchd.scheduler")

DESCRIPTORS_CLEAR = 10.0  # seconds without running out before status stops saying so


class Runs:
    def __init__(self, *, clock: Clock, log_dir: Path, base_env: Mapping[str, str],
                 kill_grace: float, file_modes: FileModes | None, health: Health,
                 cgroups: RunCgroupParent | None, cluster: Participation,
                 on_event: Callable[[Event], None],
                 ended: Callable[[Run], None],
                 after_exit: Callable[[Run, bool], None],
                 start_failed: Callable[[TaskState, LaunchRequest], None],
                 echo: OutputEcho | None = None) -> None:
        self._clock = clock
        self._echo = echo  # copies output to the daemon's stdout (torchd run)
        self._base_env = dict(base_env)
        self._kill_grace = kill_grace
        self._health = health
        self._cgroups = cgroups
        self._cluster = cluster
        self._on_event = on_event
        self._ended = ended  # told of a run's end before its event
        self._after_exit = after_exit  # (the run, whether it was a cron-type run)
        self._start_failed = start_failed
        self._logs = LogFiles(log_dir, file_modes, health)
        self._no_descriptors_at = 0.0  # monotonic: the last fire that found none
        self._by_task: dict[str, dict[str, RunControl]] = {}  # task -> run id -> handle
        self._cron: set[str] = set()  # run ids of cron-type runs (the daemon-wide limit)
        # What is left of runs whose leader exited, their KILL still pending.
        self._lingering: set[RunProcesses] = set()
        self._http = HttpClient()  # HTTP tasks' session, made at their first run
        self.config_digest = ""

    def expect_http(self) -> None:
        """A config with HTTP tasks was applied: load the HTTP client before their fires."""
        self._http.warm()

    # ----- starting ----------------------------------------------------------------------
    def request(self, state: TaskState, fire: Fire, attempt: int = 1) -> LaunchRequest:
        """Everything one run of the fire needs to start, its ids and environment."""
        spec = state.spec
        run_id = fire.run_id or new_run_id()
        scheduled = fire.scheduled
        cause = fire.cause
        fid = fire_id(spec.name, scheduled) if cause is None else cause.fire_id
        if state.env is None:
            account = account_env(spec.user) if spec.user else {}
            state.env = {**self._base_env, **account, **dict(spec.env),
                         "TORCHD_TASK": spec.name}
            state.argv = () if spec.http is not None else wrap_command(
                spec.command, user=spec.user, group=spec.group, nice=spec.nice,
                limits=spec.limits)
        env = dict(state.env)
        env["TORCHD_RUN_ID"] = run_id
        env["TORCHD_FIRE_ID"] = fid
        env["TORCHD_SCHEDULED"] = datetime.fromtimestamp(
            scheduled, load_zone(spec.timezone)).isoformat()
        env["TORCHD_ATTEMPT"] = str(attempt)
        if cause is not None:
            env.update(cause.env())
        if spec.http is not None:
            return LaunchRequest(
                task=spec.name, run_id=run_id, fire_id=fid, scheduled=scheduled, command=(),
                env=env, cwd=None, config_digest=self.config_digest, trigger=fire.trigger,
                cause=cause, cascade=fire.cascade, attempt=attempt,
                timeout=spec.http.timeout, http=spec.http)
        guard = None
        if (leased := self._cluster.guard(spec)) is not None:
            guard, token = leased
            if token is not None:
                env["TORCHD_FENCING_TOKEN"] = str(token)
        return LaunchRequest(
            task=spec.name, run_id=run_id, fire_id=fid, scheduled=scheduled,
            command=state.argv, env=env, cwd=spec.cwd, umask=spec.umask,
            config_digest=self.config_digest, trigger=fire.trigger, cause=cause,
            cascade=fire.cascade, attempt=attempt, timeout=spec.timeout, kill_grace=spec.kill_grace,
            split_output=spec.log.split, output_cap=spec.log.run_cap(spec.kind),
            cgroups=self._cgroups, lease_guard=guard,
        )

    def spawn(self, state: TaskState, fire: Fire, attempt: int = 1, *,
              request: LaunchRequest | None = None) -> Spawned | HttpStarted:
        """Start the fire's process, or resolve an HTTP task's request (supervise() watches
        it, or begins it). A start that fails is logged and recorded, then raised."""
        if request is None:
            request = self.request(state, fire, attempt)
        started: Spawned | HttpStarted
        try:
            if request.http is not None:
                started = prepare(request, clock_time=self._clock.time,
                                  clock_mono=self._clock.monotonic)
            else:
                started = spawn(request, clock_time=self._clock.time,
                                clock_mono=self._clock.monotonic)
        except StartError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self._no_descriptors_at = self._clock.monotonic()
                self._health.report("descriptors", f"no file descriptors left ({exc}): "
                                    "fires fail to start; see README, Limits")
            self._not_started(state, request, str(exc))
            raise
        if self._no_descriptors_at and (self._clock.monotonic() - self._no_descriptors_at
                                        > DESCRIPTORS_CLEAR):
            self._no_descriptors_at = 0.0
            self._health.clear("descriptors")
        state.last_start_error = state.last_start_error_at = None
        return started

    def _not_started(self, state: TaskState, request: LaunchRequest, error: str) -> None:
        spec = state.spec
        log.error("task %s: fire %s could not start: %s", spec.name, request.fire_id, error,
                  extra=run_fields(spec.name, run_id=request.run_id, fire_id=request.fire_id,
                                   outcome=RunOutcome.START_ERROR))
        now = self._clock.time()
        state.last_start_error, state.last_start_error_at = error, now
        task_log = self._logs.acquire(spec.name, spec.log)
        task_log.write(start_error_line(now, request.run_id, request.fire_id, error))
        task_log.release()
        self._on_event(RunNotStarted(task=spec.name, run_id=request.run_id,
                                     scheduled=request.scheduled, fire_id=request.fire_id,
                                     attempt=request.attempt, trigger=request.trigger,
                                     error=error, time=now))
        self._start_failed(state, request)

    def supervise(self, state: TaskState, started: Spawned | HttpStarted) -> RunControl:
        """Watch a started process: its output into the task's log, its exit. An HTTP
        run begins a moment later (see process.httprun), and tells its start then."""
        spec = state.spec
        echo = None
        if self._echo is not None and spec.log.stdout is not False:
            echo = partial(self._echo.stream, spec.name, started.request.run_id,
                           spec.log.stdout_rate)
        handle: RunControl
        if isinstance(started, HttpStarted):
            run = Run(request=started.request, pid=None, started=started.started,
                      started_mono=started.started_mono, processes=None)
            handle = HttpRunHandle(run, started, client=self._http,
                                   open_log=partial(self._logs.acquire, spec.name, spec.log),
                                   clock_time=self._clock.time,
                                   clock_mono=self._clock.monotonic, on_begin=self._begun,
                                   on_exit=self._exited,
                                   echo=None if echo is None else echo(False),
                                   stamped=spec.log.timestamps)
        else:
            out_log = self._logs.acquire(spec.name, spec.log)
            err_log = (self._logs.acquire(spec.name, spec.log, err=True) if spec.log.split
                       else None)
            handle = supervise(started, out_log=out_log, err_log=err_log,
                               kill_grace=self._kill_grace, clock_time=self._clock.time,
                               clock_mono=self._clock.monotonic, on_exit=self._exited,
                               echo=echo, stamped=spec.log.timestamps)
        run = handle.run
        self._by_task.setdefault(run.task, {})[run.run_id] = handle
        if spec.kind is TaskKind.CRON:
            self._cron.add(run.run_id)
        if run.pid is not None:
            self._begun(run)
        return handle

    def _begun(self, run: Run) -> None:
        request = run.request
        attempt = request.attempt
        what = f"pid={run.pid}" if request.http is None else f"http {request.http.method}"
        log.info("task %s run %s started %s fire=%s%s", run.task, run.run_id, what,
                 request.fire_id, f" attempt={attempt}" if attempt > 1 else "",
                 extra=run_fields(run.task, run_id=run.run_id, fire_id=request.fire_id))
        self._on_event(RunStarted(task=run.task, run_id=run.run_id, pid=run.pid,
                                  started=run.started, scheduled=request.scheduled,
                                  fire_id=request.fire_id, attempt=attempt,
                                  trigger=request.trigger, log_file=run.log_file,
                                  log_start=run.log_start))

    def launch(self, state: TaskState, fire: Fire, attempt: int = 1) -> RunControl:
        return self.supervise(state, self.spawn(state, fire, attempt))

    def _exited(self, run: Run) -> None:
        runs = self._by_task.get(run.task, {})
        runs.pop(run.run_id, None)
        was_cron = run.run_id in self._cron
        self._cron.discard(run.run_id)
        if not runs:
            self._by_task.pop(run.task, None)
        if run.group_lingers and run.processes is not None:
            self._lingering.add(run.processes)
            asyncio.get_running_loop().call_later(self._kill_grace + 1.0,
                                                  self._lingering.discard, run.processes)
        level = logging.INFO if run.outcome is RunOutcome.OK else logging.WARNING
        request = run.request
        log.log(level, "task %s run %s ended %s duration=%.3fs outcome=%s", run.task,
                run.run_id, run.result_text(), run.duration or 0.0, run.outcome,
                extra=run_fields(run.task, run_id=run.run_id, fire_id=request.fire_id,
                                 outcome=run.outcome, duration=run.duration or 0.0))
        assert run.outcome is not None  # noqa: S101 - set when it exited
        self._ended(run)
        self._on_event(RunEnded(task=run.task, run_id=run.run_id, pid=run.pid,
                                outcome=run.outcome, exit_code=run.exit_code,
                                signal=run.signal, started=run.started,
                                ended=run.ended or run.started, duration=run.duration or 0.0,
                                scheduled=request.scheduled, fire_id=request.fire_id,
                                attempt=request.attempt, trigger=request.trigger,
                                log_file=run.log_file, log_end=run.log_end, err_start=run.err_start,
                                err_end=run.err_end, cpu_seconds=run.cpu_seconds,
                                memory_peak=run.memory_peak, reason=run.reason))
        self._after_exit(run, was_cron)

    # ----- what runs ---------------------------------------------------------------------
    def of(self, task: str) -> list[RunControl]:
        return list(self._by_task.get(task, {}).values())

    def counts(self) -> dict[str, int]:
        """Runs going on, by task (only tasks with one)."""
        return {task: len(runs) for task, runs in self._by_task.items()}

    def count(self, task: str) -> int:
        return len(self._by_task.get(task, ()))

    def still_running(self, task: str) -> int:
        """Handle exits the busy loop has not processed yet; return how many still run."""
        for handle in self.of(task):
            handle.reap_if_exited()
        return self.count(task)

    def cron_count(self, *, reap: bool = False) -> int:
        """Cron-type runs going on (what the daemon-wide limit counts); with `reap`,
        processes, not exits the loop has not seen yet."""
        if reap:
            for handle in [h for runs in self._by_task.values() for h in runs.values()
                           if h.run.run_id in self._cron]:
                handle.reap_if_exited()
        return len(self._cron)

    def running_now(self, task: str) -> list[RunControl]:
        """The task's runs not yet asked to stop."""
        return [h for h in self.of(task) if h.run.state is RunState.RUNNING]

    def every(self) -> list[RunControl]:
        return [handle for runs in self._by_task.values() for handle in runs.values()]

    def total(self) -> int:
        return sum(len(runs) for runs in self._by_task.values())

    def pids(self) -> set[int]:
        """The pids of every run going (the children torchd watches itself)."""
        return {handle.run.pid for handle in self.every() if handle.run.pid is not None}

    def is_running(self, run_id: str) -> bool:
        return any(run_id in runs for runs in self._by_task.values())

    # ----- ending --------------------------------------------------------------------------
    async def stop_all(self, grace: float) -> int:
        """TERM every run's processes (and what is left of ended ones), wait `grace`,
        KILL, reap. Returns how many runs there were."""
        handles = self.every()
        for handle in handles:
            handle.stop(grace)
        everything = [h.run.processes for h in handles if h.run.processes is not None]
        everything += self._lingering
        for processes in self._lingering:
            processes.signal(signal.SIGTERM)
        await until_gone(lambda: any(processes.alive() for processes in everything), grace,
                         monotonic=self._clock.monotonic)
        for processes in everything:
            processes.signal(signal.SIGKILL)  # "already gone" is the normal answer
        pending = [h.run.done for h in handles]
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        await self._http.close()
        self._logs.close_all()
        return len(handles)

    def kill_all_now(self) -> None:
        for handle in self.every():
            handle.kill_now()
        for processes in self._lingering:
            processes.signal(signal.SIGKILL)
