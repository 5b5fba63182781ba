"""The scheduler in-process with real /bin/sh children and an injectable clock."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import psutil
import pytest

from torchd.core.events import (
    Event,
    FireMissed,
    FireSettled,
    FireSkipped,
    RunEnded,
    RunNotStarted,
    RunStarted,
)
from torchd.core.model import (
    Catchup,
    Config,
    DaemonSettings,
    Overlap,
    RetryPolicy,
    TaskKind,
    TaskSpec,
    fire_id,
)
from torchd.core.reloadplan import plan
from torchd.core.schedule.bounded import AtSchedule
from torchd.core.schedule.cronexpr import parse_schedule
from torchd.engine.scheduler import Scheduler
from torchd.engine.timetable import PREPARE_FROM, PREPARE_WINDOW, wake_window


@dataclass(frozen=True)
class FastSchedule:
    """Fires on every multiple of `step` seconds: fast scheduler tests."""

    step: float
    text: str = "fast"

    def next_after(self, ts: float) -> float | None:
        return (math.floor(ts / self.step) + 1) * self.step


@dataclass
class ShiftedClock:
    """The real clock plus an offset that a test can step forward or back."""

    offset: float = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass
class Recorder:
    events: list[Event] = field(default_factory=list)

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.events if isinstance(e, kind)]


def cron(name: str, schedule: object, command: str, **kw: object) -> TaskSpec:
    return TaskSpec(name=name, kind=TaskKind.CRON, schedule=schedule,  # type: ignore[arg-type]
                    command=("/bin/sh", "-c", command), **kw)  # type: ignore[arg-type]


def keeper(name: str, command: tuple[str, ...], **kw: object) -> TaskSpec:
    return TaskSpec(name=name, kind=TaskKind.DAEMON, schedule=None, command=command,
                    **kw)  # type: ignore[arg-type]


def config_of(*tasks: TaskSpec, daemon: DaemonSettings | None = None) -> Config:
    return Config(path="t.yaml", digest="test", daemon=daemon or DaemonSettings(),
                  tasks=tasks)


async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
    assert predicate(), what


def run_scheduler(tmp_path: Path, tasks: tuple[TaskSpec, ...],
                  body: Callable[[Scheduler, Recorder], Awaitable[None]], *,
                  clock: ShiftedClock | None = None, kill_grace: float = 2.0,
                  last_fires: dict[str, float] | None = None,
                  daemon: DaemonSettings | None = None,
                  launched: float | None = None) -> Recorder:
    recorder = Recorder()

    async def main() -> None:
        scheduler = Scheduler(clock=clock or ShiftedClock(), log_dir=tmp_path,
                              base_env=os.environ, kill_grace=kill_grace, on_event=recorder)
        config = config_of(*tasks, daemon=daemon)
        scheduler.apply(config, plan(None, config), last_fires, launched=launched)
        engine = asyncio.create_task(scheduler.run())
        try:
            await body(scheduler, recorder)
        finally:
            await scheduler.shutdown(2.0)
            engine.cancel()

    asyncio.run(main())
    return recorder


def test_each_fire_runs_once(tmp_path: Path) -> None:
    """A 50 ms schedule: one run per slot, none twice, none skipped, however late the loop
    is (a late slot still runs: only the count within a fixed time would depend on load)."""
    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: len(rec.of(RunStarted)) >= 15, 10, "fifteen runs started")

    rec = run_scheduler(tmp_path, (cron("fast", FastSchedule(0.05), "true", max_running=0),),
                        body)
    fires = [line.split("fire=")[1].split()[0] for line in (tmp_path / "fast.log").read_text()
             .splitlines() if " start " in line]
    assert len(fires) == len(set(fires))
    started = rec.of(RunStarted)
    assert len(started) == len(fires)
    slots = [round(event.scheduled / 0.05) for event in started]
    assert slots == list(range(slots[0], slots[0] + len(slots)))


def test_a_stop_ends_the_loop_at_once_however_far_the_next_fire(tmp_path: Path) -> None:
    async def main() -> None:
        scheduler = Scheduler(clock=ShiftedClock(), log_dir=tmp_path, base_env=os.environ)
        config = config_of(cron("rare", FastSchedule(3600.0), "true"))
        scheduler.apply(config, plan(None, config))
        engine = asyncio.create_task(scheduler.run())
        await asyncio.sleep(0)  # the loop's first turn: it plans an hour's sleep
        assert not engine.done()
        scheduler.request_stop()
        await asyncio.wait_for(engine, 2.0)

    asyncio.run(main())


def test_a_task_added_while_the_loop_sleeps_fires_on_time(tmp_path: Path) -> None:
    """The loop sleeps until the earliest fire (at most 5 s at a time); a reload that adds
    an earlier one wakes it."""
    rare = cron("rare", FastSchedule(3600.0), "true")
    fast = cron("fast", FastSchedule(0.05), "true")

    async def body(scheduler: Scheduler, rec: Recorder) -> None:
        await asyncio.sleep(0)  # the loop's first turn: it plans a 5 s sleep
        old, new = config_of(rare), config_of(rare, fast)
        scheduler.apply(new, plan(old, new))
        await until(lambda: rec.of(RunStarted), 3.0, "the added task started")

    run_scheduler(tmp_path, (rare,), body)


def test_an_error_inside_the_loop_ends_run_with_it(tmp_path: Path) -> None:
    """The loop runs from timer callbacks; an error there must still reach run()'s caller
    (the app logs it and shuts down) rather than stop the loop silently."""
    class Broken(Exception):
        """Raised by the event handler below, as an internal error would be."""

    def on_event(event: Event) -> None:
        if isinstance(event, FireSettled):
            raise Broken

    async def main() -> None:
        scheduler = Scheduler(clock=ShiftedClock(), log_dir=tmp_path, base_env=os.environ,
                              on_event=on_event)
        config = config_of(cron("fast", FastSchedule(0.05), "true"))
        scheduler.apply(config, plan(None, config))
        with pytest.raises(Broken):
            await asyncio.wait_for(scheduler.run(), 5.0)
        assert await scheduler.shutdown(1.0) == 0

    asyncio.run(main())


@pytest.mark.parametrize(("count", "period"), [(PREPARE_FROM, 0.05), (150, 0.5)],
                         ids=["few", "many"])
def test_fires_prepared_ahead_never_start_before_their_instant(tmp_path: Path, count: int,
                                                               period: float) -> None:
    """With PREPARE_FROM fires due at once, or enough that the loop wakes earlier than
    PREPARE_WINDOW, the loop settles them and builds their launch requests before the
    instant, then sleeps precisely: every process (its own clock, read by `date`) starts
    at or after its scheduled instant, each fire once."""
    assert wake_window(150) > PREPARE_WINDOW
    tasks = tuple(cron(f"t{i}", FastSchedule(period), 'echo "$TORCHD_RUN_ID $(date +%s.%N)"',
                       max_running=0) for i in range(count))

    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: len(rec.of(RunEnded)) >= 40, 20, "forty runs ended")

    rec = run_scheduler(tmp_path, tasks, body)
    scheduled = {event.run_id: event.scheduled for event in rec.of(RunStarted)}
    started: dict[str, float] = {}
    for task in tasks:
        for line in (tmp_path / f"{task.name}.log").read_text().splitlines():
            run_id, _, stamp = line.partition(" ")
            if run_id in scheduled:
                started[run_id] = float(stamp)
    assert len(started) >= 40
    early = {run: scheduled[run] - at for run, at in started.items() if at < scheduled[run]}
    assert not early, f"started before the instant (s): {early}"
    fires = [(e.task, e.scheduled) for e in rec.of(RunStarted)]
    assert len(fires) == len(set(fires))


def test_a_fire_that_cannot_be_prepared_does_not_stop_the_others(tmp_path: Path) -> None:
    """Preparing a launch request ahead fails for a task whose account is gone (deleted
    after the load): the loop goes on, and the task beside it keeps firing."""
    broken = tuple(cron(f"gone{i}", FastSchedule(0.05), "true", max_running=0,
                        user="torchd-no-such-user") for i in range(PREPARE_FROM))
    healthy = cron("ok", FastSchedule(0.05), "true", max_running=0)

    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: len([e for e in rec.of(RunStarted) if e.task == "ok"]) >= 10, 10,
                    "ten runs of the healthy task")

    rec = run_scheduler(tmp_path, (*broken, healthy), body)
    assert {e.task for e in rec.of(RunStarted)} == {"ok"}


@pytest.mark.parametrize("cwd", [None, "/"], ids=["posix_spawn", "popen"])
def test_runs_get_default_sigpipe_like_a_shell_would(tmp_path: Path, cwd: str | None) -> None:
    """Python ignores SIGPIPE; a run must not inherit that, or `yes | head` fails loudly
    (both start paths: a task with `cwd` goes through Popen)."""
    command = "yes | head -n 1; grep SigIgn /proc/self/status"

    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: rec.of(RunEnded), 10, "the run ended")

    rec = run_scheduler(tmp_path, (cron("pipe", FastSchedule(0.2), command, cwd=cwd),), body)
    assert rec.of(RunEnded)[0].outcome == "ok"
    text = (tmp_path / "pipe.log").read_text()
    assert "Broken pipe" not in text
    ignored = int(text.split("SigIgn:")[1].split()[0], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1)), text
    assert not ignored & (1 << (signal.SIGXFSZ - 1)), text


def test_max_running_skips_overlapping_fires(tmp_path: Path) -> None:
    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: len(rec.of(FireSkipped)) >= 3, 5, "skipped fires")

    rec = run_scheduler(tmp_path, (cron("slow", FastSchedule(0.1), "sleep 0.35"),), body)
    running = 0
    for event in rec.events:
        if isinstance(event, RunStarted):
            running += 1
            assert running == 1, "two runs of a max_running=1 task overlapped"
        elif isinstance(event, RunEnded):
            running -= 1
    assert rec.of(FireSkipped)[0].reason == "1 run(s) still running (max_running=1)"


def test_keep_alive_restarts_with_growing_backoff(tmp_path: Path) -> None:
    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: len(rec.of(RunStarted)) >= 3, 8, "three starts")

    rec = run_scheduler(tmp_path, (keeper("flappy", ("/bin/true",)),), body)
    starts = [e.started for e in rec.of(RunStarted)]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert 0.9 <= gaps[0] < 3.0  # the backoff's 1 s and 2 s, and room for a loaded machine
    assert 1.9 <= gaps[1] < 5.0


def test_missing_executable_is_not_retried_in_a_tight_loop(tmp_path: Path) -> None:
    """Each failed start backs off longer: tries at 0 s, 1 s and 3 s (lower bounds only, so
    a slow machine cannot fail it)."""
    async def body(scheduler: Scheduler, rec: Recorder) -> None:
        await until(lambda: len(rec.of(RunNotStarted)) >= 3, 10, "three failed starts")
        (task,) = scheduler.snapshot()
        (instance,) = task["instances"]  # type: ignore[misc]
        assert instance["state"] == "backoff"
        assert instance["last_error"] == "No such file or directory: /nonexistent/cmd"

    rec = run_scheduler(tmp_path, (keeper("broken", ("/nonexistent/cmd",)),), body)
    tries = [event.time for event in rec.of(RunNotStarted)]
    assert tries[1] - tries[0] >= 0.9
    assert tries[2] - tries[1] >= 1.9
    assert "start-error" in (tmp_path / "broken.log").read_text()


def test_run_ends_when_its_process_exits_despite_a_grandchild(tmp_path: Path) -> None:
    """A background grandchild holding the output pipe neither delays the run nor survives."""
    marker = tmp_path / "grandchild.pid"

    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: rec.of(RunEnded), 3, "the run to end")

    started = time.monotonic()
    rec = run_scheduler(
        tmp_path, (cron("bg", FastSchedule(3600), "sleep 60 & echo $! > " + str(marker)),),
        body, clock=ShiftedClock(offset=-(time.time() % 3600) + 3599.8))
    assert time.monotonic() - started < 5
    assert rec.of(RunEnded)[0].outcome == "ok"
    grandchild = int(marker.read_text())
    deadline = time.monotonic() + 3
    while psutil.pid_exists(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not psutil.pid_exists(grandchild)


def test_no_thread_per_child_and_no_leaked_descriptors(tmp_path: Path) -> None:
    # Children that outlive the start of all forty, however slowly a loaded machine spawns.
    tasks = tuple(cron(f"t{i}", FastSchedule(3600), "sleep 3") for i in range(40))
    before_fds = len(os.listdir("/proc/self/fd"))
    threads: list[int] = []

    async def body(scheduler: Scheduler, rec: Recorder) -> None:
        await until(lambda: scheduler.running_count() == 40, 10, "40 running children")
        threads.append(threading.active_count())
        await until(lambda: len(rec.of(RunEnded)) == 40, 20, "all children reaped")
        me = psutil.Process()
        assert [c for c in me.children() if c.status() == psutil.STATUS_ZOMBIE] == []

    run_scheduler(tmp_path, tasks, body,
                  clock=ShiftedClock(offset=-(time.time() % 3600) + 3599.5))
    assert threads[0] <= 2  # the main thread (and at most one helper), whatever the load
    assert len(os.listdir("/proc/self/fd")) <= before_fds


def test_backward_clock_step_does_not_repeat_fires(tmp_path: Path) -> None:
    clock = ShiftedClock()
    every_second = parse_schedule("* * * * * *", ZoneInfo("UTC"))

    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: len(rec.of(RunStarted)) >= 2, 5, "two fires")
        clock.offset = -3.0
        count = len(rec.of(RunStarted))
        await until(lambda: len(rec.of(RunStarted)) >= count + 2, 10, "fires after the step")

    run_scheduler(tmp_path, (cron("tick", every_second, "true"),), body, clock=clock)
    fires = [line.split("fire=")[1].split()[0] for line in (tmp_path / "tick.log").read_text()
             .splitlines() if " start " in line]
    assert len(fires) == len(set(fires)), fires


def test_forward_clock_step_records_missed_fires(tmp_path: Path) -> None:
    clock = ShiftedClock()
    every_second = parse_schedule("* * * * * *", ZoneInfo("UTC"))

    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: rec.of(RunStarted), 5, "a first fire")
        clock.offset = 120.0
        await until(lambda: rec.of(FireMissed), 10, "missed fires")
        count = len(rec.of(RunStarted))
        await until(lambda: len(rec.of(RunStarted)) >= count + 2, 10, "fires after the step")

    rec = run_scheduler(tmp_path, (cron("tick", every_second, "true"),), body, clock=clock)
    (missed,) = rec.of(FireMissed)
    assert 110 <= missed.count <= 121
    fires = [line.split("fire=")[1].split()[0] for line in (tmp_path / "tick.log").read_text()
             .splitlines() if " start " in line]
    assert len(fires) == len(set(fires))


def test_limit_counts_exited_processes_the_busy_loop_has_not_seen(tmp_path: Path) -> None:
    """A long reload blocks the loop while the last run exits and the next fire comes due;
    the next fire must not be skipped as if that run were still running."""
    specs = (cron("quick", FastSchedule(0.5), "sleep 0.2"),)

    async def body(scheduler: Scheduler, rec: Recorder) -> None:
        await until(lambda: rec.of(RunStarted), 5, "a first run")
        count = len(rec.of(RunStarted))
        time.sleep(0.7)  # noqa: ASYNC251 - the point: a loop busy past exit and next fire
        assert scheduler.running_count() == 1  # exited meanwhile, but not yet seen
        config = config_of(*specs)
        scheduler.apply(config, plan(config, config))  # wakes the scheduler first in line
        await until(lambda: len(rec.of(RunStarted)) > count, 2, "the next run")

    rec = run_scheduler(tmp_path, specs, body)
    assert rec.of(FireSkipped) == []


def _log_fires(path: Path) -> list[str]:
    return [line.split("fire=")[1].split()[0] for line in path.read_text().splitlines()
            if " start " in line]


def test_overlap_queue_runs_fires_one_after_another_in_order(tmp_path: Path) -> None:
    """Fires every 0.1 s, each run takes 0.25 s, one at a time: fires wait in order, at
    most 2 wait, the rest are dropped and said so."""
    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: len(rec.of(RunEnded)) >= 5, 10, "five queued runs ended")

    rec = run_scheduler(tmp_path, (cron("q", FastSchedule(0.1), "sleep 0.25",
                                        overlap=Overlap.QUEUE, queue_limit=2),), body)
    kinds = [type(e).__name__ for e in rec.events if isinstance(e, RunStarted | RunEnded)]
    assert kinds[:10] == ["RunStarted", "RunEnded"] * 5  # never two at once
    fires = [datetime.fromisoformat(f.split("@")[1].replace("Z", "+00:00"))
             for f in _log_fires(tmp_path / "q.log")]
    assert fires == sorted(fires)  # queued fires start oldest first
    reasons = {(e.reason, e.dropped) for e in rec.of(FireSkipped)}
    # and what still waited when the test stopped the scheduler
    assert reasons - {("shutdown", True)} == {("queue full (2 fire(s) waiting)", True)}


def test_overlap_replace_stops_the_running_one(tmp_path: Path) -> None:
    """Each fire ends the previous run (TERM; it ignores it, so KILL after kill_grace)
    and starts when the slot is free."""
    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: len(rec.of(RunEnded)) >= 2, 10, "two replaced runs")

    rec = run_scheduler(tmp_path, (cron("r", FastSchedule(0.5), "trap '' TERM; sleep 30",
                                        overlap=Overlap.REPLACE, kill_grace=0.3),), body)
    ended = rec.of(RunEnded)[:2]
    assert [e.outcome for e in ended] == ["killed", "killed"]
    assert [e.signal for e in ended] == [9, 9]
    assert len(rec.of(RunStarted)) >= 3
    kinds = [type(e).__name__ for e in rec.events if isinstance(e, RunStarted | RunEnded)]
    assert kinds[:4] == ["RunStarted", "RunEnded", "RunStarted", "RunEnded"]  # one at a time


def _fires_since(step: float, last: float, until_ts: float) -> list[float]:
    fires, t = [], last
    while (t := (math.floor(t / step) + 1) * step) <= until_ts:
        fires.append(t)
    return fires


def _started_fires(tmp_path: Path, name: str) -> list[str]:
    return _log_fires(tmp_path / f"{name}.log") if (tmp_path / f"{name}.log").exists() else []


@pytest.mark.parametrize("policy", list(Catchup))
def test_catchup_after_a_restart(tmp_path: Path, policy: Catchup) -> None:
    """The previous daemon's last fire was a minute ago on a 10 s schedule: the six fires
    since were missed while it was down, and the policy says which run now. The clock is
    set midway between fires so that none falls due during the test."""
    step = 10.0
    real = time.time()
    clock = ShiftedClock(offset=(math.floor(real / step) + 1) * step + step / 2 - real)
    now = clock.time()
    last = (math.floor(now / step) - 6) * step
    missed = _fires_since(step, last, now)
    assert len(missed) == 6
    expected_runs = {Catchup.NONE: [], Catchup.LAST: missed[-1:], Catchup.ALL: missed}[policy]

    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: rec.of(FireSettled), 5, "the missed fires are settled")
        await until(lambda: len(rec.of(RunEnded)) >= len(expected_runs), 10, "catch-up runs")

    rec = run_scheduler(tmp_path, (cron("c", FastSchedule(step), "true", catchup=policy),),
                        body, clock=clock, last_fires={"c": last})
    assert _started_fires(tmp_path, "c") == [fire_id("c", t)
                                             for t in expected_runs]
    missed_events = rec.of(FireMissed)
    if policy is Catchup.ALL:
        assert missed_events == []
    else:
        # `last` names the last fire not run: the one before the fire caught up, if any
        assert [(e.count, e.first, e.last) for e in missed_events] == [
            (len(missed) - len(expected_runs), missed[0], missed[-1 - len(expected_runs)])]
    assert [e.scheduled for e in rec.of(FireSettled)] == [missed[-1]]  # not due again


def test_a_recent_last_fire_in_the_future_is_not_repeated(tmp_path: Path) -> None:
    """The clock went back since the last daemon recorded its last fire: fires up to it
    are not run again."""
    step = 1.0
    recorded = time.time() + 1.5

    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: rec.of(RunStarted), 5, "a fire after the recorded one")

    rec = run_scheduler(tmp_path, (cron("b", FastSchedule(step), "true"),), body,
                        last_fires={"b": recorded})
    first = rec.of(FireSettled)[0].scheduled
    assert first > recorded
    assert rec.of(FireMissed) == []


def test_a_fire_due_while_the_daemon_loaded_runs_at_start(tmp_path: Path) -> None:
    """The daemon was launched 1 s ago and took until now to load: the fire that fell due
    0.5 s ago runs at once (late), and one due before the launch is not the daemon's."""
    now = time.time()
    launched, during, before = now - 1.0, now - 0.5, now - 1.5
    tasks = (cron("loading", AtSchedule(text="at", instant=during), "true"),
             cron("earlier", AtSchedule(text="at", instant=before), "true"))

    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: rec.of(RunEnded), 5, "the fire due during the load")

    rec = run_scheduler(tmp_path, tasks, body, launched=launched)
    # Both were on the timetable of the first pass: a fire of "earlier" would show here.
    assert [(e.task, e.scheduled) for e in rec.of(RunStarted)] == [("loading", during)]
    assert rec.of(FireMissed) == []


