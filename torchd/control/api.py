"""The control API: one handler per verb (the verbs and their requests: `verbs`), the same
for every transport. Handlers talk to the daemon and the engine through the two narrow
interfaces below, which return snapshots, and keep what must outlive a restart (paused
tasks, pending one-off tasks) in the state dir."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import statistics
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol, TypeVar, cast

from torchd.control import timeline
from torchd.control.listing import list_rows
from torchd.control.protocol import ErrorCode, ProtocolError
from torchd.control.readpool import in_read_pool
from torchd.control.verbs import (
    Audit,
    AuditReply,
    ClusterView,
    Fires,
    FiresReply,
    Glance,
    GlanceReply,
    History,
    HistoryReply,
    IndexReply,
    Kill,
    KilledRun,
    KillReply,
    LastReload,
    ListReply,
    ListTasks,
    Logs,
    LogsReply,
    Pause,
    PauseReply,
    Peer,
    Ping,
    PingReply,
    Plan,
    PlanReply,
    Recent,
    RecentReply,
    Reload,
    ReloadRecord,
    Request,
    Resume,
    ResumeReply,
    RunInfo,
    Status,
    StatusReply,
    Stop,
    StopReply,
    Submit,
    SubmitReply,
    TaskIndex,
    TaskInfo,
    TaskRecent,
    TaskReply,
    Timeline,
    TimelineReply,
    Trigger,
    TriggerReply,
    action_target,
    at_problem,
    is_action,
    run_row,
)
from torchd.core.clock import Clock
from torchd.core.durations import parse_duration
from torchd.core.errors import ConfigError, SchedulerError
from torchd.core.events import (
    Event,
    FireMissed,
    FireSettled,
    FireSkipped,
    RunEnded,
    RunNotStarted,
)
from torchd.core.hostmatch import check_pattern, hosts_match
from torchd.core.model import Catchup, Config, RunOutcome, TaskKind, TaskSpec, name_problem
from torchd.core.schedule.bounded import AtSchedule
from torchd.core.schedule.cronexpr import upcoming
from torchd.core.schedule.zones import parse_instant
from torchd.core.timefmt import iso_utc
from torchd.store.history import (
    HistoryWriter,
    outcome_counts,
    query_audit,
    query_runs,
    recent_runs,
    run_by_id,
    run_slots,
)
from torchd.store.logview import NoSuchRunError, follow_chunk, read_logs
from torchd.store.opstate import JsonFile
from torchd.store.statedir import FileModes, StatePaths
from torchd.store.tasklog import log_name
from torchd.system.hostinfo import local_identity

log = logging.getLogger("torchd.ops")
SUBMIT_PREFIX = "submit:"
_T = TypeVar("_T")
MAX_FIRES = 100_000  # fires one `fires` reply holds at most
MAX_FIRES_HOURS = 168.0
WAIT_KILLED = 5.0  # seconds past kill_grace that `kill` waits for its runs to end


class DaemonPort(Protocol):
    """What the daemon (the app) answers for: its own state, reloads, stopping."""

    def ping(self) -> PingReply: ...
    def status(self, names: Collection[str] | None = None) -> StatusReply: ...
    def index(self) -> list[dict[str, object]]: ...
    def glance(self, count: int) -> dict[str, object]: ...
    def last_reload(self) -> ReloadRecord | None: ...
    async def reload(self, source: str) -> ReloadRecord | None:
        """The reload's record; None if the daemon is stopping."""
    async def plan(self) -> PlanReply:
        """What a reload would change; raises ConfigError for a file with errors."""
    def stop(self, grace: float | None) -> bool:
        """Begin a stop; False if one had begun (then it changes nothing)."""
    async def cluster_view(self) -> dict[str, Any] | None:
        """The cluster's state; None when not in cluster mode."""
    def task_source(self, name: str) -> str | None:
        """The task's text as it stands in its file, if the daemon still has it."""


class EnginePort(Protocol):
    """What the scheduler does for operators; each raises SchedulerError to refuse."""

    def trigger(self, name: str, *, force: bool, cascade: bool) -> tuple[str, str]: ...
    async def kill_and_wait(self, name: str, run_id: str | None, *,
                            longer: float) -> list[dict[str, Any]]: ...
    def pause(self, name: str | None) -> list[str]: ...
    def resume(self, name: str | None) -> list[str]: ...
    def paused(self) -> tuple[bool, frozenset[str]]: ...
    def submit(self, spec: TaskSpec) -> None: ...


