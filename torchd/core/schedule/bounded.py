"""Schedules bounded in time: a one-time `at:` task, and any schedule inside a
`start_at`/`end_at` window."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torchd.core.schedule.cronexpr import Schedule


@dataclass(frozen=True, slots=True)
class AtSchedule:
    """Fires once, at `instant`. Done-ness across restarts comes from the fire ledger:
    asked after its instant, it has no next fire."""

    text: str
    instant: float

    def next_after(self, ts: float) -> float | None:
        return self.instant if ts < self.instant else None


@dataclass(frozen=True, slots=True)
class WindowedSchedule:
    """`inner`'s fires from `start` (inclusive) to `end` (inclusive); either may be open."""

    inner: Schedule
    start: float | None
    end: float | None

    @property
    def text(self) -> str:
        return self.inner.text

    def next_after(self, ts: float) -> float | None:
        if self.start is not None and ts < self.start:
            ts = math.nextafter(self.start, -math.inf)  # so a fire at `start` itself counts
        found = self.inner.next_after(ts)
        if found is None or (self.end is not None and found > self.end):
            return None
        return found

