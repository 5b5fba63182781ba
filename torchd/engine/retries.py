"""Retries: a cron task's failed or timed-out run is tried again for the same fire, after
a delay that grows by the task's policy (`retries`), with TORCHD_ATTEMPT counting. A
retry is not a new fire: overlap and limits do not apply to it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from torchd.core.logfields import run_fields
from torchd.core.model import RunOutcome, TaskKind
from torchd.engine.runs import Runs
from torchd.engine.tasks import Fire, TaskState
from torchd.process.runner import Run, StartError

log = logging.getLogger("torchd.scheduler")


class Retries:
    def __init__(self, *, runs: Runs, current: Callable[[TaskState], bool],
                 stopping: Callable[[], bool]) -> None:
        self._runs = runs
        self._current = current
        self._stopping = stopping

    @staticmethod
    def pending(state: TaskState) -> int:
        return len(state.retry_timers or ())

    def after(self, state: TaskState, run: Run) -> bool:
        """A failed or timed-out run of a cron task: its fire again after the policy's
        delay, while attempts are left. Whether a retry follows (else the run's outcome is
        final)."""
        policy = state.spec.retries
        attempt = run.request.attempt
        if (policy is None or self._stopping() or state.spec.kind is not TaskKind.CRON
                or run.outcome not in (RunOutcome.FAILED, RunOutcome.TIMEOUT)):
            return False
        if attempt > policy.max:
            log.warning("task %s: fire %s failed after %d attempt(s); no retries left",
                        run.task, run.request.fire_id, attempt,
                        extra=run_fields(run.task, run_id=run.run_id,
                                         fire_id=run.request.fire_id, outcome=run.outcome))
            return False
        delay = policy.delay_before(attempt + 1)
        log.info("task %s: fire %s attempt %d/%d %s; retrying in %.1fs", run.task,
                 run.request.fire_id, attempt, policy.max + 1, run.outcome, delay,
                 extra=run_fields(run.task, run_id=run.run_id, fire_id=run.request.fire_id,
                                  outcome=run.outcome))
        key = object()
        if state.retry_timers is None:
            state.retry_timers = {}
        state.retry_timers[key] = asyncio.get_running_loop().call_later(
            delay, self._retry, state, Fire(run.request.scheduled, run.request.trigger,
                                            cause=run.request.cause,
                                            cascade=run.request.cascade),
            attempt + 1, key)
        return True

    def _retry(self, state: TaskState, fire: Fire, attempt: int, key: object) -> None:
        """A retry belongs to its fire: it is not a new fire, so overlap does not apply."""
        if state.retry_timers:
            state.retry_timers.pop(key, None)
        if self._stopping() or not self._current(state):
            return
        with contextlib.suppress(StartError):  # logged and recorded by Runs.spawn
            self._runs.launch(state, fire, attempt)

    @staticmethod
    def cancel(state: TaskState, why: str) -> None:
        """Cancel the task's pending retries, logged with `why`."""
        if not state.retry_timers:
            return
        log.warning("task %s: %d pending retry(ies) cancelled: %s", state.spec.name,
                    len(state.retry_timers), why)
        for timer in state.retry_timers.values():
            timer.cancel()
        state.retry_timers = None