class ControlApi:
    def __init__(self, *, daemon: DaemonPort, engine: EnginePort, paths: StatePaths,
                 modes: FileModes, history: HistoryWriter | None,
                 config: Callable[[], Config], clock: Clock) -> None:
        self._daemon = daemon
        self._engine = engine
        self._paths = paths
        self._history = history
        self._config = config
        self._clock = clock
        self._paused_file = JsonFile(paths.paused, {"all": False, "tasks": []}, modes)
        self._submitted_file = JsonFile(paths.submitted, [], modes)
        self._submitted: dict[str, dict[str, Any]] = {}
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._notable = 0
        self._handlers: dict[type, Callable[[Any], Awaitable[Any]]] = {
            Ping: self.ping, LastReload: self.last_reload, Status: self.status,
            TaskIndex: self.index, Glance: self.glance,
            ListTasks: self.list_tasks, Plan: self.plan, Reload: self.reload, Stop: self.stop,
            Trigger: self.trigger, Kill: self.kill, Pause: self.pause, Resume: self.resume,
            Logs: self.logs, History: self.history, Recent: self.recent, Submit: self.submit,
            Audit: self.audit,
            RunInfo: self.run_info, TaskInfo: self.task_info, Fires: self.fires,
            ClusterView: self.cluster, Timeline: self.timeline,
        }

    async def handle(self, request: Request, peer: Peer) -> Any:
        """The reply to one request (ProtocolError for a refusal). An action is audited,
        whether it was done or refused."""
        if not is_action(request):
            return await self._handlers[type(request)](request)
        if _waits(request):  # known at once, whatever becomes of the wait
            self._audit(peer, request, "accepted")
        try:
            reply = await self._handlers[type(request)](request)
        except ProtocolError as exc:
            self._audit(peer, request, f"{exc.code}: {exc}")
            raise
        except BaseException as exc:
            self._audit(peer, request, f"interrupted: {type(exc).__name__}")
            raise
        self._audit(peer, request, _done(reply))
        self._notable += 1
        return reply

    def refuse(self, request: Request, peer: Peer, code: ErrorCode, message: str) -> None:
        """Refuse `request` before any handler sees it (a transport's own rule: a viewer,
        a read-only listener): audited like a refusal of the handler's."""
        if is_action(request):
            self._audit(peer, request, f"{code}: {message}")
        raise ProtocolError(code, message)

    def _audit(self, peer: Peer, request: Request, result: str) -> None:
        target = action_target(request)
        log.info("%s %s by %s via %s: %s", request.verb, target or "-", peer.who,
                 peer.transport, result)
        if self._history is not None:
            self._history.action(at=self._clock.time(), transport=peer.transport,
                                 peer=peer.who, action=request.verb, target=target,
                                 result=result)

    # ----- across restarts ---------------------------------------------------------------
    def restore(self) -> None:
        """Pauses and pending one-off tasks from before the restart (call before run())."""
        paused = self._paused_file.load()
        if isinstance(paused, dict):
            if paused.get("all"):
                self._engine.pause(None)
            for name in paused.get("tasks") or []:
                try:
                    self._engine.pause(str(name))
                except SchedulerError:
                    log.warning("task %s was paused but is no longer in the task file", name)
        entries = self._submitted_file.load()
        entries = entries if isinstance(entries, list) else []
        for entry in entries:
            try:
                self._admit_submitted(entry)
            except (KeyError, TypeError, ValueError, SchedulerError) as exc:
                log.error("a submitted task could not be restored (%s): %r", exc, entry)
        if len(self._submitted) != len(entries):
            self._save_submitted()  # without the ones that could not be restored

    def _save_paused(self) -> None:
        everything, names = self._engine.paused()
        self._paused_file.save({"all": everything, "tasks": sorted(names)})

    def _save_submitted(self) -> None:
        self._submitted_file.save(list(self._submitted.values()))

    @property
    def notable(self) -> int:
        """How many notable things happened: a run that did not succeed or did not start,
        a fire skipped or missed, an operator's action. A dashboard's view made at one
        count shows every failure while the count is the same (runs that succeed are
        routine: a view refreshes them on its own schedule)."""
        return self._notable

    def on_event(self, event: Event) -> None:
        if isinstance(event, RunNotStarted | FireSkipped | FireMissed) or (
                isinstance(event, RunEnded) and event.outcome != RunOutcome.OK):
            self._notable += 1
        if isinstance(event, FireSettled) and event.task in self._submitted:
            # At most once, like the ledger for `at:` tasks: settled means it will not be
            # started again, even if the daemon dies while it runs.
            del self._submitted[event.task]
            self._save_submitted()
        if self._waiters and isinstance(event, RunEnded | RunNotStarted | FireSkipped):
            waiter = self._waiters.pop(event.run_id or "", None)
            if waiter is not None and not waiter.done():
                waiter.set_result(_ending(event))

    # ----- the daemon --------------------------------------------------------------------
    async def ping(self, _request: Ping) -> PingReply:
        return self._daemon.ping()

    async def last_reload(self, _request: LastReload) -> ReloadRecord | dict[str, Any]:
        return self._daemon.last_reload() or {}

    async def status(self, request: Status) -> StatusReply:
        return self._daemon.status(request.tasks)

    async def glance(self, request: Glance) -> GlanceReply:
        return cast(GlanceReply, self._daemon.glance(request.count))

    async def index(self, _request: TaskIndex) -> IndexReply:
        return {"tasks": self._daemon.index()}

    async def list_tasks(self, _request: ListTasks) -> ListReply:
        return {"tasks": list_rows(self._daemon.status()["tasks"])}

    async def plan(self, _request: Plan) -> PlanReply:
        try:
            return await self._daemon.plan()
        except ConfigError as exc:
            raise ProtocolError(ErrorCode.CONFIG, str(exc)) from None

    async def reload(self, _request: Reload) -> ReloadRecord:
        record = await self._daemon.reload("request")
        if record is None:
            raise ProtocolError(ErrorCode.STOPPING, "the daemon is stopping; nothing reloaded")
        return record

    async def stop(self, request: Stop) -> StopReply:
        begun = self._daemon.stop(request.grace)
        return {"pid": self._daemon.ping()["pid"], "stopping": True, "already": not begun}

    async def cluster(self, _request: ClusterView) -> dict[str, Any]:
        view = await self._daemon.cluster_view()
        if view is None:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, "this daemon is not in cluster mode "
                                "(no daemon.cluster in its task file)")
        return view

    # ----- runs --------------------------------------------------------------------------
    async def trigger(self, request: Trigger) -> TriggerReply:
        try:
            run_id, status = self._engine.trigger(request.task, force=request.force,
                                                  cascade=request.cascade)
        except SchedulerError as exc:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, str(exc)) from None
        result: TriggerReply = {"task": request.task, "run_id": run_id, "status": status}
        if request.wait and status in ("started", "queued"):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[run_id] = waiter
            result.update(cast(TriggerReply, await waiter))
        return result

    async def kill(self, request: Kill) -> KillReply:
        try:
            runs = await self._engine.kill_and_wait(request.task, request.run,
                                                    longer=WAIT_KILLED)
        except SchedulerError as exc:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, str(exc)) from None
        return {"task": request.task, "runs": cast(list[KilledRun], runs)}

    async def pause(self, request: Pause) -> PauseReply:
        changed = self._pause_or_resume(request, self._engine.pause)
        paused_all, names = self._engine.paused()
        return {"changed": changed, "paused": sorted(names), "paused_all": paused_all}

    async def resume(self, request: Resume) -> ResumeReply:
        resumed = self._pause_or_resume(request, self._engine.resume)
        paused_all, names = self._engine.paused()
        return {"changed": resumed, "resumed": resumed, "paused_all": paused_all,
                "paused": sorted(names)}

    def _pause_or_resume(self, request: Pause | Resume,
                         action: Callable[[str | None], list[str]]) -> list[str]:
        """The names `action` changed; the pauses are saved for the next start."""
        if (request.task is None) == (not request.all):
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, "give a task name or all=true")
        try:
            changed = action(None if request.all else request.task)
        except SchedulerError as exc:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, str(exc)) from None
        self._save_paused()
        return changed

    # ----- records -----------------------------------------------------------------------
    async def history(self, request: History) -> HistoryReply:
        await self._flush()
        rows = await _reading_history(
            query_runs, self._paths.history, task=request.task, limit=request.limit or 20,
            failed=request.failed, since=request.since, until=request.until,
            outcome=request.outcome, trigger=request.trigger, host=request.host,
            offset=request.offset)
        config = self._config()
        zones = {task.name: task.timezone for task in config.tasks}
        runs = [run_row(row, zones.get(row["task"], config.daemon.timezone)) for row in rows]
        return {"enabled": self._history is not None, "runs": runs}

    async def recent(self, request: Recent) -> RecentReply:
        await self._flush()
        since = self._clock.time() - min(request.hours, MAX_FIRES_HOURS) * 3600
        counts = await _reading_history(outcome_counts, self._paths.history, since)
        found = await _reading_history(recent_runs, self._paths.history, request.tasks,
                                       request.count)
        tasks: dict[str, TaskRecent] = {}
        for name, runs in found.items():
            durations = sorted(run["duration"] for run in runs
                               if run["outcome"] == RunOutcome.OK and run["duration"] is not None)
            tasks[name] = {
                "runs": [{"run_id": run["run_id"], "outcome": run["outcome"],
                          "at": iso_utc(run["at"]), "duration": run["duration"]}
                         for run in runs],
                "typical_duration": statistics.median(durations) if durations else None}
        return {"since": iso_utc(since), "counts": counts, "tasks": tasks}

    async def logs(self, request: Logs) -> LogsReply:
        try:
            log_name(request.task)
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, str(exc)) from None
        if request.follow_offset is not None:
            data, next_offset = await in_read_pool(
                follow_chunk, self._paths.logs, request.task, request.follow_offset,
                err=request.stderr)
            return {"text": data.decode(errors="replace"), "offset": next_offset}
        await self._flush()
        try:
            return cast(LogsReply, await _reading_history(
                read_logs, self._paths, request.task, request.run, request.lines,
                request.stderr))
        except NoSuchRunError as exc:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, str(exc)) from None

    async def run_info(self, request: RunInfo) -> dict[str, Any]:
        await self._flush()
        row = await _reading_history(run_by_id, self._paths.history, request.run_id)
        if row is None:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT,
                                f"no run {request.run_id} in the history")
        config = self._config()
        zone = next((t.timezone for t in config.tasks if t.name == row["task"]),
                    config.daemon.timezone)
        return run_row(row, zone)

    async def task_info(self, request: TaskInfo) -> TaskReply:
        spec = self._config().by_name().get(request.task)
        entry = next(iter(self._daemon.status([request.task])["tasks"]), None)
        if spec is None or entry is None:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"no task '{request.task}'")
        after = self._clock.time()
        fires = [] if spec.schedule is None else upcoming(spec.schedule, after, request.count)
        return {"task": entry, "file": spec.file or self._config().path, "line": spec.line,
                "source": self._daemon.task_source(spec.name),
                "next_fires": [iso_utc(t) for t in fires], "timezone": spec.timezone}

    async def fires(self, request: Fires) -> FiresReply:
        config = self._config()
        hours = min(request.hours, MAX_FIRES_HOURS)
        start = self._clock.time()
        end = start + hours * 3600
        wanted = set(request.tasks)
        specs = [t for t in config.tasks if t.schedule is not None and t.active
                 and (not wanted or t.name in wanted)]
        unknown = wanted - {t.name for t in config.tasks}
        if unknown:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"no task {', '.join(sorted(unknown))}")
        fires, truncated = await in_read_pool(_fires_between, specs, start, end,
                                              request.limit)
        return {"start": iso_utc(start), "end": iso_utc(end), "fires": fires,
                "timezones": {t.name: t.timezone for t in specs}, "truncated": truncated}

    async def timeline(self, request: Timeline) -> TimelineReply:
        timeline.check(request)
        config = self._config()
        found = timeline.matching(config.tasks, request.match)
        page = found[request.offset:request.offset + request.count]
        now = self._clock.time()
        window = request.hours * 3600
        slots = timeline.slots_at(now, request.slot)
        first = slots.index(now - window)
        await self._flush()
        runs, longest = await _reading_history(run_slots, self._paths.history,
                                               [task.name for task in page],
                                               slots.start(first), now + 1, request.slot)
        rows = await in_read_pool(timeline.rows, page, slots, now=now, end=now + window,
                                  runs=runs, longest=longest, first=first)
        return {"now": iso_utc(now), "origin": iso_utc(slots.origin), "slot": request.slot,
                "hours": request.hours, "first": first, "last": slots.index(now + window),
                "timezone": config.daemon.timezone, "total": len(found),
                "offset": request.offset, "tasks": rows, "history": self._history is not None}

    async def audit(self, request: Audit) -> AuditReply:
        await self._flush()
        rows = await _reading_history(query_audit, self._paths.history, limit=request.limit)
        for row in rows:
            row["at"] = iso_utc(row["at"])
        return {"enabled": self._history is not None, "actions": cast(Any, rows)}

    async def _flush(self) -> None:
        if self._history is not None:
            self._history.release()
            await asyncio.to_thread(self._history.flush)  # the writer's, not a read

    # ----- one-off tasks -----------------------------------------------------------------
    async def submit(self, request: Submit) -> SubmitReply:
        command = request.command
        if not command or not all(command):
            raise ProtocolError(ErrorCode.BAD_ARGUMENT,
                                "'command' must be a non-empty list of non-empty strings")
        name = request.name or secrets.token_hex(4)
        if problem := name_problem(name):
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"name {problem}")
        hosts = request.hosts
        for pattern in hosts:
            if problem := check_pattern(pattern):
                raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"hosts: {problem}")
        if hosts and not hosts_match(tuple(hosts), local_identity()):
            raise ProtocolError(ErrorCode.BAD_ARGUMENT,
                                f"this host does not match hosts {hosts}; nothing submitted")
        now = self._clock.time()
        at = now if request.at is None else self._instant(request.at)
        if at < now - 1.0:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"at: {request.at} is in the past")
        task = SUBMIT_PREFIX + name
        entry: dict[str, Any] = {"name": task, "command": command, "at": at, "hosts": hosts,
                                 "submitted": iso_utc(now)}
        try:
            self._admit_submitted(entry)
        except SchedulerError as exc:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, str(exc)) from None
        self._save_submitted()
        log.info("task %s submitted: runs at %s: %s", task, iso_utc(at), " ".join(command))
        return {"task": task, "at": iso_utc(at), "timezone": self._config().daemon.timezone}

    def _admit_submitted(self, entry: dict[str, Any]) -> None:
        config = self._config()
        at = float(entry["at"])
        spec = TaskSpec(
            name=str(entry["name"]), kind=TaskKind.CRON,
            schedule=AtSchedule(text=f"at {iso_utc(at)}", instant=at),
            command=tuple(str(part) for part in entry["command"]),
            hosts=tuple(entry.get("hosts") or ()), timezone=config.daemon.timezone,
            catchup=Catchup.LAST,  # runs even if its time passed while the daemon was down
            log=config.daemon.log,
        )
        self._engine.submit(spec)
        self._submitted[spec.name] = entry

    def _instant(self, text: str) -> float:
        """An `at` value: an ISO 8601 time (in the daemon's zone if it names none), or a
        duration from now."""
        if problem := at_problem(text):
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, problem)
        try:
            return parse_instant(text, self._config().daemon.timezone)
        except ValueError:
            return self._clock.time() + parse_duration(text)


