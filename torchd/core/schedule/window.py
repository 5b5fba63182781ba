"""Keep-alive windows of daemon-type tasks: `window: {schedule: CRON, for: DURATION}`.

A window opens at each fire of its schedule and closes `for` seconds later. A window that
opens again before it has closed is extended: it stays open until `for` after the last
opening that came while it was open (so overlapping windows are one long window)."""

from __future__ import annotations

from dataclasses import dataclass

from torchd.core.schedule.cronexpr import Schedule

_MAX_EXTENSIONS = 10_000  # a window that never closes (`* * * * * *` for 2s) stops here


@dataclass(frozen=True, slots=True)
class WindowState:
    open: bool
    closes_at: float | None  # while open
    next_opening: float | None  # the first opening after this window (or now), if any


@dataclass(frozen=True, slots=True)
class KeepWindow:
    schedule: Schedule
    duration: float  # seconds

    @property
    def text(self) -> str:
        return f"{self.schedule.text} for {self.duration:g}s"

    def state_at(self, now: float) -> WindowState:
        """Whether the window is open at `now`; when it closes; when it opens next."""
        opening = self.schedule.next_after(now - self.duration)  # the first with end > now
        if opening is None or opening > now:
            return WindowState(open=False, closes_at=None, next_opening=opening)
        closes = opening + self.duration
        following = self.schedule.next_after(opening)
        for _ in range(_MAX_EXTENSIONS):
            if following is None or following > closes:
                break
            closes = following + self.duration
            following = self.schedule.next_after(following)
        return WindowState(open=True, closes_at=closes, next_opening=following)
