"""Event hooks: on_start, on_success, on_failure, on_missed, per task and daemon-wide.

A hook is a command (run like a task, output to `logs/hooks.log`, with a timeout) and/or a
webhook (a JSON document of the run, POSTed and retried with backoff). Hooks run beside
the scheduler as tasks of the event loop and never hold it up; a failing hook is logged
and recorded in the history's hook_calls table.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchd.core.clock import Clock
from torchd.core.events import Event, FireMissed, RunEnded, RunNotStarted, RunStarted
from torchd.core.model import HookAction, HookEvent, LogPolicy, RunOutcome, Trigger, Webhook
from torchd.core.runid import new_run_id
from torchd.core.timefmt import iso_utc
from torchd.process.cgroups import RunCgroupParent
from torchd.process.runner import LaunchRequest, StartError, spawn, supervise
from torchd.store.statedir import FileModes
from torchd.store.tasklog import LogFiles, log_file

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("torchd.hooks")

WEBHOOK_ATTEMPTS = 4  # the first try and three retries, 1 s, 2 s and 4 s apart
WEBHOOK_FIRST_DELAY = 1.0
HOOKS_LOG = "hooks"
FAILURE_OUTCOMES = (str(RunOutcome.FAILED), str(RunOutcome.TIMEOUT))
HookRecorder = Callable[..., None]
Hooks = tuple[tuple[HookEvent, HookAction], ...]


def _hook_event(event: Event) -> HookEvent | None:
    if isinstance(event, RunStarted):
        return HookEvent.ON_START
    if isinstance(event, RunEnded):
        if event.outcome is RunOutcome.OK:
            return HookEvent.ON_SUCCESS
        return HookEvent.ON_FAILURE if event.outcome in FAILURE_OUTCOMES else None
    if isinstance(event, RunNotStarted):
        return HookEvent.ON_FAILURE
    if isinstance(event, FireMissed):
        return HookEvent.ON_MISSED
    return None


def describe(event: Event, hook: HookEvent, *, host: str, log_dir: Path) -> dict[str, Any]:
    """The run as a hook sees it: the webhook's JSON body, and the command's environment."""
    doc: dict[str, Any] = {"event": str(hook), "task": event.task, "host": host,
                           "log_file": str(log_file(log_dir, event.task))}
    if isinstance(event, RunStarted | RunEnded | RunNotStarted):
        doc.update(run_id=event.run_id, fire_id=event.fire_id, attempt=event.attempt,
                   scheduled=iso_utc(event.scheduled))
    if isinstance(event, RunStarted):
        doc.update(outcome="running", pid=event.pid, started=iso_utc(event.started),
                   trigger=event.trigger)
    elif isinstance(event, RunEnded):
        doc.update(outcome=event.outcome, exit_code=event.exit_code, signal=event.signal,
                   pid=event.pid, started=iso_utc(event.started), ended=iso_utc(event.ended),
                   duration=round(event.duration, 3))
        if event.reason is not None:  # an HTTP run's failure (masked: no secret in it)
            doc.update(reason=event.reason)
    elif isinstance(event, RunNotStarted):
        doc.update(outcome=str(RunOutcome.START_ERROR), error=event.error,
                   trigger=event.trigger)
    elif isinstance(event, FireMissed):
        doc.update(outcome=str(RunOutcome.MISSED), missed=event.count,
                   first=iso_utc(event.first), last=iso_utc(event.last))
    return doc


def hook_env(doc: Mapping[str, Any]) -> dict[str, str]:
    def text(key: str) -> str:
        value = doc.get(key)
        return "" if value is None else str(value)

    return {"TORCHD_EVENT": text("event"), "TORCHD_TASK": text("task"),
            "TORCHD_RUN_ID": text("run_id"), "TORCHD_FIRE_ID": text("fire_id"),
            "TORCHD_OUTCOME": text("outcome"), "TORCHD_EXIT_CODE": text("exit_code"),
            "TORCHD_DURATION": text("duration"), "TORCHD_LOG_FILE": text("log_file"),
            "TORCHD_HOST": text("host"), "TORCHD_REASON": text("reason")}


class HookRunner:
    def __init__(self, *, log_dir: Path, base_env: Mapping[str, str], clock: Clock,
                 record: HookRecorder, host: str, file_modes: FileModes | None = None,
                 cgroups: RunCgroupParent | None = None) -> None:
        self._log_dir = log_dir
        self._base_env = dict(base_env)
        self._clock = clock
        self._record = record
        self._host = host
        self._logs = LogFiles(log_dir, file_modes)
        self._daemon_hooks: Hooks = ()
        self._task_hooks: Mapping[str, Hooks] = {}
        self._log_policy = LogPolicy()
        self._pending: set[asyncio.Task[None]] = set()
        self._pids: set[int] = set()  # of hook commands running
        self._cgroups = cgroups
        self._session: aiohttp.ClientSession | None = None

    def configure(self, daemon_hooks: Hooks, task_hooks: Mapping[str, Hooks],
                  log_policy: LogPolicy) -> None:
        """Hooks for every task, and each task's own (only tasks that have some)."""
        self._daemon_hooks = daemon_hooks
        self._task_hooks = task_hooks
        self._log_policy = log_policy

    def on_event(self, event: Event) -> None:
        if not self._daemon_hooks and not self._task_hooks:
            return  # every fire passes here: no work at all when nothing is hooked
        hook = _hook_event(event)
        if hook is None:
            return
        actions = [action for owner in (self._daemon_hooks,
                                         self._task_hooks.get(event.task, ()))
                   for when, action in owner if when is hook]
        if not actions:
            return
        doc = describe(event, hook, host=self._host, log_dir=self._log_dir)
        loop = asyncio.get_running_loop()
        for action in actions:
            if action.command is not None:
                self._track(loop.create_task(self._run_command(action, doc)))
            if action.webhook is not None:
                self._track(loop.create_task(self._post(action.webhook, doc)))

    def pids(self) -> set[int]:
        """The hook commands running (children torchd watches itself)."""
        return set(self._pids)

    def _track(self, task: asyncio.Task[None]) -> None:
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def close(self, grace: float) -> None:
        """Give hooks under way `grace` seconds, then cancel what is left."""
        if self._pending:
            _done, left = await asyncio.wait(set(self._pending), timeout=grace)
            for task in left:
                task.cancel()
            if left:
                log.warning("%d hook(s) still running at shutdown were cancelled", len(left))
                await asyncio.wait(left, timeout=5.0)
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._logs.close_all()

    def _done(self, doc: Mapping[str, Any], action: str, target: str, ok: bool,
              detail: str) -> None:
        if not ok:
            log.warning("hook %s (%s %s) for task %s failed: %s", doc["event"], action, target,
                        doc["task"], detail)
        self._record(task=doc["task"], run_id=doc.get("run_id"), event=doc["event"],
                      action=action, target=target, ok=ok, detail=detail)

    async def _run_command(self, action: HookAction, doc: Mapping[str, Any]) -> None:
        assert action.command is not None  # noqa: S101 - only called for one
        target = " ".join(action.command)
        request = LaunchRequest(
            task=HOOKS_LOG, run_id=new_run_id(),
            fire_id=f"{doc['event']}:{doc.get('run_id') or doc['task']}",
            scheduled=self._clock.time(), command=action.command,
            env={**self._base_env, **hook_env(doc)}, cwd=None, config_digest="-",
            trigger=Trigger.MANUAL, timeout=action.timeout, kill_grace=5.0,
            cgroups=self._cgroups,
        )
        try:
            spawned = spawn(request, clock_time=self._clock.time,
                            clock_mono=self._clock.monotonic)
        except StartError as exc:
            self._done(doc, "command", target, False, f"could not start: {exc}")
            return
        self._pids.add(spawned.pid)
        handle = supervise(spawned, out_log=self._logs.acquire(HOOKS_LOG, self._log_policy),
                           err_log=None, kill_grace=5.0, clock_time=self._clock.time,
                           clock_mono=self._clock.monotonic,
                           on_exit=lambda _run: self._pids.discard(spawned.pid))
        run = handle.run
        try:
            await asyncio.shield(run.done)
        except asyncio.CancelledError:
            handle.kill_now()
            raise
        self._done(doc, "command", target, run.outcome is RunOutcome.OK,
                   f"{run.result_text()} outcome={run.outcome}")

    async def _post(self, hook: Webhook, doc: Mapping[str, Any]) -> None:
        import aiohttp  # noqa: PLC0415 - loaded only by daemons that have webhooks

        if self._session is None:
            self._session = aiohttp.ClientSession()
        body = json.dumps(doc).encode()
        headers = {"Content-Type": "application/json", **dict(hook.headers)}
        delay = WEBHOOK_FIRST_DELAY
        detail = ""
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            try:
                async with self._session.post(
                        hook.url, data=body, headers=headers,
                        timeout=aiohttp.ClientTimeout(total=hook.timeout)) as response:
                    if response.status < 300:
                        self._done(doc, "webhook", hook.url, True,
                                   f"HTTP {response.status} (attempt {attempt})")
                        return
                    detail = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if attempt < WEBHOOK_ATTEMPTS:
                await asyncio.sleep(delay)
                delay *= 2
        self._done(doc, "webhook", hook.url, False, f"{detail} after {WEBHOOK_ATTEMPTS} attempts")