async def _reading_history(read: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """`read` (of the history database) in a thread; a failure to read it (no descriptors
    left, a disk error) is `unavailable` with the reason, not a bug."""
    try:
        return await in_read_pool(read, *args, **kwargs)
    except (sqlite3.Error, OSError) as exc:
        raise ProtocolError(ErrorCode.UNAVAILABLE,
                            f"the run history cannot be read now: {exc}") from None


def _fires_between(specs: list[TaskSpec], start: float, end: float,
                   limit: int) -> tuple[dict[str, list[str]], list[str]]:
    """Each task's fires in [start, end), at most `limit` each and MAX_FIRES in all."""
    fires: dict[str, list[str]] = {}
    truncated: list[str] = []
    left = MAX_FIRES
    for spec in specs:
        assert spec.schedule is not None  # noqa: S101 - only scheduled tasks are given
        times: list[str] = []
        cursor = start
        cap = min(limit, left)
        while (due := spec.schedule.next_after(cursor)) is not None and due < end:
            if len(times) >= cap:
                truncated.append(spec.name)
                break
            times.append(iso_utc(due))
            cursor = due
        left -= len(times)
        if times:
            fires[spec.name] = times
    return fires, truncated


def _waits(request: Request) -> bool:
    """An action that waits for runs to end (its result row may come much later)."""
    return isinstance(request, Kill) or (isinstance(request, Trigger) and request.wait)


def _done(reply: Any) -> str:
    """An action's result for the audit: ok, and what it did where the reply says."""
    if not isinstance(reply, dict):
        return "ok"
    if "run_id" in reply and "status" in reply:
        return f"ok: {reply['status']} (run {reply['run_id']})"
    if "changed" in reply:
        return f"ok: changed {', '.join(reply['changed']) or 'nothing'}"
    if "runs" in reply and isinstance(reply["runs"], list):
        return f"ok: {len(reply['runs'])} run(s) killed"
    if "ok" in reply and reply["ok"] is False:
        return f"rejected: {'; '.join(reply.get('errors') or [])[:300]}"
    return "ok"


def _ending(event: RunEnded | RunNotStarted | FireSkipped) -> dict[str, Any]:
    if isinstance(event, RunEnded):
        ending: dict[str, Any] = {"outcome": event.outcome, "exit_code": event.exit_code,
                                  "signal": event.signal,
                                  "duration": round(event.duration, 3)}
        if event.reason is not None:  # an HTTP run's failure
            ending["error"] = event.reason
        return ending
    if isinstance(event, RunNotStarted):
        return {"outcome": "start-error", "exit_code": None, "signal": None,
                "error": event.error}
    return {"outcome": "dropped" if event.dropped else "skipped", "exit_code": None,
            "signal": None, "error": event.reason}
