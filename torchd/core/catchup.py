"""What to do with fires whose time passed while they could not run (daemon down, host
asleep, clock stepped forward): the `catchup` policy with `starting_deadline`. Pure
arithmetic over a schedule; no processes, no clock."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from torchd.core.model import CATCHUP_LIMIT, Catchup
from torchd.core.schedule.cronexpr import Schedule

COUNT_LIMIT = 10_000  # missed fires are counted one by one up to this, then reported as "N+"
BEFORE = 0.001  # fires are at least 1 s apart: this much earlier is before a fire


@dataclass(frozen=True, slots=True)
class CatchupDecision:
    run: tuple[float, ...]  # scheduled instants to run now, oldest first
    missed: int  # missed fires not run (counted up to COUNT_LIMIT)
    counted_all: bool  # False: `missed` stopped at COUNT_LIMIT
    first: float  # the first missed fire
    last: float  # the span's last fire: the task's last handled fire from now on
    last_missed: float  # the last fire that is not run (`last` unless that one runs)
    note: str  # why the fires not run were dropped, for the log


def _last_fires(schedule: Schedule, first: float, end: float, limit: int) -> list[float]:
    """The last `limit` fires in [first, end] (`first` is a fire), oldest first. Searches
    back from `end` in growing windows, so a dense schedule after a long outage is cheap."""
    span = 1.0
    while True:
        low = end - span
        cursor: float | None = first if low < first else schedule.next_after(low)
        found: deque[float] = deque(maxlen=limit)
        while cursor is not None and cursor <= end:
            found.append(cursor)
            cursor = schedule.next_after(cursor)
        if len(found) >= limit or low < first:
            return list(found)
        span *= 4


def _count(schedule: Schedule, first: float, end: float) -> tuple[int, bool]:
    count, cursor = 0, first
    while cursor is not None and cursor <= end:
        count += 1
        if count >= COUNT_LIMIT:
            return count, False
        nxt = schedule.next_after(cursor)
        if nxt is None:
            break
        cursor = nxt
    return count, True


def decide(schedule: Schedule, first: float, end: float, *, now: float, policy: Catchup,
           deadline: float | None) -> CatchupDecision:
    """Missed fires are `first` (a fire) and every fire after it up to `end`."""
    newest = _last_fires(schedule, first, end, 1)[-1]
    total, counted_all = _count(schedule, first, end)
    eligible_from = first if deadline is None else max(first, now - deadline)
    run: list[float] = []
    note = ""
    if policy is Catchup.NONE:
        note = "catchup is none"
    elif newest < eligible_from:
        note = f"all are older than starting_deadline ({deadline:g}s)"
    elif policy is Catchup.LAST:
        run = [newest]
        note = "catchup is last: only the most recent runs"
    else:
        run = [t for t in _last_fires(schedule, first, end, CATCHUP_LIMIT + 1)
               if t >= eligible_from]
        if len(run) > CATCHUP_LIMIT:
            run = run[-CATCHUP_LIMIT:]
            note = f"catchup all runs at most the {CATCHUP_LIMIT} most recent"
        elif total > len(run):
            note = f"older than starting_deadline ({deadline:g}s)"
    last_missed = newest
    if run and total > len(run):  # the newest missed fire is the one before the first run
        last_missed = _last_fires(schedule, first, run[0] - BEFORE, 1)[-1]
    return CatchupDecision(run=tuple(run), missed=total - len(run), counted_all=counted_all,
                           first=first, last=newest, last_missed=last_missed, note=note)


CLOCK_AHEAD_MARGIN = 5.0  # a recorded fire further ahead of the clock than this: corrected


def ahead_of_the_clock(last_fires: Mapping[str, float], schedules: Mapping[str, Schedule],
                       now: float) -> set[str]:
    """The tasks whose recorded last fire lies ahead of the clock: the clock was ahead
    when they fired and has been corrected since. Waiting for the clock to reach them
    would stop them for the whole offset, so they start again from now; a task with no
    fire after its recorded one (`at:`, or a window that ended) stays done."""
    return {name for name, last in last_fires.items()
            if last > now + CLOCK_AHEAD_MARGIN and name in schedules
            and schedules[name].next_after(last) is not None}
