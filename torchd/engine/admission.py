"""Admission: whether a fire due to start may start now. Per task, `max_running` and its
`overlap` policy (skip, queue up to `queue_limit`, replace the oldest run); across the
daemon, `daemon.max_running` with its own policy and queue. A fire that is late finds the
runs as they would have been at its own time (see late_hold). What does not start is
queued or recorded as skipped or dropped, never lost silently."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

from torchd.core.clock import Clock
from torchd.core.events import Event, FireSkipped
from torchd.core.logfields import run_fields
from torchd.core.model import DaemonSettings, Overlap, RunOutcome, TaskSpec, Trigger, fire_id
from torchd.engine.runs import Runs
from torchd.engine.tasks import MISSED_AFTER, Fire, TaskState, due_start
from torchd.process.httprun import HttpStarted
from torchd.process.runner import LaunchRequest, Spawned, StartError

log = logging.getLogger("torchd.scheduler")

# After starting several processes at once, the loop sleeps this long before its own
# bookkeeping for them (log headers, exit watches, events), so that the new processes
# get the CPUs first: on 2 cores that work otherwise delays the last of 20 starts from
# about 5 to about 8 ms (`python -m bench handoff`; docs/benchmarks.md).
HANDOFF = 0.001
HOLD_MIN = 0.05  # a late fire waits for a run in its way only if it would wait longer

class Admission:
    def __init__(self, *, runs: Runs, clock: Clock, on_event: Callable[[Event], None],
                 current: Callable[[TaskState], bool], stopping: Callable[[], bool]) -> None:
        self._runs = runs
        self._clock = clock
        self._on_event = on_event
        self._current = current  # whether the state is still its task's (no reload since)
        self._stopping = stopping
        self.limits = DaemonSettings()
        self._daemon_waiting: deque[tuple[TaskState, Fire]] = deque()

    def holds(self, state: TaskState) -> bool:
        """Whether a fire of this task waits for a slot (its own or the daemon's)."""
        return bool(state.waiting) or any(held is state for held, _ in self._daemon_waiting)

    @staticmethod
    def waiting(state: TaskState) -> int:
        """How many of the task's fires wait for one of its slots."""
        return len(state.waiting or ())

    def catch_up(self, state: TaskState, fires: list[Fire]) -> None:
        """Missed fires to run now: they wait for free slots, in order."""
        state.queue().extend(fires)
        self.start_waiting(state)

    def waits_for_the_daemon(self) -> bool:
        return bool(self._daemon_waiting)

    def drop_daemon_waiting(self, why: str) -> None:
        if not self._daemon_waiting:
            return
        log.warning("%d fire(s) held by daemon.max_running dropped at %s",
                    len(self._daemon_waiting), why)
        for state, fire in self._daemon_waiting:
            self._on_event(FireSkipped(task=state.spec.name, scheduled=fire.scheduled,
                                       reason=f"held by daemon.max_running at {why}",
                                       dropped=True, run_id=fire.run_id,
                                       trigger=fire.trigger))
        self._daemon_waiting.clear()

    def start_waiting(self, state: TaskState) -> None:
        """Start queued fires, oldest first, while the task has free slots."""
        spec, queue = state.spec, state.waiting
        while queue and not self._stopping() and self._current(state):
            if spec.max_running and self._runs.still_running(spec.name) >= spec.max_running:
                return
            self.fire_batch([(state, queue.popleft())])

    def drop_queued(self, state: TaskState, why: str) -> None:
        if state.waiting:
            log.warning("task %s: %d queued fire(s) dropped: %s", state.spec.name,
                        len(state.waiting), why)
            for fire in state.waiting:
                self._on_event(FireSkipped(task=state.spec.name, scheduled=fire.scheduled,
                                           reason=why, dropped=True, run_id=fire.run_id,
                                           named=fire.cause.fire_id if fire.cause else None,
                                           trigger=fire.trigger))
        state.waiting = None

    def _enqueue(self, state: TaskState, fire: Fire, running: int) -> str:
        spec = state.spec
        if len(state.queue()) >= spec.queue_limit:
            return self.not_run(spec, fire, f"queue full ({spec.queue_limit} fire(s) "
                                 "waiting)", dropped=True)
        state.queue().append(fire)
        log.info("task %s: fire %s queued: %d run(s) still running (max_running=%d)",
                 spec.name, fire_id(spec.name, fire.scheduled), running, spec.max_running)
        return "queued"

    def _replace_oldest(self, state: TaskState) -> None:
        runs = self._runs.running_now(state.spec.name)
        if runs:
            oldest = min(runs, key=lambda h: h.run.started_mono)
            log.info("task %s: stopping run %s to make room (overlap: replace)",
                     state.spec.name, oldest.run.run_id)
            oldest.stop(state.spec.kill_grace)

    def fire_batch(self, batch: list[tuple[TaskState, Fire]],
                    requests: list[LaunchRequest | None] | None = None) -> list[str]:
        """Spawn every due fire first, then set up supervision for all of them. Returns what
        became of each fire: started, queued, skipped: ..., start-error: ...
        `requests`, beside `batch`, holds launch requests built in advance (or None)."""
        spawned: list[tuple[TaskState, Spawned | HttpStarted]] = []
        in_batch: dict[str, list[Spawned | HttpStarted]] = {}  # task -> its runs started here
        results = [""] * len(batch)
        # Commands first (so they also come first to daemon.max_running): a process
        # started is what their fire waits for, while an HTTP run begins only after the
        # batch (process.httprun).
        order = sorted(range(len(batch)), key=lambda i: batch[i][0].spec.http is not None)
        for index in order:
            state, fire = batch[index]
            spec = state.spec
            mates = in_batch.get(spec.name, ())
            running = self._runs.count(spec.name) + len(mates)
            if spec.max_running and running >= spec.max_running:
                running = self._runs.still_running(spec.name) + len(mates)
                if running >= spec.max_running:
                    hold = self._late_hold(state, fire, mates)
                    results[index] = (self._hold(state, fire, hold) if hold > HOLD_MIN
                                      else self._when_full(state, fire, running))
                    continue
            if self._daemon_full(len(spawned)):
                results[index] = self._when_daemon_full(state, fire)
                continue
            try:
                spawned.append((state, self._runs.spawn(state, fire,
                                                   request=requests[index] if requests else None)))
            except StartError as exc:
                results[index] = f"start-error: {exc}"  # logged and recorded by _spawn
                continue
            except Exception as exc:  # one run's failure must never stop the scheduler
                log.exception("task %s: fire %s failed unexpectedly", spec.name,
                              fire_id(spec.name, fire.scheduled))
                results[index] = f"start-error: internal error: {exc}"
                continue
            in_batch.setdefault(spec.name, []).append(spawned[-1][1])
            results[index] = "started"
        if sum(isinstance(started, Spawned) for _, started in spawned) > 1:
            with contextlib.suppress(OSError):  # EINVAL seen under libfaketime
                time.sleep(HANDOFF)  # off the CPUs, the loop included: that is the point
        for state, started in spawned:
            self._runs.supervise(state, started)
        return results

    def _daemon_full(self, about_to_start: int) -> bool:
        limit = self.limits.max_running
        if not limit or self._runs.cron_count() + about_to_start < limit:
            return False
        return self._runs.cron_count(reap=True) + about_to_start >= limit

    def _when_daemon_full(self, state: TaskState, fire: Fire) -> str:
        limits, spec = self.limits, state.spec
        reason = f"daemon.max_running={limits.max_running} runs across all tasks"
        # An operator's `torchd submit` waits for a slot whatever the policy: it must not
        # vanish after the command said it was submitted.
        if fire.trigger is Trigger.SUBMIT or (
                limits.overlap is Overlap.QUEUE
                and len(self._daemon_waiting) < limits.queue_limit):
            self._daemon_waiting.append((state, fire))
            log.info("task %s: fire %s queued: %s", spec.name,
                     fire_id(spec.name, fire.scheduled), reason)
            return "queued"
        if limits.overlap is Overlap.QUEUE:
            reason = f"daemon queue full ({limits.queue_limit} fire(s) waiting)"
        return self.not_run(spec, fire, reason)

    def start_daemon_waiting(self) -> None:
        """Start fires held by the daemon-wide limit, oldest first, while it allows."""
        while self._daemon_waiting and not self._stopping() and not self._daemon_full(0):
            state, fire = self._daemon_waiting.popleft()
            if self._current(state):
                self.fire_batch([(state, fire)])
            else:
                self.not_run(state.spec, fire, "the task was changed or removed while its "
                              "fire waited for daemon.max_running", dropped=True)

    def _late_hold(self, state: TaskState, fire: Fire,
                   mates: Sequence[Spawned | HttpStarted]) -> float:
        """How long a fire that found its task full waits before its overlap policy
        applies. The policy is meant to meet the runs as they would be at the fire's own
        time: a run in its way that started late (a clock step forward, a busy loop), or a
        fire that comes late itself, must not make a skip of what would not have
        overlapped. So it waits until each run in its way has lasted as long as the time
        from that run's due start to this fire's, or a run ends; never past MISSED_AFTER
        after its own time. 0 when enough would be running at its time whatever happens,
        and with `overlap: queue` (it waits in any case)."""
        if state.spec.overlap is Overlap.QUEUE:
            return 0.0
        now = self._clock.monotonic()
        ahead = [(due_start(h.run.request, h.run.started), h.run.started_mono)
                 for h in self._runs.of(state.spec.name)]
        ahead += [(due_start(s.request, s.started), s.started_mono) for s in mates]
        left = [(fire.scheduled - due) - (now - started) for due, started in ahead]
        if not left or sum(1 for wait in left if wait <= HOLD_MIN) >= state.spec.max_running:
            return 0.0
        return min(max(left), fire.scheduled + MISSED_AFTER - self._clock.time())

    def _hold(self, state: TaskState, fire: Fire, hold: float) -> str:
        """Let a late fire wait `hold` seconds for a run in its way to end (see
        _late_hold); then, if it has not started, its overlap policy applies."""
        spec = state.spec
        log.debug("task %s: fire %s waits up to %.3fs: a run started late is in its way",
                  spec.name, fire_id(spec.name, fire.scheduled), hold)
        state.queue().append(fire)
        asyncio.get_running_loop().call_later(hold, self._held_over, state, fire)
        return "queued"

    def _held_over(self, state: TaskState, fire: Fire) -> None:
        if not self._current(state) or fire not in (state.waiting or ()):
            return  # started meanwhile, or the task changed (recorded there)
        assert state.waiting is not None  # noqa: S101 - it holds the fire
        state.waiting.remove(fire)
        self.fire_batch([(state, fire)])

    def _when_full(self, state: TaskState, fire: Fire, running: int) -> str:
        """A fire found its task at max_running: the task's overlap policy decides."""
        overlap = state.spec.overlap
        if overlap is Overlap.SKIP:
            spec = state.spec
            return self.not_run(spec, fire, f"{running} run(s) still running "
                                              f"(max_running={spec.max_running})")
        if overlap is Overlap.REPLACE:
            self._replace_oldest(state)
        return self._enqueue(state, fire, running)

    def not_run(self, spec: TaskSpec, fire: Fire, reason: str, *, dropped: bool = False,
                 quiet: bool = False) -> str:
        """A fire that will not run: skipped by a limit or a pause, or dropped from a full
        queue. Returns the result a trigger reports."""
        level = logging.DEBUG if quiet else logging.WARNING if dropped else logging.INFO
        verb = "dropped" if dropped else "skipped"
        named = fire.cause.fire_id if fire.cause else None
        fid = named or fire_id(spec.name, fire.scheduled)
        log.log(level, "task %s: fire %s %s: %s", spec.name, fid, verb, reason,
                extra=run_fields(spec.name, run_id=fire.run_id, fire_id=fid,
                                 outcome=RunOutcome.DROPPED if dropped else RunOutcome.SKIPPED))
        self._on_event(FireSkipped(task=spec.name, scheduled=fire.scheduled, reason=reason,
                                   dropped=dropped, run_id=fire.run_id, named=named,
                                   trigger=fire.trigger))
        return f"{verb}: {reason}"
