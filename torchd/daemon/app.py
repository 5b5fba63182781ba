"""The composition root: wires config, scheduler, control, watcher, pidfile; owns lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import grp
import logging
import os
import resource
import signal
import sqlite3
import time
from collections.abc import Callable, Collection, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from torchd import __version__
from torchd.config.loader import ParseCache
from torchd.config.relpaths import source_dir
from torchd.config.source import load_config, source_digest
from torchd.control.api import SUBMIT_PREFIX, ControlApi
from torchd.control.server import ControlServer
from torchd.control.verbs import PingReply, PlanReply, ReloadRecord, StatusReply
from torchd.core.catchup import ahead_of_the_clock
from torchd.core.clock import Clock, SystemClock
from torchd.core.errors import ConfigError, ConfigProblem, TorchdError
from torchd.core.events import (
    EventBus,
    FireClaimedElsewhere,
    FireMissed,
    FireSettled,
    FireSkipped,
    RunEnded,
    RunNotStarted,
    RunStarted,
)
from torchd.core.health import Health
from torchd.core.model import Config, HttpSettings, TaskKind
from torchd.core.reloadplan import ReloadPlan, apply_delay, describe, plan
from torchd.core.schedule.cronexpr import upcoming
from torchd.core.timefmt import iso_utc
from torchd.daemon.hooks import HookRunner
from torchd.daemon.sdnotify import Notifier
from torchd.daemon.watcher import FileWatcher
from torchd.engine.participation import claimed_fires
from torchd.engine.scheduler import Scheduler
from torchd.process.cgroups import (
    CgroupMode,
    RunCgroupParent,
    end_leftover_cgroups,
    set_up_run_cgroups,
)
from torchd.process.journal import ChildJournal, end_leftovers
from torchd.process.output import OutputEcho, stdout_writer
from torchd.process.reaper import Reaper
from torchd.process.runner import pidfd_refused, seal_descriptors
from torchd.store.edges import EdgeStore
from torchd.store.history import HistoryWriter, last_successes
from torchd.store.ledger import FireLedger
from torchd.store.pidfile import PidFile
from torchd.store.statedir import FileModes, StatePaths, prepare
from torchd.system.hostinfo import host_id, local_identity
from torchd.system.logformat import is_journal
from torchd.web.metrics import Metrics

if TYPE_CHECKING:
    from torchd.cluster.coordinator import Cluster
    from torchd.daemon.httplistener import HttpListener

log = logging.getLogger("torchd")
DEFAULT_STOP_GRACE = 10.0
HOOK_GRACE = 5.0  # seconds hooks under way get at shutdown
STRAYS_LAST_WAIT = 2.0  # seconds the stop waits for strays killed at its end to go
PREVIEW_FIRES = 3
APPLY_WAIT_LIMIT = 1.0  # seconds a reload waits for a gap between fires to apply in


def raise_fd_limit() -> None:
    """Each run holds a few descriptors; lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def file_modes(config: Config) -> FileModes:
    """The state dir's modes: private, or readable by daemon.socket_group."""
    group = config.daemon.socket_group
    return FileModes.for_group(None if group is None else grp.getgrnam(group).gr_gid)


def _counted(reload: ReloadRecord | None) -> dict[str, Any] | None:
    """A reload record with its lists of task names replaced by their lengths."""
    if reload is None:
        return None
    changes = reload["changes"]
    if not changes:
        return dict(reload)
    return {**reload, "changes": {key: value if isinstance(value, int) else len(value)
                                  for key, value in changes.items()}}


def _settle_heap() -> None:
    """Exempt the task table loaded at start from cycle collection, and turn the collector
    back on (App.run turns it off while starting). The table is long-lived and acyclic,
    and at 100,000 tasks one full collection over it takes about 2 s, which would stall
    the loop; collections while it was being built cost 0.7 s more. Done once, before any
    run exists: frozen objects are never collected, so freezing live runs (which form
    reference cycles) at each reload would leak them."""
    gc.freeze()
    gc.enable()


