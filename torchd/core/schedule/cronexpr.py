"""Schedules behind one method, next_after(ts): the first fire strictly after ts.

Cron arithmetic is done here over the values cronfields reads, in the task's zone:
- a wall time that occurs once fires then;
- a wall time skipped by a spring-forward gap fires once, at the instant the gap ends;
- a wall time repeated by a fall-back fires once, on its first showing;
- except schedules whose hour field allows every hour: they follow elapsed time, so they
  skip the gap and fire again in the repeated hour, as an interval timer would.
A task's `dst` policy (DstPolicy) replaces these rules for its schedule: `skipped:
run-after|skip` for wall times in a gap, `repeated: first|both` for those in a repeated
hour, applied to every cron schedule alike (no every-hour exception once it is given).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import date, tzinfo
from enum import StrEnum
from typing import Protocol

from torchd.core.durations import parse_duration
from torchd.core.errors import DurationError, ScheduleError
from torchd.core.schedule.cronfields import MACROS, CronFields, read_cron
from torchd.core.schedule.localtime import (
    change_between,
    first_instant,
    fixed_offset,
    offset_at,
    repeat_end,
    wall_date,
    wall_offsets,
    wall_seconds,
)

SEARCH_YEARS = 30  # past this a schedule counts as ended (the calendar check rules out
#                    schedules that can never fire; 28 years cover every weekday/date mix)
_MONTH_LENGTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# _WEEKDAY_DAYS[k]: the days of a month (bits 1-31) that fall k weekdays after the 1st.
_WEEKDAY_DAYS = tuple(sum(1 << d for d in range(k + 1, 32, 7)) for k in range(7))


class Skipped(StrEnum):
    """What a wall time that a spring-forward gap skips does."""

    RUN_AFTER = "run-after"  # fires once, at the instant the gap ends
    SKIP = "skip"  # does not fire that day


class Repeated(StrEnum):
    """What a wall time that a fall-back repeats does."""

    FIRST = "first"  # fires on its first showing only
    BOTH = "both"  # fires on both showings


@dataclass(frozen=True, slots=True)
class DstPolicy:
    """A task's `dst:` policy. Not given (None on the schedule): run-after and first,
    except schedules whose hour field allows every hour, which follow elapsed time."""

    skipped: Skipped = Skipped.RUN_AFTER
    repeated: Repeated = Repeated.FIRST

    @property
    def text(self) -> str:
        return f"skipped: {self.skipped}, repeated: {self.repeated}"


class Schedule(Protocol):
    """What the scheduler needs of a schedule."""

    @property
    def text(self) -> str: ...

    def next_after(self, ts: float) -> float | None:
        """Epoch seconds of the first fire strictly after ts, or None if there is none."""


@dataclass(frozen=True, slots=True)
class RebootSchedule:
    """Fires once, when the daemon starts."""

    text: str = "@reboot"

    def next_after(self, ts: float) -> float | None:
        return None


@dataclass(frozen=True, slots=True)
class EverySchedule:
    """Fires every `interval` seconds, counted from when the task was (re)loaded."""

    text: str
    interval: float

    def next_after(self, ts: float) -> float | None:
        return ts + self.interval


@dataclass(frozen=True, slots=True)
class RandomSchedule:
    """Fires after a random interval between `low` and `high` seconds, drawn anew after each
    fire (so hosts sharing a task file spread out). The answer for one `ts` is remembered:
    the scheduler may ask twice."""

    text: str
    low: float
    high: float
    _answers: dict[float, float] = field(default_factory=dict, compare=False, repr=False)

    def next_after(self, ts: float) -> float | None:
        answer = self._answers.get(ts)
        if answer is None:
            self._answers.clear()
            answer = self._answers[ts] = ts + random.uniform(self.low, self.high)  # noqa: S311 - spreading load, not security
        return answer


def _month_length(year: int, month: int) -> int:
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _MONTH_LENGTH[month]


@dataclass(slots=True, eq=False)
class CronSchedule:
    """A cron expression evaluated in a time zone."""

    text: str
    fields: CronFields
    zone: tzinfo
    dst: DstPolicy | None = None
    _last_query: float = field(init=False, repr=False, default=float("nan"))
    _last_answer: float | None = field(init=False, repr=False, default=None)
    _fixed_offset: int | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._fixed_offset = fixed_offset(self.zone)

    @property
    def expression(self) -> str:
        return self.fields.expression

    def next_after(self, ts: float) -> float | None:
        # Tasks sharing an expression share this object and usually ask for the same
        # instant (they fired together), so the last answer is kept.
        if ts == self._last_query:
            return self._last_answer
        if self._fixed_offset is not None:
            offset = self._fixed_offset
            found = self._next_match(math.floor(ts + offset) + 1)
            answer = None if found is None else float(found - offset)
        else:
            answer = self._next_in_zone(ts)
        self._last_query, self._last_answer = ts, answer
        return answer

    def _next_in_zone(self, ts: float) -> float | None:
        """The policy's rule. Fires of (skip, both) are exactly the instants whose wall
        time matches (elapsed time); (run-after, both) adds the ends of gaps, that is the
        union of the elapsed and first-showing answers."""
        dst = self.dst
        if dst is None:
            if self.fields.every_hour:
                return self._next_elapsed(ts)
            return self._next_wall_clock(ts, skip_gaps=False)
        skip_gaps = dst.skipped is Skipped.SKIP
        if dst.repeated is Repeated.FIRST:
            return self._next_wall_clock(ts, skip_gaps=skip_gaps)
        elapsed = self._next_elapsed(ts)
        if skip_gaps:
            return elapsed
        first = self._next_wall_clock(ts, skip_gaps=False)
        if first is None or elapsed is None:
            return first if elapsed is None else elapsed
        return min(first, elapsed)

    def _next_elapsed(self, ts: float) -> float | None:
        """Instants whose wall time matches: within one offset the mapping is a shift;
        at an offset change, continue from the change with the new offset."""
        cursor, strict = ts, True
        for _ in range(SEARCH_YEARS * 4):
            offset = offset_at(self.zone, cursor)
            wall = cursor + offset
            found = self._next_match(math.floor(wall) + 1 if strict else math.ceil(wall))
            if found is None:
                return None
            candidate = found - offset
            change = change_between(self.zone, math.floor(cursor), candidate, offset)
            if change is None:
                return float(candidate)
            cursor, strict = change, False
        return None

    def _next_wall_clock(self, ts: float, *, skip_gaps: bool) -> float | None:
        """Each matching wall time once, at its first showing (or the end of its gap,
        unless `skip_gaps`).
        That instant never decreases as the wall time grows, so the first matching wall
        time after ts's whose instant is after ts is the answer."""
        start = math.floor(ts + offset_at(self.zone, ts)) + 1
        end_of_repeat = repeat_end(self.zone, ts)
        if end_of_repeat is not None:  # everything in the repeated hour fired on its first showing
            start = max(start, math.ceil(end_of_repeat))
        found = self._next_match(start)
        while found is not None:
            if skip_gaps:
                before, after = wall_offsets(self.zone, found)
                if before < after:  # in a gap: this wall time does not show today
                    found = self._next_match(found + 1)
                    continue
            instant = first_instant(self.zone, found)
            if instant > ts:
                return float(instant)
            found = self._next_match(found + 1)
        return None

    def _next_match(self, wall: int) -> int | None:
        """The first wall time at or after `wall` that the fields allow."""
        day, time_of_day = wall_date(wall)
        year, month, mday = day.year, day.month, day.day
        months = self.fields.months
        last_year = min(year + SEARCH_YEARS, 9999)
        while year < last_year:
            ahead = months >> month  # the allowed months from this one on, this year
            if not ahead:
                year, month, mday, time_of_day = year + 1, 1, 1, 0
                continue
            skip = (ahead & -ahead).bit_length() - 1
            if skip:
                month, mday, time_of_day = month + skip, 1, 0
            days = self._days_in(year, month) >> mday
            while days:
                skip = (days & -days).bit_length() - 1
                if skip:
                    mday, days, time_of_day = mday + skip, days >> skip, 0
                found = self._next_time_of_day(time_of_day)
                if found is not None:
                    return wall_seconds(year, month, mday, found)
                mday, days, time_of_day = mday + 1, days >> 1, 0
            month, mday, time_of_day = month + 1, 1, 0
            if month > 12:
                month, year = 1, year + 1
        return None

    def _days_in(self, year: int, month: int) -> int:
        """The days of a month the day fields allow, as bits 1-31."""
        fields = self.fields
        existing = (1 << (_month_length(year, month) + 1)) - 2
        if fields.all_weekdays and not fields.either_day:
            return fields.days_of_month & existing
        first = (date(year, month, 1).weekday() + 1) % 7  # cron numbering: Sunday = 0
        on_weekdays = 0
        for weekday in fields.weekdays:
            on_weekdays |= _WEEKDAY_DAYS[(weekday - first) % 7]
        if fields.either_day:
            return (fields.days_of_month | on_weekdays) & existing
        return fields.days_of_month & on_weekdays & existing

    def _next_time_of_day(self, second_of_day: int) -> int | None:
        """The first second of the day at or after the given one the fields allow."""
        fields = self.fields
        hours, minutes, seconds = fields.hours, fields.minutes, fields.seconds
        hour, rest = divmod(second_of_day, 3600)
        minute, second = divmod(rest, 60)
        h = bisect_left(hours, hour)
        if h < len(hours) and hours[h] == hour:
            m = bisect_left(minutes, minute)
            if m < len(minutes) and minutes[m] == minute:
                s = bisect_left(seconds, second)
                if s < len(seconds):
                    return hour * 3600 + minute * 60 + seconds[s]
                m += 1
            if m < len(minutes):
                return hour * 3600 + minutes[m] * 60 + seconds[0]
            h += 1
        if h < len(hours):
            return hours[h] * 3600 + minutes[0] * 60 + seconds[0]
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CronSchedule):
            return NotImplemented
        return ((self.expression, str(self.zone), self.dst)
                == (other.expression, str(other.zone), other.dst))

    def __hash__(self) -> int:
        return hash((self.expression, str(self.zone), self.dst))


