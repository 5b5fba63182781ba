"""Schedules behind one method, next_after(ts): the first fire strictly after ts.

Cron expressions have six fields, seconds first (gotorch order); five fields are classic
minute cron with the second fixed at 0. Field checks are ours so that errors name the field
and the allowed range; the date arithmetic is croniter's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Protocol

from croniter import CroniterBadDateError, croniter

from torchd.durations import parse_duration
from torchd.errors import DurationError, ScheduleError

MACROS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    _Field("day-of-week", 0, 7, _DAYS, 0),
)
_TOKEN = re.compile(r"^(?P<range>\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>[0-9]+))?$")


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


@dataclass(slots=True, eq=False)
class CronSchedule:
    """A cron expression evaluated in a time zone, seconds first."""

    text: str
    expression: str  # the normalized 6-field form handed to croniter
    zone: tzinfo
    _iter: croniter = field(init=False, repr=False)
    _last_query: float = field(init=False, repr=False, default=float("nan"))
    _last_answer: float | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        start = datetime.now(self.zone)
        self._iter = croniter(self.expression, start, ret_type=float, second_at_beginning=True)

    def next_after(self, ts: float) -> float | None:
        # Tasks sharing an expression share this object and usually ask for the same
        # instant (they fired together), so the last answer is kept.
        if ts == self._last_query:
            return self._last_answer
        self._iter.set_current(datetime.fromtimestamp(ts, self.zone), force=True)
        try:
            value: float | None = self._iter.get_next(float)
        except CroniterBadDateError:
            value = None
        self._last_query, self._last_answer = ts, value
        return value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CronSchedule):
            return NotImplemented
        return (self.expression, str(self.zone)) == (other.expression, str(other.zone))

    def __hash__(self) -> int:
        return hash((self.expression, str(self.zone)))


def _check_value(token: str, spec: _Field) -> int:
    upper = token.upper()
    if spec.names and upper in spec.names:
        return spec.names.index(upper) + spec.name_base
    if not token.isdigit():
        allowed = f" or a name ({', '.join(spec.names)})" if spec.names else ""
        raise ScheduleError(
            f"{spec.name} field: '{token}' is not a number{allowed}"
        )
    number = int(token)
    if not spec.low <= number <= spec.high:
        raise ScheduleError(
            f"{spec.name} field '{token}' is out of range {spec.low}-{spec.high}"
        )
    return number


def _check_field(text: str, spec: _Field) -> set[int]:
    """Validate one field and return the values it allows."""
    values: set[int] = set()
    for part in text.split(","):
        match = _TOKEN.match(part)
        if match is None:
            raise ScheduleError(f"{spec.name} field: cannot read '{part}'")
        step_text = match.group("step")
        step = int(step_text) if step_text is not None else 1
        if step == 0:
            raise ScheduleError(f"{spec.name} field: step in '{part}' must be at least 1")
        span = match.group("range")
        if span == "*":
            low, high = spec.low, spec.high
        else:
            bounds = [_check_value(v, spec) for v in span.split("-")]
            if len(bounds) == 2 and bounds[0] > bounds[1]:
                raise ScheduleError(f"{spec.name} field: range '{span}' runs backwards")
            low = bounds[0]
            high = bounds[-1] if len(bounds) == 2 or step_text is None else spec.high
        values.update(range(low, high + 1, step))
    return values


_LONGEST_MONTH = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31,
                  11: 30, 12: 31}


def normalize_cron(text: str) -> str:
    """Validate a 5- or 6-field expression and return the 6-field form (seconds first)."""
    fields = text.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ScheduleError(
            f"'{text}' has {len(fields)} fields; expected 6 "
            "(second minute hour day-of-month month day-of-week) or 5 (classic cron)"
        )
    allowed = [_check_field(part, spec) for part, spec in zip(fields, _FIELDS, strict=True)]
    days, months = allowed[3], allowed[4]
    # With day-of-week '*', only day-of-month decides; it can name days no chosen month
    # has (Feb 30). A restricted day-of-week always matches some day (the OR rule).
    if fields[5] == "*" and not any(d <= _LONGEST_MONTH[m] for m in months for d in days):
        raise ScheduleError(f"'{text}' can never fire (no matching date)")
    return " ".join(fields)


def parse_schedule(text: str, zone: tzinfo) -> Schedule:
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
    if lowered.startswith("@"):
        if lowered not in MACROS:
            raise ScheduleError(
                f"unknown macro '{stripped}'; known: {', '.join(sorted(MACROS))}, "
                "@every <duration>, @reboot"
            )
        expression = MACROS[lowered]
    else:
        expression = normalize_cron(stripped)
    try:
        schedule = CronSchedule(text=stripped, expression=expression, zone=zone)
    except ValueError as exc:  # croniter's errors derive from ValueError
        raise ScheduleError(f"'{stripped}': {exc}") from None
    return schedule


def upcoming(schedule: Schedule, after: float, count: int) -> list[float]:
    """The next `count` fire times after `after` (fewer if the schedule ends)."""
    times: list[float] = []
    cursor: float | None = after
    while cursor is not None and len(times) < count:
        cursor = schedule.next_after(cursor)
        if cursor is not None:
            times.append(cursor)
    return times