def test_without_a_launch_instant_the_first_fire_is_after_start(tmp_path: Path) -> None:
    """A scheduler applied with no launch instant (a test, or an embedding program) plans
    from the moment it is applied, as before."""
    now = time.time()
    tasks = (cron("past", AtSchedule(text="at", instant=now - 0.5), "true"),
             cron("soon", AtSchedule(text="at", instant=now + 2), "true"))

    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: rec.of(RunEnded), 5, "the fire after start")

    rec = run_scheduler(tmp_path, tasks, body)
    assert [e.scheduled for e in rec.of(RunStarted)] == [now + 2]


def _soon() -> ShiftedClock:
    """A clock 0.3 s before a whole hour, for FastSchedule(3600) tasks to fire once."""
    return ShiftedClock(offset=-(time.time() % 3600) + 3599.7)


@pytest.mark.parametrize(("command", "signal_number"), [
    ("sleep 30", 15),  # ends on TERM
    ("trap '' TERM; sleep 30", 9),  # ignores TERM: KILL after kill_grace
])
def test_timeout_stops_the_run(tmp_path: Path, command: str, signal_number: int) -> None:
    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: rec.of(RunEnded), 5, "the run to be stopped")

    started = time.monotonic()
    rec = run_scheduler(tmp_path, (cron("slow", FastSchedule(3600), command, timeout=0.4,
                                        kill_grace=0.3),), body, clock=_soon())
    assert time.monotonic() - started < 4
    (ended,) = rec.of(RunEnded)
    assert (ended.outcome, ended.signal) == ("timeout", signal_number)
    footer = (tmp_path / "slow.log").read_text().splitlines()[-1]
    assert "outcome=timeout" in footer


