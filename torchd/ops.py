"""Operator requests over the control socket: trigger, kill, pause/resume, logs, history,
submit. Each validates its arguments, asks the scheduler through its public methods, and
keeps what must outlive a restart (paused tasks, pending one-off tasks) in the state dir."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

from torchd.bounded import AtSchedule
from torchd.clock import Clock, iso_utc
from torchd.control.protocol import ErrorCode, ProtocolError
from torchd.control.server import Handler
from torchd.durations import parse_duration
from torchd.errors import DurationError
from torchd.events import Event, FireSettled, FireSkipped, RunEnded, RunNotStarted
from torchd.history import HistoryWriter, find_run, query_runs
from torchd.hostinfo import local_identity
from torchd.hostmatch import check_pattern, hosts_match
from torchd.logview import clip, follow_chunk, last_lines, run_output
from torchd.model import Catchup, Config, TaskKind, TaskSpec
from torchd.opstate import JsonFile
from torchd.scheduler import Scheduler, SchedulerError
from torchd.statedir import FileModes, StatePaths
from torchd.zones import load_zone

log = logging.getLogger("torchd.ops")
SUBMIT_PREFIX = "submit:"
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
WAIT_KILLED = 5.0  # seconds past kill_grace that `kill` waits for its runs to end


def _arg(request: dict[str, Any], key: str, kind: type | tuple[type, ...], *,
         required: bool = False, default: Any = None) -> Any:
    value = request.get(key, default)
    if value is None:
        if required:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"'{key}' is required")
        return default
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"'{key}' has the wrong type")
    if not isinstance(value, kind):
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"'{key}' has the wrong type")
    return value


def _count(request: dict[str, Any], key: str, default: int | None) -> int | None:
    value: int | None = _arg(request, key, int, default=default)
    if value is not None and value < 0:
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"'{key}' must be 0 or more")
    return value


class Operations:
    def __init__(self, *, scheduler: Scheduler, paths: StatePaths, modes: FileModes,
                 history: HistoryWriter | None, config: Callable[[], Config],
                 clock: Clock) -> None:
        self._scheduler = scheduler
        self._paths = paths
        self._history = history
        self._config = config
        self._clock = clock
        self._paused_file = JsonFile(paths.paused, {"all": False, "tasks": []}, modes)
        self._submitted_file = JsonFile(paths.submitted, [], modes)
        self._submitted: dict[str, dict[str, Any]] = {}
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def handlers(self) -> dict[str, Handler]:
        return {"trigger": self.trigger, "kill": self.kill, "pause": self.pause,
                "resume": self.resume, "logs": self.logs, "history": self.history,
                "submit": self.submit}

    # ----- across restarts ---------------------------------------------------------------
    def restore(self) -> None:
        """Pauses and pending one-off tasks from before the restart (call before run())."""
        paused = self._paused_file.load()
        if isinstance(paused, dict):
            if paused.get("all"):
                self._scheduler.pause(None)
            for name in paused.get("tasks") or []:
                try:
                    self._scheduler.pause(str(name))
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
        everything, names = self._scheduler.paused()
        self._paused_file.save({"all": everything, "tasks": sorted(names)})

    def _save_submitted(self) -> None:
        self._submitted_file.save(list(self._submitted.values()))

    def on_event(self, event: Event) -> None:
        if isinstance(event, FireSettled) and event.task in self._submitted:
            # At most once, like the ledger for `at:` tasks: settled means it will not be
            # started again, even if the daemon dies while it runs.
            del self._submitted[event.task]
            self._save_submitted()
        if self._waiters and isinstance(event, RunEnded | RunNotStarted | FireSkipped):
            waiter = self._waiters.pop(event.run_id or "", None)
            if waiter is not None and not waiter.done():
                waiter.set_result(_ending(event))

    # ----- handlers ----------------------------------------------------------------------
    async def trigger(self, request: dict[str, Any]) -> dict[str, Any]:
        name = _arg(request, "task", str, required=True)
        force = _arg(request, "force", bool, default=False)
        wait = _arg(request, "wait", bool, default=False)
        try:
            run_id, status = self._scheduler.trigger(name, force=force)
        except SchedulerError as exc:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, str(exc)) from None
        result: dict[str, Any] = {"task": name, "run_id": run_id, "status": status}
        if wait and status in ("started", "queued"):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[run_id] = waiter
            result.update(await waiter)
        return result

    async def kill(self, request: dict[str, Any]) -> dict[str, Any]:
        name = _arg(request, "task", str, required=True)
        run_id = _arg(request, "run", str)
        try:
            handles = self._scheduler.kill(name, run_id)
        except SchedulerError as exc:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, str(exc)) from None
        grace = max(h.run.request.kill_grace for h in handles)
        await asyncio.wait([h.run.done for h in handles], timeout=grace + WAIT_KILLED)
        return {"task": name, "runs": [{
            "run_id": h.run.run_id, "pid": h.run.pid, "ended": h.run.ended is not None,
            "outcome": None if h.run.outcome is None else str(h.run.outcome),
            "result": h.run.result_text() if h.run.ended is not None else None,
        } for h in handles]}

    async def pause(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._pause_or_resume(request, self._scheduler.pause, "paused")

    async def resume(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._pause_or_resume(request, self._scheduler.resume, "resumed")

    def _pause_or_resume(self, request: dict[str, Any],
                         action: Callable[[str | None], list[str]], verb: str) -> dict[str, Any]:
        name = _arg(request, "task", str)
        everything = _arg(request, "all", bool, default=False)
        if (name is None) == (not everything):
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, "give a task name or all=true")
        try:
            changed = action(None if everything else name)
        except SchedulerError as exc:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, str(exc)) from None
        self._save_paused()
        paused_all, names = self._scheduler.paused()
        return {verb: changed, "paused_all": paused_all, "paused": sorted(names)}

    async def history(self, request: dict[str, Any]) -> dict[str, Any]:
        task = _arg(request, "task", str)
        limit = _count(request, "limit", 20)
        failed = _arg(request, "failed", bool, default=False)
        since = _arg(request, "since", (int, float))
        await self._flush()
        runs = await asyncio.to_thread(query_runs, self._paths.history, task=task,
                                       limit=limit or 20, failed=failed, since=since)
        return {"enabled": self._history is not None, "runs": runs}

    async def logs(self, request: dict[str, Any]) -> dict[str, Any]:
        task = _arg(request, "task", str, required=True)
        err = _arg(request, "stderr", bool, default=False)
        if "follow_offset" in request:
            offset = _count(request, "follow_offset", None)
            data, next_offset = await asyncio.to_thread(follow_chunk, self._paths.logs, task,
                                                        offset, err=err)
            return {"text": data.decode(errors="replace"), "offset": next_offset}
        run_id = _arg(request, "run", str)
        lines = _count(request, "lines", None)
        await self._flush()
        return await asyncio.to_thread(read_logs, self._paths, task, run_id, lines, err)

    async def _flush(self) -> None:
        if self._history is not None:
            self._history.release()
            await asyncio.to_thread(self._history.flush)

    async def submit(self, request: dict[str, Any]) -> dict[str, Any]:
        command = _arg(request, "command", list, required=True)
        if not command or not all(isinstance(part, str) and part for part in command):
            raise ProtocolError(ErrorCode.BAD_ARGUMENT,
                                "'command' must be a non-empty list of non-empty strings")
        name = _arg(request, "name", str) or secrets.token_hex(4)
        if not NAME.match(name):
            raise ProtocolError(ErrorCode.BAD_ARGUMENT,
                                f"name '{name}' may only use letters, digits, '_', '.' and '-'")
        hosts = _arg(request, "hosts", list, default=[])
        for pattern in hosts:
            problem = check_pattern(pattern) if isinstance(pattern, str) else "not text"
            if problem:
                raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"hosts: {problem}")
        if hosts and not hosts_match(tuple(hosts), local_identity()):
            raise ProtocolError(ErrorCode.BAD_ARGUMENT,
                                f"this host does not match hosts {hosts}; nothing submitted")
        zone = self._config().daemon.timezone
        now = self._clock.time()
        at_text = _arg(request, "at", str)
        at = now if at_text is None else _instant(at_text, zone)
        if at < now - 1.0:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"at: {at_text} is in the past")
        entry = {"name": SUBMIT_PREFIX + name, "command": command, "at": at, "hosts": hosts,
                 "submitted": iso_utc(now)}
        try:
            self._admit_submitted(entry)
        except SchedulerError as exc:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, str(exc)) from None
        self._save_submitted()
        log.info("task %s submitted: runs at %s: %s", entry["name"], iso_utc(at),
                 " ".join(command))
        return {"task": entry["name"], "at": iso_utc(at)}

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
        self._scheduler.submit(spec)
        self._submitted[spec.name] = entry


def _instant(text: str, zone: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:  # "in 10m" style: a duration from now
            return datetime.now().timestamp() + parse_duration(text)
        except DurationError:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT,
                                f"at: '{text}' is not an ISO 8601 time such as "
                                "2026-12-01T10:00:00+01:00, nor a duration such as 10m"
                                ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=load_zone(zone))
    return moment.timestamp()


def _ending(event: RunEnded | RunNotStarted | FireSkipped) -> dict[str, Any]:
    if isinstance(event, RunEnded):
        return {"outcome": event.outcome, "exit_code": event.exit_code,
                "signal": event.signal, "duration": round(event.duration, 3)}
    if isinstance(event, RunNotStarted):
        return {"outcome": "start-error", "exit_code": None, "signal": None,
                "error": event.error}
    return {"outcome": "dropped" if event.dropped else "skipped", "exit_code": None,
            "signal": None, "error": event.reason}


def read_logs(paths: StatePaths, task: str, run_id: str | None, lines: int | None,
              err: bool) -> dict[str, Any]:
    """One run's output (default the latest), from the history's offsets. Also used by the
    CLI directly when no daemon runs."""
    run = find_run(paths.history, task, run_id)
    if run is None:
        which = f"run {run_id} of task '{task}'" if run_id else f"a run of task '{task}'"
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"no record of {which} in the history")
    data = clip(last_lines(run_output(paths.logs, run, err=err), lines))
    _, offset = follow_chunk(paths.logs, task, None, err=err)
    return {"run_id": run["run_id"], "outcome": run["outcome"], "text":
            data.decode(errors="replace"), "offset": offset}