def parse_schedule(text: str, zone: tzinfo, dst: DstPolicy | None = None) -> Schedule:
    """Turn a schedule string into a Schedule, or raise ScheduleError saying what is wrong."""
    stripped = text.strip()
    if not stripped:
        raise ScheduleError("is empty")
    lowered = stripped.lower()
    if lowered == "@reboot":
        return RebootSchedule()
    if lowered.startswith("@every"):
        arg = stripped[len("@every"):].strip()
        try:
            interval = parse_duration(arg)
        except DurationError as exc:
            raise ScheduleError(f"@every: {exc}") from None
        if interval < 1:
            raise ScheduleError(f"@every: interval '{arg}' is below the 1s minimum")
        return EverySchedule(text=stripped, interval=interval)
    if lowered.startswith("@random"):
        return _random(stripped)
    if lowered.startswith("@"):
        if lowered not in MACROS:
            raise ScheduleError(
                f"unknown macro '{stripped}'; known: {', '.join(sorted(MACROS))}, "
                "@every <duration>, @random <min> <max>, @reboot"
            )
        return CronSchedule(text=stripped, fields=read_cron(MACROS[lowered]), zone=zone,
                            dst=dst)
    return CronSchedule(text=stripped, fields=read_cron(stripped), zone=zone, dst=dst)


def _random(text: str) -> RandomSchedule:
    bounds = text[len("@random"):].split()
    if len(bounds) != 2:
        raise ScheduleError("@random: give a lower and an upper interval, e.g. '@random 1m 5m'")
    try:
        low, high = (parse_duration(b) for b in bounds)
    except DurationError as exc:
        raise ScheduleError(f"@random: {exc}") from None
    if low < 1:
        raise ScheduleError(f"@random: interval '{bounds[0]}' is below the 1s minimum")
    if high < low:
        raise ScheduleError(f"@random: '{bounds[1]}' is shorter than '{bounds[0]}'")
    return RandomSchedule(text=text, low=low, high=high)


def upcoming(schedule: Schedule, after: float, count: int) -> list[float]:
    """The next `count` fire times after `after` (fewer if the schedule ends)."""
    times: list[float] = []
    cursor: float | None = after
    while cursor is not None and len(times) < count:
        cursor = schedule.next_after(cursor)
        if cursor is not None:
            times.append(cursor)
    return times