def test_retries_run_the_same_fire_again_with_backoff(tmp_path: Path) -> None:
    out = tmp_path / "attempts"

    pending_after_last: list[object] = []

    async def body(scheduler: Scheduler, rec: Recorder) -> None:
        await until(lambda: len(rec.of(RunEnded)) >= 3, 5, "three attempts")
        pending_after_last.append(scheduler.snapshot()[0]["retries_pending"])

    policy = RetryPolicy(max=2, delay=0.1, backoff=4.0)
    rec = run_scheduler(tmp_path, (cron(
        "flaky", FastSchedule(3600), f'echo "$TORCHD_ATTEMPT $TORCHD_FIRE_ID" >> {out}; exit 3',
        retries=policy),), body, clock=_soon())
    assert pending_after_last == [0]  # no fourth attempt is planned
    attempts = out.read_text().split("\n")[:-1]
    assert [a.split()[0] for a in attempts] == ["1", "2", "3"]
    assert len({a.split()[1] for a in attempts}) == 1  # one fire, three attempts
    ends = rec.of(RunEnded)
    assert [e.exit_code for e in ends] == [3, 3, 3]
    starts = [e.started for e in rec.of(RunStarted)]
    assert starts[1] - starts[0] >= 0.1  # delay
    assert starts[2] - starts[1] >= 0.4  # delay x backoff
    headers = [line for line in (tmp_path / "flaky.log").read_text().splitlines()
               if " start " in line]
    assert ["attempt=" in h for h in headers] == [False, True, True]


