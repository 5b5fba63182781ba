"""The daily plan's arithmetic: a schedule's fires in a window counted per time slot, at a
bounded cost whatever the schedule. Pure.

Slots are `width` seconds long and numbered from `origin` (slot 0 holds `origin`), so
that every task of one plan shares them. A slot counts at most `cap` fires: once it holds
that many, the count stops (the slot is `full`) and the search goes on from the slot's
end, so a per-second task costs `cap` steps per slot, not one per second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torchd.core.schedule.cronexpr import Schedule

SLOT_CAP = 10  # fires counted in one slot; a slot with more shows as full


@dataclass(frozen=True, slots=True)
class Slots:
    """Where fire and run slots are: `origin` (epoch seconds) starts slot 0."""

    origin: float
    width: float

    def index(self, ts: float) -> int:
        return math.floor((ts - self.origin) / self.width)

    def start(self, index: int) -> float:
        return self.origin + index * self.width


@dataclass(slots=True)
class FireCounts:
    """One task's fires in a window: slot -> fires counted (at most the cap), the slots
    that had more, the slots where a fire falls due before the previous one's run (at the
    task's longest duration) would have ended, and the first fire."""

    counts: dict[int, int] = field(default_factory=dict)
    full: set[int] = field(default_factory=set)
    overlaps: set[int] = field(default_factory=set)
    first: float | None = None


def count_fires(schedule: Schedule, start: float, end: float, slots: Slots, *,
                longest: float | None = None, cap: int = SLOT_CAP) -> FireCounts:
    """The fires of `schedule` in [start, end), counted per slot (see the module). With
    `longest` (a run's duration), a fire due less than that after the one before it is
    an overlap: that run would still be going."""
    found = FireCounts()
    cursor = math.nextafter(start, -math.inf)  # next_after is strictly after
    previous: float | None = None
    while (due := schedule.next_after(cursor)) is not None and due < end:
        if found.first is None:
            found.first = due
        slot = slots.index(due)
        count = found.counts.get(slot, 0) + 1
        found.counts[slot] = count
        if longest is not None and previous is not None and due - previous < longest:
            found.overlaps.add(slot)
        previous = due
        cursor = due
        if count >= cap:
            slot_end = slots.start(slot + 1)
            following = schedule.next_after(due)
            if following is not None and following < min(slot_end, end):
                found.full.add(slot)
                cursor = math.nextafter(slot_end, -math.inf)
                previous = None  # the fires skipped over are not known one by one
    return found