def process_alive(pid: int, started: float) -> bool:
    """True if `pid` runs and is the process that started at `started` (not a reused pid)."""
    try:
        proc = psutil.Process(pid)
        return (abs(proc.create_time() - started) < 2.0
                and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def preview_fires(config: Config, names: list[str], count: int,
                  after: float) -> dict[str, list[str]]:
    schedules = {task.name: task.schedule for task in config.tasks if task.schedule is not None}
    return {name: [iso_utc(t) for t in upcoming(schedules[name], after, count)]
            for name in names if name in schedules}


class App:
    def __init__(self, config_path: Path, paths: StatePaths, *, clock: Clock | None = None,
                 config: Config | None = None, parse_cache: ParseCache | None = None,
                 launched: float | None = None, echo_to_stdout: bool = False) -> None:
        """`config`, when given, is the file as the caller just validated it (not re-read),
        and `parse_cache` what that parse left for the next (see config.ParseCache).
        `launched`: when the daemon was launched (procstat.launch_instant); fires that fall
        due from then on, while the file loads, run once the daemon serves."""
        self._config_path = config_path
        self._paths = paths
        self._clock = clock or SystemClock()
        # Made once the file says the state dir's modes (daemon.socket_group): see _run.
        self._modes = FileModes()
        self._health = Health(self._clock.time)
        self._events = EventBus()
        self._pidfile: PidFile
        self._journal: ChildJournal
        self._ledger: FireLedger
        self._config: Config | None = config
        self._parse_cache = parse_cache or ParseCache()
        self._launched = launched
        # Task output copied to stdout: under `torchd run` (a detached daemon has none).
        self._echo = (OutputEcho(stdout_writer(), journal=is_journal(1),
                                 clock_time=self._clock.time, clock_mono=self._clock.monotonic)
                      if echo_to_stdout else None)
        self._scheduler: Scheduler | None = None
        self._history: HistoryWriter | None = None
        self._edges: EdgeStore | None = None
        self._hooks: HookRunner | None = None
        self._api: ControlApi | None = None
        self._cluster: Cluster | None = None
        self._watcher: FileWatcher | None = None
        self._reaper: Reaper | None = None
        self._cgroups = CgroupMode(None, "not set up yet")
        self._run_cgroups: RunCgroupParent | None = None
        self._control: ControlServer | None = None
        self._http: HttpListener | None = None  # made when daemon.http first asks for it
        self._metrics: Metrics | None = None  # counts from the start, scraped by the listener
        self._reload_lock: asyncio.Lock | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._stop_event: asyncio.Event | None = None
        self._stop_grace = DEFAULT_STOP_GRACE
        self._reload_seq = 0
        self._last_reload: ReloadRecord | None = None
        self._started_wall = 0.0
        self._started_mono = 0.0
        self._systemd = Notifier(None, None)  # read from the environment in _run

    # ----- lifecycle -------------------------------------------------------------------------
    async def run(self, ready: Callable[[str | None], None]) -> int:
        """Run until stopped. `ready(None)` once serving, or `ready(error)` if it cannot start.

        The cycle collector stays off until the task table is built and frozen (see
        _settle_heap); callers that load the file first may turn it off before that."""
        gc.disable()
        try:
            return await self._run(ready)
        finally:
            gc.enable()

    async def _run(self, ready: Callable[[str | None], None]) -> int:
        self._started_wall, self._started_mono = self._clock.time(), self._clock.monotonic()
        self._reload_lock = asyncio.Lock()
        self._stop_event = asyncio.Event()
        self._systemd = Notifier.from_environment(os.environ)
        # From the start: ending what a crashed daemon left may take a while.
        watchdog = asyncio.create_task(self._systemd.keep_watchdog(), name="watchdog")
        try:
            return await self._start_and_serve(ready)
        finally:
            watchdog.cancel()

    async def _start_and_serve(self, ready: Callable[[str | None], None]) -> int:
        try:
            config = self._config or self._first_load()
            self._work_in_file_dir()
        except ConfigError as exc:
            ready(str(exc))
            return 2
        if (refused := pidfd_refused()) is not None:  # else the first fire would end the loop
            ready(refused)
            return 1
        self._modes = file_modes(config)
        self._pidfile = PidFile(self._paths.pidfile, self._modes)
        self._journal = ChildJournal(self._paths.children, self._modes, self._health)
        self._ledger = FireLedger(self._paths.fires, modes=self._modes, health=self._health,
                                  defer=lambda compact:
                                  asyncio.get_running_loop().call_soon(compact))
        try:
            prepare(self._paths, self._modes)
            self._pidfile.acquire()
        except (TorchdError, OSError) as exc:  # reported to whoever started us
            ready(str(exc))
            return 1
        try:
            return await self._serve(config, ready)
        finally:
            self._pidfile.release()

    def _resume_after_clock_correction(self, config: Config,
                                       last_fires: dict[str, float]) -> dict[str, float]:
        """Forget recorded fires that lie ahead of the clock (see ahead_of_the_clock)."""
        now = self._clock.time()
        schedules = {t.name: t.schedule for t in config.tasks if t.schedule is not None}
        ahead = ahead_of_the_clock(last_fires, schedules, now)
        if not ahead:
            return last_fires
        latest = max(last_fires[name] for name in ahead)
        message = (f"the fire ledger held fires up to {iso_utc(latest)}, {latest - now:.0f}s "
                   f"ahead of the clock: the clock ran ahead and has been corrected since; "
                   f"{len(ahead)} task(s) fire from now on, one-time tasks that ran stay done")
        self._health.report("clock", message)
        self._ledger.forget(ahead)
        return {name: last for name, last in last_fires.items() if name not in ahead}

    def _first_load(self) -> Config:
        config = load_config(self._config_path, identity=local_identity(),
                             cache=self._parse_cache)
        self._config = config
        return config

    def _work_in_file_dir(self) -> None:
        """Tasks without a cwd run where the task file is, as its relative paths mean.
        Again at each reload: a directory swapped under the file's path (a deploy that
        switches a `current` symlink) is then the one used."""
        where = source_dir(self._config_path)
        try:
            os.chdir(where)
        except OSError as exc:
            log.warning("cannot work in the task file's directory %s (%s); tasks without a "
                        "cwd run where they ran before", where, exc.strerror)

    async def _serve(self, config: Config, ready: Callable[[str | None], None]) -> int:
        raise_fd_limit()
        seal_descriptors()
        await self._close_what_a_crash_left(config)
        last_fires = self._resume_after_clock_correction(config, self._ledger.open())
        self._ledger.forget_except({task.name for task in config.tasks})
        scheduler = self._build_engine(config)
        self._metrics = Metrics(scheduler.gauges, self._cluster)
        self._metrics.subscribe(self._events)
        if self._history is not None:
            self._in_background(self._seed_metrics(self._metrics))
        self._edges = EdgeStore(self._paths.workflow, self._modes, self._health)
        scheduler.restore_edges(self._edges, self._edges.open())
        everything = plan(None, config)
        scheduler.apply(config, everything, last_fires, launched=self._launched)
        api = ControlApi(daemon=self, engine=scheduler, paths=self._paths, modes=self._modes,
                         history=self._history, config=self._current_config, clock=self._clock)
        self._api = api
        self._events.subscribe_all(api.on_event)
        api.restore()
        _settle_heap()
        self._record_reload("start", config, everything, None)
        if not await self._open_to_requests(config, scheduler, ready):
            return 1
        await self._apply_http(config.daemon.http)
        log.info("torchd %s started pid=%d config=%s (%s) tasks=%d state_dir=%s", __version__,
                 os.getpid(), self._config_path, config.digest, len(config.tasks),
                 self._paths.root)
        ready(None)
        self._systemd.ready(self._status_line())
        engine = asyncio.create_task(scheduler.run(), name="scheduler")
        stop_event = self._stop_event
        assert stop_event is not None  # noqa: S101 - set in run()
        stop_waiter = asyncio.create_task(stop_event.wait(), name="stop-waiter")
        await asyncio.wait({engine, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
        self._systemd.stopping()
        crashed = engine.done() and not engine.cancelled() and engine.exception() is not None
        if crashed:
            log.critical("the scheduler stopped on an internal error; shutting down",
                         exc_info=engine.exception())
        await self._shutdown(engine, stop_waiter)
        return 1 if crashed else 0

    async def _seed_metrics(self, metrics: Metrics) -> None:
        """Each task's last success as the history has it, read off the loop."""
        try:
            metrics.seed_last_success(await asyncio.to_thread(last_successes,
                                                              self._paths.history))
        except (OSError, sqlite3.Error) as exc:
            log.warning("metrics: cannot read the last successful runs from the history "
                        "(%s); torchd_task_last_success_timestamp_seconds starts empty", exc)

    async def _close_what_a_crash_left(self, config: Config) -> None:
        """Runs a killed daemon left: recorded as lost in the history (before they are
        ended), their process groups and cgroups ended; then the child journal opens."""
        if config.daemon.history.enabled:
            self._history = HistoryWriter(self._paths.history, config.daemon.history,
                                          host=self._host_id(config),
                                          call_later=asyncio.get_running_loop().call_later,
                                          modes=self._modes, health=self._health)
            lost = self._history.start(process_alive)  # before leftovers are ended
            for run in lost:
                log.warning("task %s run %s was in flight when the daemon died; recorded as "
                            "lost (%s)", run["task"], run["run_id"],
                            "its process is ended with its group" if run["was_running"]
                            else "its process had ended")
        ended = await end_leftovers(self._paths.children, DEFAULT_STOP_GRACE, self._modes)
        if ended:
            log.warning("ended %d process group(s) left by a previous daemon: %s", len(ended),
                        ended)
        self._cgroups = set_up_run_cgroups(self._paths.root, enabled=config.daemon.cgroups)
        runs = None if self._cgroups.parent is None else RunCgroupParent(self._cgroups.parent)
        self._run_cgroups = runs
        if runs is not None:
            await asyncio.to_thread(end_leftover_cgroups, runs, DEFAULT_STOP_GRACE)
        self._journal.open()

    def _build_engine(self, config: Config) -> Scheduler:
        """The scheduler, the cluster, the hooks and the reaper, and who hears the events."""
        cluster = self._make_cluster(config)
        runs = self._run_cgroups
        scheduler = Scheduler(clock=self._clock, log_dir=self._paths.logs, file_modes=self._modes,
                              base_env=os.environ, kill_grace=DEFAULT_STOP_GRACE,
                              on_event=self._events.publish, claims=cluster,
                              health=self._health, cgroups=runs, echo=self._echo)
        self._scheduler = scheduler
        if cluster is not None:
            scheduler.on_lease_tasks = cluster.set_lease_tasks
        hooks = HookRunner(log_dir=self._paths.logs, file_modes=self._modes,
                           base_env=os.environ, cgroups=runs, clock=self._clock,
                           record=self._record_hook, host=self._host_id(config))
        self._hooks = hooks
        self._configure_hooks(config)
        self._reaper = Reaper(known=lambda: scheduler.run_pids() | hooks.pids(),
                              running=scheduler.is_running, grace=DEFAULT_STOP_GRACE)
        self._reaper.start()  # before the first run: its strays must come to us
        log.info("process containment: %s; child subreaper: %s", self._cgroups.description,
                 "yes" if self._reaper.subreaper else "no (refused)")
        self._subscribe(self._events, self._reaper, hooks)
        return scheduler

    async def _open_to_requests(self, config: Config, scheduler: Scheduler,
                                ready: Callable[[str | None], None]) -> bool:
        """The cluster, the signals, the watcher and the control socket. False (and
        everything opened closed, `ready` told why) if the socket cannot be opened."""
        assert self._api is not None  # noqa: S101 - made before
        self._control = ControlServer(self._paths.socket, self._api.handle,
                                      group=config.daemon.socket_group)
        if self._cluster is not None:
            await self._cluster.start(scheduler.lease_changed, scheduler.lease_renewed)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGUSR2, self._on_reload_signal)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        self._sync_watcher(config)  # before the socket: a client that sees it is watched
        try:
            await self._control.start()
        except OSError as exc:
            ready(f"cannot open control socket {self._paths.socket}: {exc}")
            if self._watcher is not None:
                self._watcher.stop()
            self._journal.close()
            self._ledger.close()
            if self._history is not None:
                self._history.stop()
            return False
        return True

    async def _shutdown(self, engine: asyncio.Task[None], stop_waiter: asyncio.Task[Any]) -> None:
        assert self._scheduler is not None  # noqa: S101 - set before serving
        log.info("stopping: ending %d run(s), grace %.1fs", self._scheduler.running_count(),
                 self._stop_grace)
        stop_waiter.cancel()
        if self._watcher is not None:
            self._watcher.stop()
        if self._reaper is not None:  # strays get the same grace as the runs, from now
            self._reaper.stopping(self._stop_grace)
            self._reaper.sweep(include_running=True)
        stopped = await self._scheduler.shutdown(self._stop_grace)
        await self._end_strays()
        if self._http is not None:
            await self._http.close()
        if self._run_cgroups is not None:
            self._run_cgroups.release()
        if self._cluster is not None:
            await self._cluster.close()  # leases go back once their instances are gone
        if self._hooks is not None:
            await self._hooks.close(min(self._stop_grace, HOOK_GRACE))
        if self._history is not None:
            self._history.release()
            self._history.load(at=self._clock.time(), kind="stop")  # for `torchd why`
            await asyncio.to_thread(self._history.stop)  # after the runs' ends are queued
        engine.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await engine  # a crash was already logged by _serve
        if self._control is not None:
            await self._control.close()
        self._journal.close()
        self._ledger.close()
        if self._edges is not None:
            self._edges.close()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        log.info("stopped (%d run(s) were ended)", stopped)

    async def _end_strays(self) -> None:
        """After the runs: end what they left outside their process groups (see
        reaper.py), and reap it. The strays found at the start of the stop get the runs'
        grace from then; those found since (left by a run killed just now) get none.
        Each is given up STRAYS_LAST_WAIT after its SIGKILL."""
        if self._reaper is None:
            return
        # Polled, as the scheduler polls process groups: a stray's exit has no event of
        # its own to wait on (SIGCHLD only says that some child changed).
        while (self._reaper.sweep(include_running=True, grace=0.0)  # noqa: ASYNC110
               and self._reaper.kill_due_in() > -STRAYS_LAST_WAIT):
            await asyncio.sleep(0.05)
        self._reaper.close()

    def _on_stop_signal(self) -> None:
        """SIGTERM or SIGINT: a stop; during a stop (however it began), every run killed
        at once."""
        assert self._stop_event is not None  # noqa: S101 - set in run()
        if not self._stop_event.is_set():
            log.info("stop requested")
            self._stop_event.set()
        elif self._scheduler is not None:
            log.warning("stop signal during the stop: killing every run now")
            self._scheduler.force_kill()
            if self._reaper is not None:
                self._reaper.stopping(0.0)

    def _on_reload_signal(self) -> None:
        self._in_background(self.reload("signal"))

    def _on_file_change(self) -> None:
        self._in_background(self.reload("file change"))

    def _in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` as a task of its own, kept until it ends (the loop keeps only a weak
        reference to a task)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _subscribe(self, events: EventBus, reaper: Reaper, hooks: HookRunner) -> None:
        """Who hears what the engine tells, in this order: the child journal, the reaper,
        the history, the fire ledger, the hooks (and the control API, once made)."""
        events.subscribe(RunStarted, lambda e: self._journal.started(e.pid))
        events.subscribe(RunEnded, lambda e: self._journal.ended(e.pid))
        events.subscribe(RunEnded, lambda e: reaper.run_ended(e.run_id))
        history = self._history
        if history is not None:
            events.subscribe(RunStarted, history.run_started)
            events.subscribe(RunEnded, history.run_ended)
            events.subscribe(RunNotStarted, history.not_started)
            events.subscribe(FireSkipped, lambda e: history.fire_skipped(e, self._clock.time()))
            events.subscribe(FireMissed, lambda e: history.fire_missed(e, self._clock.time()))
            events.subscribe(FireClaimedElsewhere,
                             lambda e: history.claimed_elsewhere(e, self._clock.time()))
        events.subscribe(FireSettled, self._settled)
        events.subscribe_all(hooks.on_event)

    def _settled(self, event: FireSettled) -> None:
        if not event.task.startswith(SUBMIT_PREFIX):  # a one-off task is not in the file
            self._ledger.record(event.task, event.scheduled)

    def _record_hook(self, **call: Any) -> None:
        if self._history is not None:
            self._history.hook_call(**call)

    def _current_config(self) -> Config:
        assert self._config is not None  # noqa: S101 - set before serving
        return self._config

    def _configure_hooks(self, config: Config) -> None:
        assert self._hooks is not None  # noqa: S101 - made before the first configure
        self._hooks.configure(config.daemon.hooks,
                              {task.name: task.hooks for task in config.tasks if task.hooks},
                              config.daemon.log)

    def _sync_watcher(self, config: Config) -> None:
        if not config.daemon.watch:
            if self._watcher is not None:
                self._watcher.stop()
                self._watcher = None
            return
        try:
            if self._watcher is not None:
                self._watcher.follow()  # a reload may have moved a symlink on the way
            else:
                self._watcher = FileWatcher(self._config_path, self._on_file_change)
                self._watcher.start()
                # A change between the last parse and the watcher's start would go unseen.
                if self._file_digest() != config.digest:
                    self._on_file_change()
            seal_descriptors()  # watchdog's inotify handles are inheritable
        except OSError as exc:
            self._health.report("watcher", f"the task file {self._config_path} is not watched "
                                f"({exc}); reload it with torchd reload")
            return
        self._health.clear("watcher")

    def _file_digest(self) -> str | None:
        try:
            return source_digest(self._config_path)
        except (OSError, TorchdError):
            return None

    # ----- reload ------------------------------------------------------------------------------
    async def _parse(self, *, for_apply: bool) -> tuple[Config, ReloadPlan]:
        """Parse and diff against the running config in a thread (both are pure; at 10,000
        changed tasks the diff alone would hold the loop for 0.1 s). Only a parse that will
        be applied updates the parse cache (a dry run must not evict what the running
        config uses). The diff is against the config running when the parse began; a
        reload holds the reload lock throughout, so that is the one it replaces."""
        cache = self._parse_cache if for_apply else self._parse_cache.copy()
        running = self._config

        def parse_and_plan() -> tuple[Config, ReloadPlan]:
            new = load_config(self._config_path, identity=local_identity(), cache=cache)
            return new, plan(running, new)

        return await asyncio.to_thread(parse_and_plan)

    async def reload(self, source: str) -> ReloadRecord | None:
        """The one reload path (request, signal, file change): parse all, keep the old
        config on any error, else apply. Its record; None if the daemon is stopping."""
        assert self._reload_lock is not None  # noqa: S101 - set in run()
        async with self._reload_lock:
            if self._stop_event is not None and self._stop_event.is_set():
                return None
            # systemd holds `systemctl reload` (Type=notify-reload) until READY=1, which
            # therefore follows a rejected reload too.
            self._systemd.reloading()
            try:
                return await self._reload_locked(source)
            finally:
                self._systemd.ready(self._status_line())

    async def _reload_locked(self, source: str) -> ReloadRecord:
        assert self._scheduler is not None  # noqa: S101 - set before any reload
        try:
            new, diff = await self._parse(for_apply=True)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload (%s) rejected, keeping the running config: %s", source,
                          problem)
            return self._record_reload(source, None, None, exc)
        except Exception as exc:  # a parser bug: a rejected reload, not a dead daemon
            log.exception("reload (%s) failed on an internal error, keeping the running "
                          "config", source)
            failure = ConfigError([ConfigProblem(str(self._config_path), None, None, None,
                                                 f"internal error: {exc!r}")])
            return self._record_reload(source, None, None, failure)
        assert self._config is not None  # noqa: S101
        for key in ("state_dir", "socket_group", "cluster", "cgroups", "log_format"):
            if getattr(new.daemon, key) != getattr(self._config.daemon, key):
                log.warning("daemon.%s changed in the file; it takes effect on restart", key)
        await self._wait_for_a_gap(diff)
        self._scheduler.apply(new, diff)
        self._config = new
        self._work_in_file_dir()
        self._configure_hooks(new)
        if self._history is not None:
            self._history.policy = new.daemon.history
        if new.daemon.history.enabled != (self._history is not None):
            log.warning("daemon.history changed between on and off; it takes effect on "
                        "restart")
        self._ledger.forget_except({task.name for task in new.tasks})
        self._sync_watcher(new)
        await self._apply_http(new.daemon.http)
        log.info("reload (%s) applied config %s: %s", source, new.digest, describe(diff))
        return self._record_reload(source, new, diff, None)

    async def _apply_http(self, settings: HttpSettings | None) -> None:
        if self._http is None:
            if settings is None:
                return  # aiohttp's server and Jinja2 are loaded only for a listener
            from torchd.daemon.httplistener import HttpListener  # noqa: PLC0415
            assert self._api is not None  # noqa: S101 - made before serving
            self._http = HttpListener(api=self._api, paths=self._paths, modes=self._modes,
                                      clock=self._clock, health=self._health,
                                      metrics=None if self._metrics is None
                                      else self._metrics.render)
        await self._http.apply(settings)

    def _status_line(self) -> str:
        """systemd's one-line status of the daemon (`systemctl status`): the running
        config, and whether the last reload was rejected."""
        config = self._current_config()
        running = f"config {config.digest}, {len(config.tasks)} task(s)"
        last = self._last_reload
        if last is None or last["ok"]:
            return running
        count = len(last["errors"])
        return (f"reload ({last['source']}) REJECTED at {last['time']}, {count} "
                f"problem{'s' if count != 1 else ''} (torchd status tells); running {running}")

    async def _wait_for_a_gap(self, diff: ReloadPlan) -> None:
        """Let a fire due within the time the apply takes start first: applying 10,000
        changed tasks holds the loop for tens of ms. Waits at most APPLY_WAIT_LIMIT: a
        timetable with no such gap gets the apply anyway."""
        assert self._scheduler is not None  # noqa: S101 - set before any reload
        give_up = time.monotonic() + APPLY_WAIT_LIMIT
        while (delay := apply_delay(diff, self._scheduler.next_due(), self._clock.time())) > 0:
            left = give_up - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(delay, left))

    def _record_reload(self, source: str, config: Config | None, diff: ReloadPlan | None,
                       failure: ConfigError | None) -> ReloadRecord:
        self._reload_seq += 1
        if self._metrics is not None and source != "start":
            self._metrics.reloaded(failure is None)
        self._last_reload = {
            "seq": self._reload_seq,
            "source": source,
            "time": iso_utc(self._clock.time()),
            "ok": failure is None,
            "config_hash": config.digest if config else None,
            "changes": diff.as_dict() if diff else None,
            "errors": [str(p) for p in failure.problems] if failure else [],
        }
        if self._history is not None and config is not None and diff is not None:
            self._history.load(
                at=self._clock.time(), kind="start" if source == "start" else "reload",
                generation=self._reload_seq, config_file=str(self._config_path),
                config_hash=config.digest, added=diff.added, changed=diff.changed,
                removed=diff.removed,
                inactive={t.name: "disabled" if not t.enabled else "not for this host"
                          for t in config.tasks if not t.active})
        return self._last_reload

    # ----- what the control API asks of the daemon (control.api.DaemonPort) -----------
    def ping(self) -> PingReply:
        """Small and cheap whatever the number of tasks. The last reload's changes come as
        counts (`last_reload` has the names)."""
        config = self._current_config()
        return {"pid": os.getpid(), "version": __version__, "config_file":
                str(self._config_path), "config_hash": config.digest,
                "generation": self._reload_seq,
                "last_reload": _counted(self._last_reload),
                "http": self._http.address if self._http is not None else None,
                "http_token_file": self._http.token_file if self._http is not None else None,
                "timezone": config.daemon.timezone}

    def last_reload(self) -> ReloadRecord | None:
        return self._last_reload

    def index(self) -> list[dict[str, object]]:
        assert self._scheduler is not None  # noqa: S101 - made before serving
        return self._scheduler.index()

    def glance(self, count: int) -> dict[str, object]:
        assert self._scheduler is not None  # noqa: S101 - made before serving
        return self._scheduler.glance(count)

    def status(self, names: Collection[str] | None = None) -> StatusReply:
        config = self._current_config()
        assert self._scheduler is not None  # noqa: S101 - made before serving
        return {
            "pid": os.getpid(),
            "version": __version__,
            "started": iso_utc(self._started_wall),
            "uptime": round(self._clock.monotonic() - self._started_mono, 3),
            "state_dir": str(self._paths.root),
            "config_file": str(self._config_path),
            "config_hash": config.digest,
            "timezone": config.daemon.timezone,
            "generation": self._reload_seq,
            "last_reload": self._last_reload,
            "runs_running": self._scheduler.running_count(),
            "problems": self._health.view(),
            "containment": {"cgroups": self._cgroups.description,
                            "subreaper": self._reaper is not None and self._reaper.subreaper},
            "tasks": self._scheduler.snapshot(names),
        }

    async def plan(self) -> PlanReply:
        new, diff = await self._parse(for_apply=False)
        tasks = new.by_name()
        cron_names = [n for n in (*diff.added, *diff.changed) if tasks[n].kind is TaskKind.CRON]
        return {
            "config_file": str(self._config_path),
            "config_hash": new.digest,
            "changes": diff.as_dict(),
            "next_fires": preview_fires(new, cron_names, PREVIEW_FIRES, time.time()),
            "timezones": {name: tasks[name].timezone for name in cron_names},
            "timezone": self._current_config().daemon.timezone,
            "running_hash": self._current_config().digest,
            "generation": self._reload_seq,
            "watching": self._watcher is not None,
            "last_reload": self._last_reload,
        }

    def task_source(self, name: str) -> str | None:
        spec = self._current_config().by_name().get(name)
        if spec is None:
            return None
        caches = [self._parse_cache, *self._parse_cache.files.values()]
        return next((text for cache in caches for text, cached in cache.tasks.items()
                     if cached is spec or (cached.name == name and cached == spec)), None)

    async def cluster_view(self) -> dict[str, Any] | None:
        return None if self._cluster is None else await self._cluster.view()

    def stop(self, grace: float | None) -> bool:
        """A stop asked for by a request. A second one changes nothing: only a stop signal
        during a stop kills the runs at once."""
        assert self._stop_event is not None  # noqa: S101 - set in run()
        if self._stop_event.is_set():
            log.info("stop requested again (control request): the stop goes on; a stop "
                     "signal would kill every run at once")
            return False
        if grace is not None:
            self._stop_grace = grace
        log.info("stop requested (control request, grace %gs)", self._stop_grace)
        self._stop_event.set()
        return True

    @staticmethod
    def _host_id(config: Config) -> str:
        cluster = config.daemon.cluster
        return host_id(cluster.host_id if cluster else None)

    def _make_cluster(self, config: Config) -> Cluster | None:
        settings = config.daemon.cluster
        if settings is None:
            return None
        from torchd.cluster.coordinator import Cluster, redact  # noqa: PLC0415 - redis loads only in cluster mode

        host_id = self._host_id(config)
        addresses = sorted(str(a) for a in local_identity().addresses)

        def describe() -> dict[str, Any]:
            return {"version": __version__, "pid": os.getpid(), "addresses": addresses,
                    "config_hash": self._config.digest if self._config else None,
                    "running": self._scheduler.running_count() if self._scheduler else 0,
                    "http": self._http.advertised if self._http is not None else None,
                    "http_signature": self._http.signature(host_id)
                    if self._http is not None else None}

        def settled() -> dict[str, float]:  # see Cluster: written back into an empty Redis
            one = {t.name for t in self._current_config().tasks if claimed_fires(t)}
            return {name: at for name, at in self._ledger.last().items() if name in one}

        self._cluster = Cluster(settings, host_id=host_id, describe=describe, settled=settled,
                                health=self._health)
        log.info("cluster %s on %s as host %s (max_load %.2f)", settings.name,
                 redact(settings.redis), host_id, settings.max_load)
        return self._cluster