def test_jitter_delays_the_start_but_not_the_fire_id(tmp_path: Path) -> None:
    clock = _soon()
    hour = math.ceil(clock.time() / 3600) * 3600

    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: rec.of(RunStarted), 5, "the jittered fire")

    rec = run_scheduler(tmp_path, (cron("spread", FastSchedule(3600), "true", jitter=1.5),),
                        body, clock=clock)
    (started,) = rec.of(RunStarted)
    assert hour <= started.started <= hour + 1.5 + 1.0  # the jitter, and a loaded machine
    assert _log_fires(tmp_path / "spread.log") == [fire_id("spread", hour)]
    assert rec.of(FireMissed) == []



def _most_at_once(rec: Recorder) -> int:
    running, most = 0, 0
    for event in rec.events:
        if isinstance(event, RunStarted):
            running += 1
            most = max(most, running)
        elif isinstance(event, RunEnded):
            running -= 1
    return most


@pytest.mark.parametrize("overlap", [Overlap.SKIP, Overlap.QUEUE])
def test_daemon_wide_limit_holds_across_tasks(tmp_path: Path, overlap: Overlap) -> None:
    """Four tasks that each could run alone, under daemon.max_running=2."""
    async def body(_s: Scheduler, rec: Recorder) -> None:
        await until(lambda: len(rec.of(RunEnded)) >= 8, 10, "eight runs ended")

    tasks = tuple(cron(f"t{i}", FastSchedule(0.2), "sleep 0.3") for i in range(4))
    rec = run_scheduler(tmp_path, tasks, body,
                        daemon=DaemonSettings(max_running=2, overlap=overlap, queue_limit=3))
    assert _most_at_once(rec) == 2
    held = [e.reason for e in rec.of(FireSkipped)]
    if overlap is Overlap.SKIP:
        assert "daemon.max_running=2 runs across all tasks" in held
    else:
        # (a task's own queued fire at the end of the test is dropped with "shutdown")
        assert set(held) <= {"daemon queue full (3 fire(s) waiting)",
                             "1 run(s) still running (max_running=1)",
                             "held by daemon.max_running at shutdown", "shutdown"}
        assert "daemon queue full (3 fire(s) waiting)" in held
