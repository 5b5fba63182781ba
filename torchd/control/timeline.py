"""The `timeline` reply (the daily plan) from the task specs and the history's run counts.

Its cost is bounded by the page, not the task file: the page's tasks are picked by name
first (a casefolded substring test per task), and each task's fires are counted with a cap
per slot (see core.timeline), so a page of 50 per-second tasks costs 50 x slots x cap
schedule steps at most."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torchd.control.protocol import ErrorCode, ProtocolError
from torchd.control.verbs import Timeline, TimelineRow
from torchd.core.model import TaskSpec
from torchd.core.timefmt import iso_utc
from torchd.core.timeline import Slots, count_fires

MAX_HOURS = 168.0
MIN_SLOT = 60
MAX_SLOTS = 2016  # a side: a week of 5-minute slots
MAX_COUNT = 500  # tasks a page


def check(request: Timeline) -> None:
    """bad-argument for a window or page the plan does not draw."""
    if request.slot < MIN_SLOT:
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"'slot' must be {MIN_SLOT} seconds or more")
    if request.hours > MAX_HOURS:
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"'hours' must be at most {MAX_HOURS:g}")
    if request.hours * 3600 / request.slot > MAX_SLOTS:
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"{request.hours:g} hours of {request.slot}s "
                            f"slots is more than {MAX_SLOTS} slots; take longer slots")
    if request.count > MAX_COUNT:
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"'count' must be at most {MAX_COUNT}")


def matching(tasks: Sequence[TaskSpec], match: str) -> list[TaskSpec]:
    """The tasks whose name holds `match`, case ignored, in file order."""
    needle = match.casefold()
    return [task for task in tasks if needle in task.name.casefold()] if needle else list(tasks)


def slots_at(now: float, width: int) -> Slots:
    """Slots of `width` seconds aligned on the epoch; slot 0 holds `now`."""
    return Slots(math.floor(now / width) * width, width)


def rows(page: Sequence[TaskSpec], slots: Slots, *, now: float, end: float,
         runs: list[tuple[str, int, str, int]], longest: dict[str, float],
         first: int) -> list[TimelineRow]:
    """One row per task of the page: its fires in [now, end), and its runs (counted by
    the history from slot `first`)."""
    past: dict[str, list[list[object]]] = {}
    for task, slot, outcome, count in sorted(runs, key=lambda r: (r[1], r[2])):
        past.setdefault(task, []).append([first + slot, outcome, count])
    made: list[TimelineRow] = []
    for spec in page:
        schedule = spec.schedule if spec.active else None
        counted = None if schedule is None else count_fires(
            schedule, now, end, slots, longest=longest.get(spec.name))
        made.append({
            "name": spec.name, "schedule": spec.schedule_text, "timezone": spec.timezone,
            "active": spec.active,
            "next_fire": None if counted is None or counted.first is None
            else iso_utc(counted.first),
            "fires": [] if counted is None else [[s, n] for s, n in sorted(counted.counts.items())],
            "full": [] if counted is None else sorted(counted.full),
            "overlaps": [] if counted is None else sorted(counted.overlaps),
            "runs": past.get(spec.name, []),
            "longest": longest.get(spec.name),
        })
    return made
