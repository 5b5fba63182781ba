"""The engine's front: it applies configs, runs the loop, settles each due fire (missed,
paused, left to a cluster claim, or to start), and answers operators. Its parts: the
timetable, admission (overlap and limits), runs, retries, keep-alive supervision and
cluster participation, each in a module of its own (docs/architecture.md).

A task's next fire is always computed from its previous scheduled fire, never from
"now", so a fire cannot run twice and a clock that steps back only makes the loop wait
longer. A changed task gets a new token; timetable entries with an old token are ignored.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
from collections import deque
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, cast

from torchd.core.catchup import decide
from torchd.core.clock import Clock
from torchd.core.errors import SchedulerError
from torchd.core.events import (
    Event,
    FireClaimedElsewhere,
    FireMissed,
    FireSettled,
    FireSkipped,
)
from torchd.core.health import Health
from torchd.core.logfields import run_fields
from torchd.core.model import (
    FAILED_OUTCOMES,
    Config,
    RunOutcome,
    TaskGauges,
    TaskKind,
    TaskSpec,
    Trigger,
    fire_id,
)
from torchd.core.reloadplan import ReloadPlan
from torchd.core.runid import new_run_id
from torchd.core.schedule.cronexpr import RebootSchedule
from torchd.core.timefmt import iso_utc
from torchd.core.workflow import Cause, EdgeRun
from torchd.engine.admission import Admission
from torchd.engine.chains import Chains, EdgeKeeper
from torchd.engine.keepalive import KeepAlive, Keeper
from torchd.engine.participation import FireClaims, Participation
from torchd.engine.retries import Retries
from torchd.engine.runs import Runs
from torchd.engine.tasks import MISSED_AFTER, Fire, Prepared, TaskState
from torchd.engine.timetable import (
    PREPARE_FROM,
    PREPARE_MARGIN,
    HeapEntry,
    Timetable,
    sleep_until,
)
from torchd.engine.windows import Windows
from torchd.process.cgroups import RunCgroupParent
from torchd.process.output import OutputEcho
from torchd.process.runner import (
    LaunchRequest,
    Run,
    RunControl,
    StartError,
)
from torchd.store.statedir import FileModes

log = logging.getLogger("torchd.scheduler")

MAX_SLEEP = 5.0  # re-read the wall clock at least this often, to notice clock steps
# Fires this much short of MISSED_AFTER late are counted with the missed ones too: the next
# fire is planned after them, and must not be found missed itself a moment later, in the
# loop's next pass (one clock step would report two missed spans).
MISSED_MARGIN = 0.5
class Scheduler:
    def __init__(self, *, clock: Clock, log_dir: Path, base_env: Mapping[str, str],
                 kill_grace: float = 10.0, file_modes: FileModes | None = None,
                 on_event: Callable[[Event], None] | None = None,
                 claims: FireClaims | None = None, health: Health | None = None,
                 cgroups: RunCgroupParent | None = None, echo: OutputEcho | None = None) -> None:
        self._clock = clock
        self._kill_grace = kill_grace
        self._publish = on_event or (lambda _event: None)
        self._paused: set[str] = set()
        self._paused_all = False
        self._submitted: set[str] = set()  # one-off tasks from `torchd submit`
        self._cluster = Participation(claims)
        self._runs = Runs(clock=clock, log_dir=log_dir, base_env=base_env,
                          kill_grace=kill_grace, file_modes=file_modes,
                          health=health or Health(clock.time), cgroups=cgroups,
                          cluster=self._cluster, on_event=self._on_event,
                          ended=self._note_end, after_exit=self._after_exit,
                          start_failed=self._start_failed, echo=echo)
        self._claiming: set[asyncio.Task[None]] = set()
        # Called with the daemon-type `run_on: one` tasks this host may hold a lease for,
        # whenever that set may have changed (load, reload, pause, resume).
        self.on_lease_tasks: Callable[[set[str]], None] = lambda _names: None
        self._tasks: dict[str, TaskState] = {}
        self._timetable = Timetable()
        self._tokens = 0
        self._ended: asyncio.Future[None] | None = None  # the loop's end, once running
        self._next_turn: asyncio.Handle | None = None
        self._turning = False
        self._last_seen = 0.0
        self._stopping = False
        self._started = False
        self._retries = Retries(runs=self._runs, current=self._current,
                                stopping=lambda: self._stopping)
        self._admission = Admission(runs=self._runs, clock=clock, on_event=self._on_event,
                                    current=self._current, stopping=lambda: self._stopping)
        self._chains = Chains(clock=clock, on_event=self._on_event,
                              fire=self._fire_downstream, cluster=self._cluster,
                              active=lambda spec: spec.active)
        self._keep_alive = KeepAlive(launch=self._launch_instance, may_keep=self._keeps,
                                     lease_expiry=self._lease_expiry,
                                     stopping=lambda: self._stopping)
        self._windows = Windows(clock=clock, opened=self._window_opened,
                                closed=self._window_closed)

    def _on_event(self, event: Event) -> None:
        """Tell the subscribers; a fire that did not run is told to the chains as well
        (its downstreams say why they do not run)."""
        self._publish(event)
        if type(event) in (FireSkipped, FireMissed):
            self._chains.not_run(event)  # type: ignore[arg-type]

    # ----- configuration -------------------------------------------------------------
    def restore_edges(self, keeper: EdgeKeeper | None,
                      held: Mapping[str, dict[str, EdgeRun]]) -> None:
        """At start, before the first apply: where edges are kept, and those an earlier
        daemon left satisfied."""
        self._chains.restore(keeper, held)

    def apply(self, config: Config, plan: ReloadPlan,
              last_fires: Mapping[str, float] | None = None, *,
              launched: float | None = None) -> None:
        """Apply a reload plan (the first load is a plan from nothing). Never waits.

        At start only:
        - `last_fires`: each task's last fire as recorded by an earlier daemon; the fires
          since then are due now, and late or missed as the loop finds.
        - `launched`: when the daemon was launched. A task without a recorded fire is
          planned from then, so a fire that fell due while the file loaded runs as soon
          as the loop starts (late by the load), instead of being skipped unrecorded.
        """
        specs = config.by_name()
        self._runs.config_digest = config.digest
        self._admission.limits = config.daemon
        if any(specs[name].http is not None for name in (*plan.added, *plan.changed)):
            self._runs.expect_http()
        now = self._clock.time()
        since = now if launched is None or self._started else min(now, launched)
        for name in plan.removed:
            self._retire(name)
        for name in plan.changed:
            previous = self._retire(name)
            self._admit(specs[name], now, previous)
        for name in plan.added:
            self._admit(specs[name], now, None, (last_fires or {}).get(name), since=since)
        self._chains.configure({name: state.spec for name, state in self._tasks.items()})
        self._wake()
        self.on_lease_tasks(self.lease_tasks())

    def _retire(self, name: str) -> TaskState | None:
        """Take a task off the timetable. Cron runs continue; keep-alive instances stop."""
        state = self._tasks.pop(name, None)
        if state is None:
            return None
        self._windows.forget(name)
        self._stand_down(state, "the task was changed or removed", self._kill_grace)
        return state

    def _admit(self, spec: TaskSpec, now: float, previous: TaskState | None,
               recorded_last: float | None = None, *, since: float | None = None) -> None:
        self._tokens += 1
        state = TaskState(spec=spec, token=self._tokens)
        if previous is not None:
            state.last_scheduled = previous.last_scheduled
            state.last_run = previous.last_run
        self._tasks[spec.name] = state
        if not spec.active:
            return
        if spec.kind is TaskKind.DAEMON:
            waiting_for = [k.handle.run.done for k in (previous.keepers if previous else [])
                           if k.handle is not None]
            for slot in range(max(spec.max_running, 1)):
                keeper = Keeper(task=spec.name, slot=slot)
                state.keepers.append(keeper)
                if self._started and self._may_keep(spec):
                    self._keep_alive.start(keeper, waiting_for)
            if self._started:
                self._watch_window(spec)
            return
        if spec.after is not None:
            return  # fired by its upstreams' runs (chains), never by the timetable
        if recorded_last is not None:
            state.last_scheduled = recorded_last
            first = spec.schedule.next_after(recorded_last) if spec.schedule else None
            if first is not None and first <= now and not self._started:
                state.missed = (first, now)  # run() applies the catchup policy at start
        if state.last_scheduled is None:
            after = now if since is None else since
        else:
            after = max(now, state.last_scheduled)
        self._plan_next(state, after)
        if (state.next_fire is None and state.missed is None and spec.active
                and not isinstance(spec.schedule, RebootSchedule)):
            log.info("task %s: no fire to come (%s)", spec.name,
                     "it ran already" if recorded_last is not None else "its time has passed")

    def _plan_next(self, state: TaskState, after: float) -> None:
        assert state.spec.schedule is not None  # noqa: S101 - cron tasks always have one
        state.next_fire = state.spec.schedule.next_after(after)
        if state.next_fire is not None:
            due = state.next_fire
            if state.spec.jitter:
                due += random.uniform(0.0, state.spec.jitter)  # noqa: S311 - spreading load
            self._timetable.push(due, state.spec.name, state.token)

    # ----- the loop --------------------------------------------------------------------
    async def run(self) -> None:
        """Fire tasks until request_stop(); then return (runs are left to shutdown())."""
        self._started = True
        at_boot: list[tuple[TaskState, Fire]] = []
        for state in list(self._tasks.values()):
            if not state.spec.active:
                continue
            if state.spec.kind is TaskKind.DAEMON:
                if self._may_keep(state.spec):
                    for keeper in state.keepers:
                        self._keep_alive.start(keeper, [])
                self._watch_window(state.spec)
            elif isinstance(state.spec.schedule, RebootSchedule):
                if not self.is_paused(state.spec.name):
                    at_boot.append((state, Fire(self._clock.time())))
            elif state.missed is not None:
                # Everything since the last recorded fire was missed, however recent; what
                # is due after `until` is on the timetable already.
                first, until = state.missed
                self._handle_missed(state, first, self._clock.time(), end=until)
                state.missed = None
        self._admission.fire_batch(at_boot)
        self._ended = asyncio.get_running_loop().create_future()
        self._last_seen = self._clock.time()
        self._turn()
        try:
            await self._ended
        finally:
            self._cancel_turn()

    def _wake(self) -> None:
        """Recompute the sleep now: the timetable changed."""
        if self._ended is None or self._ended.done() or self._turning:
            return  # not running, or a turn is on; it plans its own sleep at its end
        if self._next_turn is None or isinstance(self._next_turn, asyncio.TimerHandle):
            self._cancel_turn()
            self._next_turn = self._ended.get_loop().call_soon(self._turn)

    def _cancel_turn(self) -> None:
        if self._next_turn is not None:
            self._next_turn.cancel()
            self._next_turn = None

    def _turn(self) -> None:
        """One turn of the loop: start what is due, then plan the next turn. A timer calls
        it directly, not through a task waiting on an event: that costs one pass of the
        event loop and a task step on every fire."""
        ended = self._ended
        assert ended is not None  # noqa: S101 - set before the first turn
        self._next_turn = None
        self._turning = True
        try:
            self._turn_until_asleep(ended.get_loop())  # get_running_loop() costs a getpid()
        except Exception as exc:  # noqa: BLE001 - the loop is over; run() raises it
            self._cancel_turn()
            if not ended.done():
                ended.set_exception(exc)
        finally:
            self._turning = False
        if self._stopping:
            self._end()

    def _end(self) -> None:
        self._cancel_turn()
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)

    def _turn_until_asleep(self, loop: asyncio.AbstractEventLoop) -> None:
        while not self._stopping:
            now = self._clock.time()
            if now < self._last_seen - 1.0:
                log.warning("the wall clock stepped back %.1fs; fires already run are not "
                            "run again, the next ones wait for their time",
                            self._last_seen - now)
            self._last_seen = now
            self._fire_due(now)
            earliest = self._timetable.earliest()
            delay = MAX_SLEEP
            if earliest is not None:
                delay = min(delay, earliest - self._clock.time())
            if delay <= 0:  # let exits and control requests in between bursts
                self._next_turn = loop.call_soon(self._turn)
                return
            window = self._timetable.wake_window()
            if delay <= window:
                # The selector rounds its timeout up to whole milliseconds; the last stretch
                # before a fire is slept precisely instead. It blocks the loop for at most
                # about `window`, so nothing comes between preparing and starting.
                assert earliest is not None  # noqa: S101 - delay came from it
                instant = earliest
                coming = self._timetable.take_due(instant)
                prepared = None
                if len(coming) >= PREPARE_FROM:
                    prepared = self._settle(coming, self._clock.time(),
                                            prepare_until=instant - PREPARE_MARGIN)
                sleep_until(self._clock, instant, window)
                self._fire_due(max(instant, self._clock.time()), prepared, coming)
                continue
            self._next_turn = loop.call_later(delay - window, self._turn)
            return

    def next_due(self) -> float | None:
        """The earliest instant on the timetable (maybe of an entry a reload made stale,
        which only makes it early), or None when nothing is due."""
        return self._timetable.earliest()

    def request_stop(self) -> None:
        self._stopping = True
        if not self._turning:  # a turn ends the loop itself when it is over
            self._end()

    def _fire_due(self, now: float, prepared: Prepared | None = None,
                  coming: deque[HeapEntry] | None = None) -> None:
        """Start every fire due by `now`: those `prepared` ahead of their instant first,
        then the timetable entries already taken (`coming`), then the rest due."""
        entries = self._timetable.take_due(now)
        if coming:
            coming.extend(entries)
            entries = coming
        taken = self._settle(entries, now, into=prepared)
        if taken.batch:
            # start processes first; schedule arithmetic can wait
            self._admission.fire_batch(taken.batch, taken.requests)
            for state, fire in taken.batch:
                if self._tasks.get(state.spec.name) is state:
                    self._plan_next(state, fire.scheduled)
                    if self._submitted:
                        self._forget_if_submitted(state)

    def _settle(self, entries: deque[HeapEntry], now: float, *, into: Prepared | None = None,
                prepare_until: float | None = None) -> Prepared:
        """Settle the fire of each entry, consumed in order: missed, paused, left to a
        cluster claim, or to start (returned). Until the clock reaches `prepare_until`, the
        launch request of each fire to start is built as well; then it stops, and the
        entries left are settled at the instant."""
        taken = into if into is not None else Prepared()
        batch, requests = taken.batch, taken.requests
        while entries:
            if prepare_until is not None and self._clock.time() >= prepare_until:
                break
            due, _seq, name, token = entries.popleft()
            state = self._tasks.get(name)
            if state is None or state.token != token or self._stopping:
                continue
            scheduled = state.next_fire  # `due` is later by the task's jitter, if any
            assert scheduled is not None  # noqa: S101 - an entry is pushed only with one
            if now - due > MISSED_AFTER:
                self._handle_missed(state, scheduled, now)
                continue
            state.last_scheduled = scheduled
            self._on_event(FireSettled(task=name, scheduled=scheduled))
            if self.is_paused(name):
                self._admission.not_run(state.spec, Fire(scheduled), "the task is paused",
                                        quiet=True)
                self._plan_next(state, scheduled)
                self._forget_if_submitted(state)
                continue
            fire = Fire(scheduled, Trigger.SUBMIT if name in self._submitted
                        else Trigger.SCHEDULE)
            if self._cluster.claims_fires(state.spec):
                self._claim_then_fire(state, fire)
                self._plan_next(state, scheduled)
                continue
            batch.append((state, fire))
            requests.append(None if prepare_until is None else self._prepare(state, fire))
        return taken

    def _prepare(self, state: TaskState, fire: Fire) -> LaunchRequest | None:
        """The fire's launch request, built ahead; None if that fails (an account deleted
        since the load, say): it is then built again as it starts, where a failure is that
        fire's alone and is reported as such, instead of ending the loop."""
        try:
            return self._runs.request(state, fire)
        except Exception:  # noqa: BLE001 - reported when the fire starts
            return None

    def _handle_missed(self, state: TaskState, first: float, now: float,
                       end: float | None = None) -> None:
        """Fires from `first` to `end` (default: MISSED_AFTER - MISSED_MARGIN ago) could not
        run in time: the task's catchup policy picks which run now; the rest are logged as
        missed."""
        spec = state.spec
        assert spec.schedule is not None  # noqa: S101 - only cron tasks are timetabled
        at_runtime = end is None
        end = now - (MISSED_AFTER - MISSED_MARGIN) if end is None else end
        decision = decide(spec.schedule, first, end, now=now, policy=spec.catchup,
                          deadline=spec.starting_deadline)
        state.last_scheduled = decision.last
        if decision.missed:
            more = "" if decision.counted_all else "+"
            log.warning("task %s: missed %d%s fire(s) from %s to %s (daemon down or busy, "
                        "host asleep, or clock stepped forward); not run: %s", spec.name,
                        decision.missed, more, iso_utc(decision.first),
                        iso_utc(decision.last_missed), decision.note,
                        extra=run_fields(spec.name, fire_id=fire_id(spec.name,
                                                                     decision.last_missed),
                                         outcome=RunOutcome.MISSED))
            self._on_event(FireMissed(task=spec.name, first=decision.first,
                                      last=decision.last_missed, count=decision.missed))
        self._on_event(FireSettled(task=spec.name, scheduled=decision.last))
        if decision.run:
            log.info("task %s: catching up %d missed fire(s), %s to %s", spec.name,
                     len(decision.run), iso_utc(decision.run[0]), iso_utc(decision.run[-1]))
            fires = [Fire(t, Trigger.CATCHUP) for t in decision.run]
            if self._cluster.claims_fires(spec):
                for fire in fires:  # another host may have run them meanwhile
                    self._claim_then_fire(state, fire)
            else:
                self._admission.catch_up(state, fires)
        if at_runtime:
            self._plan_next(state, end)  # later fires are only late: they run as usual

    def _current(self, state: TaskState) -> bool:
        """Whether `state` is still its task's (not replaced or removed by a reload)."""
        return self._tasks.get(state.spec.name) is state

    def _note_end(self, run: Run) -> None:
        state = self._tasks.get(run.task)
        if state is not None:
            state.last_run = run

    def _after_exit(self, run: Run, was_cron: bool) -> None:
        """What follows a run's end: a retry, the task's queued fires, those held by the
        daemon-wide limit."""
        state = self._tasks.get(run.task)
        retrying = state is not None and self._retries.after(state, run)
        if not retrying and not self._stopping and run.outcome is not None:
            # the one place that knows a run's outcome is final: no retry follows
            self._chains.final(run.request, run.outcome, run.ended or self._clock.time())
        if state is not None:
            self._admission.start_waiting(state)
            self._forget_if_submitted(state)
        if was_cron and self._admission.waits_for_the_daemon():
            self._admission.start_daemon_waiting()

    def _start_failed(self, state: TaskState, request: LaunchRequest) -> None:
        """A run could not start: a final outcome (no retry follows a start error)."""
        if not self._stopping:
            self._chains.final(request, RunOutcome.START_ERROR, self._clock.time())
        self._forget_if_submitted(state)

    def _fire_downstream(self, name: str, cause: Cause) -> None:
        """Fire a downstream task for the upstream run that completed its edges: its own
        policies apply (pause, max_running and overlap, the daemon-wide limit, retries)."""
        state = self._tasks.get(name)
        if state is None or self._stopping:
            return
        fire = Fire(self._clock.time(), Trigger.UPSTREAM, cause=cause)
        if self.is_paused(name):
            self._admission.not_run(state.spec, fire, "the task is paused")
            return
        self._admission.fire_batch([(state, fire)])

    # ----- operator requests -------------------------------------------------------------
    def _task(self, name: str) -> TaskState:
        state = self._tasks.get(name)
        if state is None:
            raise SchedulerError(f"no task named '{name}'")
        return state

    def is_paused(self, name: str) -> bool:
        return self._paused_all or name in self._paused

    def paused(self) -> tuple[bool, frozenset[str]]:
        """(everything paused, tasks paused by name): what the app keeps across restarts."""
        return self._paused_all, frozenset(self._paused)

    def pause(self, name: str | None) -> list[str]:
        """Pause one task (None: every task, present and future). Running cron runs go on;
        daemon-type instances are stopped. Returns the tasks newly paused."""
        if name is not None:
            self._task(name)
        affected = [n for n in ([name] if name else sorted(self._tasks))
                    if not self.is_paused(n)]
        if name is None:
            self._paused_all = True
        else:
            self._paused.add(name)
        for task in affected:
            self._stand_down(self._tasks[task], "the task was paused", self._kill_grace)
            log.info("task %s paused", task)
        self.on_lease_tasks(self.lease_tasks())
        return affected

    def resume(self, name: str | None) -> list[str]:
        """Undo pause(name) (None: resume everything). Returns the tasks that now run."""
        if name is not None:
            self._task(name)
            if name not in self._paused and self._paused_all:
                raise SchedulerError(f"task '{name}' is paused by 'pause --all'; "
                                     "use 'resume --all'")
        was_paused = [n for n in sorted(self._tasks) if self.is_paused(n)]
        if name is None:
            self._paused_all = False
            self._paused.clear()
        else:
            self._paused.discard(name)
        resumed = [n for n in was_paused if not self.is_paused(n)]
        for task in resumed:
            self._restart_keepers(self._tasks[task])
            log.info("task %s resumed", task)
        self.on_lease_tasks(self.lease_tasks())
        return resumed

    def _restart_keepers(self, state: TaskState) -> None:
        """Fresh keep-alive slots, started once the old instances have gone."""
        if state.spec.kind is not TaskKind.DAEMON or not self._started:
            return
        if not self._may_keep(state.spec):
            return
        previous = state.keepers
        waiting_for = [k.handle.run.done for k in previous if k.handle is not None]
        state.keepers = [Keeper(task=state.spec.name, slot=k.slot) for k in previous]
        for keeper in state.keepers:
            self._keep_alive.start(keeper, waiting_for)

    # ----- cluster -----------------------------------------------------------------------
    def _may_keep(self, spec: TaskSpec) -> bool:
        """Whether this host keeps a daemon-type task's instances running now."""
        if not spec.active or self.is_paused(spec.name) or not self._window_open(spec):
            return False
        return self._cluster.holds(spec)

    def lease_tasks(self) -> set[str]:
        """Daemon-type `run_on: one` tasks this host would run if it held their lease (a
        windowed one only while its window is open)."""
        return {name for name, state in self._tasks.items()
                if self._cluster.leased(state.spec) and state.spec.active
                and not self.is_paused(name) and self._window_open(state.spec)}

    # ----- keep-alive windows ------------------------------------------------------------
    def _window_open(self, spec: TaskSpec) -> bool:
        return spec.window is None or spec.window.state_at(self._clock.time()).open

    def _watch_window(self, spec: TaskSpec) -> None:
        if spec.window is not None and spec.active:
            self._windows.watch(spec.name, spec.window, self._window_open(spec))

    def _window_opened(self, name: str) -> None:
        """Start the instances (a run_on: one task asks for its lease first)."""
        state = self._tasks[name]
        self._restart_keepers(state)
        self.on_lease_tasks(self.lease_tasks())

    def _window_closed(self, name: str) -> None:
        """Stop the instances as any stop does (TERM, kill_grace, KILL); their runs end
        killed, with the reason "window closed" in the history."""
        state = self._tasks[name]
        for keeper in state.keepers:
            if keeper.handle is not None and keeper.handle.run.ended is None:
                keeper.handle.run.reason = "window closed"
            self._keep_alive.stop(keeper, state.spec.kill_grace)
        self.on_lease_tasks(self.lease_tasks())

    def lease_changed(self, name: str, held: bool, stop_within: float) -> None:
        """The cluster gave or took this host's lease of a task: start or stop it. A lost
        lease stops the instances within `stop_within` seconds (before another host may
        take the lease)."""
        state = self._tasks.get(name)
        if state is None or state.spec.kind is not TaskKind.DAEMON:
            return
        if held:
            self._restart_keepers(state)
            return
        grace = min(state.spec.kill_grace, stop_within)
        for keeper in state.keepers:
            self._keep_alive.stop(keeper, grace)

    def lease_renewed(self, name: str, expiry: float) -> None:
        """The cluster renewed this host's lease of a task: tell its instances' guards."""
        state = self._tasks.get(name)
        for keeper in state.keepers if state is not None else ():
            if keeper.handle is not None:
                keeper.handle.lease_renewed(expiry)

    def _claim_then_fire(self, state: TaskState, fire: Fire) -> None:
        task = asyncio.get_running_loop().create_task(self._claim_and_run(state, fire))
        self._claiming.add(task)
        task.add_done_callback(self._claiming.discard)

    async def _claim_and_run(self, state: TaskState, fire: Fire) -> None:
        claims = self._cluster.claims
        assert claims is not None  # noqa: S101 - only called in cluster mode
        name = state.spec.name
        claim = await claims.claim(name, fire.scheduled)
        if self._stopping or self._tasks.get(name) is not state:
            return
        fid = fire_id(name, fire.scheduled)
        if claim.error is not None:
            log.warning("task %s: fire %s missed: %s", name, fid, claim.error,
                        extra=run_fields(name, fire_id=fid, outcome=RunOutcome.MISSED))
            self._on_event(FireMissed(task=name, first=fire.scheduled, last=fire.scheduled,
                                      count=1, reason=f"cluster: {claim.error}"))
            return
        state.last_claim = (fire.scheduled, claim.holder)
        if claim.won:
            self._admission.fire_batch([(state, fire)])
        else:
            self._on_event(FireClaimedElsewhere(name, fire.scheduled, claim.holder))
            log.debug("task %s: fire %s %s", name, fid,
                      f"runs on {claim.holder}" if claim.holder else
                      "not run: the cluster ran a later fire of the task already",
                      extra=run_fields(name, fire_id=fid, host=claim.holder))

    def trigger(self, name: str, *, force: bool, cascade: bool = True) -> tuple[str, str]:
        """Run a task now. Without `force`, its overlap policy and the daemon-wide limit
        apply as to any fire; with `cascade`, its run's final outcome fires its downstream
        tasks as a scheduled run's would. Returns (run id, what happened: started, ...)."""
        state = self._task(name)
        spec = state.spec
        if spec.kind is TaskKind.DAEMON:
            raise SchedulerError(f"task '{name}' is a daemon-type task, kept running; "
                                 "'torchd kill' restarts its instance")
        if self.is_paused(name) and not force:
            raise SchedulerError(f"task '{name}' is paused; resume it, or use --force")
        if not spec.active and not force:
            why = "is disabled" if not spec.enabled else "is not for this host (hosts)"
            raise SchedulerError(f"task '{name}' {why}; use --force to run it anyway")
        fire = Fire(self._clock.time(), Trigger.MANUAL, new_run_id(), cascade=cascade)
        log.info("task %s: run %s triggered by hand%s", name, fire.run_id,
                 " (forced)" if force else "", extra=run_fields(name, run_id=fire.run_id))
        assert fire.run_id is not None  # noqa: S101 - set just above
        if not force:
            return fire.run_id, self._admission.fire_batch([(state, fire)])[0]
        try:
            self._runs.launch(state, fire)
        except StartError as exc:
            return fire.run_id, f"start-error: {exc}"
        return fire.run_id, "started"

    def kill(self, name: str, run_id: str | None) -> list[RunControl]:
        """Stop a task's runs (or one of them): TERM to the group, kill_grace, KILL. They
        end with outcome killed. A daemon-type instance is restarted like after any exit."""
        state = self._task(name)
        handles = [h for h in self._runs.of(name) if run_id is None or h.run.run_id == run_id]
        if not handles:
            raise SchedulerError(f"task '{name}': run {run_id} is not running" if run_id
                                 else f"task '{name}' has no run going")
        for handle in handles:
            log.info("task %s run %s: kill requested", name, handle.run.run_id,
                     extra=run_fields(name, run_id=handle.run.run_id,
                                      fire_id=handle.run.request.fire_id))
            handle.stop(state.spec.kill_grace)
        return handles

    async def kill_and_wait(self, name: str, run_id: str | None, *,
                            longer: float) -> list[dict[str, Any]]:
        """kill(), then wait up to the task's kill_grace plus `longer` for the runs to end.
        What each run came to, as `kill` replies it."""
        handles = self.kill(name, run_id)
        grace = max(h.run.request.kill_grace for h in handles)
        await asyncio.wait([h.run.done for h in handles], timeout=grace + longer)
        return [{"run_id": h.run.run_id, "pid": h.run.pid, "ended": h.run.ended is not None,
                 "outcome": None if h.run.outcome is None else str(h.run.outcome),
                 "result": h.run.result_text() if h.run.ended is not None else None}
                for h in handles]

    def submit(self, spec: TaskSpec) -> None:
        """Add a one-off task (a schedule that fires once). It leaves the table after its
        run; a reload of the task file does not touch it."""
        if spec.name in self._tasks:
            raise SchedulerError(f"a task named '{spec.name}' exists already")
        assert spec.schedule is not None  # noqa: S101 - a submitted task has its instant
        self._submitted.add(spec.name)
        self._tokens += 1
        state = TaskState(spec=spec, token=self._tokens)
        self._tasks[spec.name] = state
        self._plan_next(state, float("-inf"))
        self._wake()

    def _forget_if_submitted(self, state: TaskState) -> None:
        name = state.spec.name
        if (name in self._submitted and state.next_fire is None and not self._runs.count(name)
                and not self._retries.pending(state) and not self._admission.holds(state)):
            self._submitted.discard(name)
            if self._tasks.get(name) is state:
                del self._tasks[name]

    # ----- keep-alive --------------------------------------------------------------------
    def _stand_down(self, state: TaskState, why: str, grace: float | None) -> None:
        """A task stops working for now (changed, removed, paused, shutdown): its queued
        fires are dropped and its retries cancelled, recorded with `why`; its keep-alive
        instances are stopped with `grace` (None: left to the caller, as at shutdown).
        Cron runs going on are left alone."""
        self._admission.drop_queued(state, why)
        self._retries.cancel(state, why)
        for keeper in state.keepers:
            if grace is None:
                keeper.halt()
            else:
                self._keep_alive.stop(keeper, grace)

    def _launch_instance(self, name: str) -> RunControl:
        return self._runs.launch(self._tasks[name], Fire(self._clock.time(), Trigger.KEEP_ALIVE))

    def _keeps(self, name: str) -> bool:
        state = self._tasks.get(name)
        return state is not None and self._may_keep(state.spec)

    def _lease_expiry(self, name: str) -> float | None:
        return self._cluster.lease_expiry(name)

    # ----- shutdown ------------------------------------------------------------------------
    async def shutdown(self, grace: float) -> int:
        """Stop everything started: TERM groups, wait `grace`, KILL, reap. Returns # killed."""
        self.request_stop()
        for claiming in self._claiming:
            claiming.cancel()
        self._windows.cancel_all()
        self._chains.cancel()
        for state in self._tasks.values():
            self._stand_down(state, "shutdown", None)
        self._admission.drop_daemon_waiting("shutdown")
        return await self._runs.stop_all(grace)

    def force_kill(self) -> None:
        self._runs.kill_all_now()

    # ----- views ---------------------------------------------------------------------------
    def running_count(self) -> int:
        return self._runs.total()

    def run_pids(self) -> set[int]:
        """The pids of every run going (the children torchd watches itself)."""
        return self._runs.pids()

    def is_running(self, run_id: str) -> bool:
        return self._runs.is_running(run_id)

    def gauges(self) -> list[TaskGauges]:
        """Each task's gauges for /metrics: a tuple per task, no formatting (a scrape of
        10,000 tasks reads them all on the loop)."""
        running = self._runs.counts()
        paused_all, paused = self._paused_all, self._paused
        return [TaskGauges(name, state.spec.schedule_text or "", state.spec.kind,
                           paused_all or name in paused, running.get(name, 0),
                           state.next_fire if state.spec.active else None)
                for name, state in self._tasks.items()]

    def glance(self, count: int) -> dict[str, object]:
        """What an overview needs of every task, in one pass without a dict per task: the
        `count` soonest to fire, those whose last run failed, and the active cron tasks
        that never ran and have no fire to come."""
        running = self._runs.counts()
        paused_all, paused = self._paused_all, self._paused
        soonest: list[tuple[float, str]] = []
        failing: list[str] = []
        never: list[str] = []
        for name, state in self._tasks.items():
            spec, last = state.spec, state.last_run
            if state.next_fire and spec.active:
                soonest.append((state.next_fire, name))
            if last is not None:
                if last.outcome in FAILED_OUTCOMES:
                    failing.append(name)
            elif (spec.active and spec.kind is TaskKind.CRON and spec.after is None
                  and not state.next_fire and not running.get(name)
                  and not (paused_all or name in paused)):
                never.append(name)
        return {"tasks": len(self._tasks),
                "next": [name for _, name in heapq.nsmallest(count, soonest)],
                "failing": sorted(failing), "never_ran": sorted(never)}

    def index(self) -> list[dict[str, object]]:
        """Every task in a few fields, by name: what a dashboard filters 10,000 tasks on
        before it asks for the snapshots of one page (a fifth of snapshot()'s cost)."""
        running = self._runs.counts()
        paused_all, paused = self._paused_all, self._paused
        return [{"name": name, "schedule": state.spec.schedule_text,
                 "type": str(state.spec.kind), "enabled": state.spec.enabled,
                 "for_this_host": state.spec.for_this_host,
                 "paused": paused_all or name in paused, "running": running.get(name, 0),
                 "next_fire": iso_utc(state.next_fire)
                 if state.next_fire and state.spec.active else None,
                 "last_outcome": None if state.last_run is None
                 else str(state.last_run.outcome),
                 "after": state.spec.after is not None}
                for name, state in sorted(self._tasks.items())]

    def snapshot(self, names: Collection[str] | None = None) -> list[dict[str, object]]:
        """Every task's state (or only those of `names` that exist), by name."""
        tasks = []
        chosen = (sorted(self._tasks.items()) if names is None else
                  sorted((n, self._tasks[n]) for n in set(names) if n in self._tasks))
        for name, state in chosen:
            spec = state.spec
            runs = self._runs.of(name)
            last = state.last_run
            entry: dict[str, object] = {
                "name": name,
                "type": str(spec.kind),
                "schedule": spec.schedule_text,
                "enabled": spec.enabled,
                "for_this_host": spec.for_this_host,
                "paused": self.is_paused(name),
                "submitted": name in self._submitted,
                "run_on": str(spec.run_on),
                "timezone": spec.timezone,
                "next_fire": iso_utc(state.next_fire) if state.next_fire and spec.active
                else None,
                "running": sorted(h.run.pid for h in runs if h.run.pid is not None),
                "runs": len(runs),  # going on now, an HTTP task's (no pid) included
                "running_since": iso_utc(max(h.run.started for h in runs)) if runs else None,
                "waiting": self._admission.waiting(state),
                "retries_pending": self._retries.pending(state),
                "last_run": None if last is None else {
                    "run_id": last.run_id,
                    "outcome": str(last.outcome),
                    "exit_code": last.exit_code,
                    "signal": last.signal,
                    "started": iso_utc(last.started),
                    "ended": iso_utc(last.ended) if last.ended else None,
                },
                "last_start_error": state.last_start_error,
                "last_start_error_at": None if state.last_start_error_at is None
                else iso_utc(state.last_start_error_at),
            }
            entry.update(self._chains.view(name))
            if last is not None and last.request.http is not None:
                entry["last_run"] = {**cast("dict[str, object]", entry["last_run"]),
                                     "http_status": last.http_status}
            if spec.kind is TaskKind.DAEMON:
                entry["instances"] = [k.view() for k in state.keepers]
            if spec.window is not None:
                window = spec.window.state_at(self._clock.time())
                entry["window"] = {
                    "schedule": spec.window.schedule.text, "for": spec.window.duration,
                    "open": window.open, "closes_at": iso_utc(window.closes_at)
                    if window.closes_at is not None else None,
                    "next_opening": iso_utc(window.next_opening)
                    if window.next_opening is not None else None}
            entry.update(self._cluster.view(spec, state.last_claim))
            tasks.append(entry)
        return tasks
