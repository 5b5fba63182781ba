"""Cron expression syntax: six fields, seconds first, read into the values each allows.

Five fields are classic minute cron with the second fixed at 0. Errors name the field and
the allowed range. Day matching follows Vixie cron's man page: when both day-of-month and
day-of-week are restricted (neither starts with '*'), a day matches if either does;
otherwise both must match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from torchd.core.errors import ScheduleError
from torchd.core.fastinit import fast_constructor

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
_LONGEST_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0
    high_is_low: bool = False  # day-of-week: 7 is Sunday, as 0 is


_FIELDS = (
    _Field("second", 0, 59),
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    _Field("day-of-week", 0, 7, _DAYS, 0, high_is_low=True),
)
_TOKEN = re.compile(r"^(?P<range>\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>[0-9]+))?$")


@dataclass(frozen=True, slots=True, kw_only=True)
class CronFields:
    """What a 6-field expression allows. Sorted tuples for the time of day; bit masks for
    the calendar (bit n set = value n allowed)."""

    expression: str  # normalized, 6 fields
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: int  # bits 1-31
    months: int  # bits 1-12
    weekdays: tuple[int, ...]  # 0-6, Sunday = 0 (7 folded onto 0)
    either_day: bool  # both day fields restricted: either may match (Vixie's OR rule)

    @property
    def every_hour(self) -> bool:
        """The hour field allows every hour: such schedules follow elapsed time across
        DST changes instead of wall-clock time."""
        return len(self.hours) == 24

    @property
    def all_weekdays(self) -> bool:
        return len(self.weekdays) == 7


_new_cron_fields = fast_constructor(CronFields)  # one per distinct expression at load


def _check_value(token: str, spec: _Field) -> int:
    upper = token.upper()
    if spec.names and upper in spec.names:
        return spec.names.index(upper) + spec.name_base
    if not token.isdigit():
        allowed = f" or a name ({', '.join(spec.names)})" if spec.names else ""
        raise ScheduleError(f"{spec.name} field: '{token}' is not a number{allowed}")
    number = int(token)
    if not spec.low <= number <= spec.high:
        raise ScheduleError(
            f"{spec.name} field '{token}' is out of range {spec.low}-{spec.high}"
        )
    return number


def _field_values(text: str, spec: _Field) -> set[int]:
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
            low = bounds[0]
            high = bounds[-1] if len(bounds) == 2 or step_text is None else spec.high
            if spec.high_is_low and high == spec.low < low:
                high = spec.high  # MON-SUN, 5-0: a range that ends on Sunday ends at 7
            if high < low:
                values.update(_wrapped(part, low, high, step, spec))
                continue
        values.update(range(low, high + 1, step))
    return values


def _wrapped(part: str, low: int, high: int, step: int, spec: _Field) -> list[int]:
    """A range that wraps around (Nov-Mar, 22-2): its start to the field's top, then the
    field's bottom to its end, as croniter reads it. With a step, croniter is off by one
    at the wrap for about half the ranges, so those are refused, naming the values."""
    if step == 1:
        return [*range(low, spec.high + 1), *range(spec.low, high + 1)]
    cycle = spec.high - spec.low + (0 if spec.high_is_low else 1)
    values = [spec.low + (low - spec.low + k) % cycle
              for k in range(0, (high - low) % cycle + 1, step)]
    named = part[0].isalpha()
    listing = ",".join(spec.names[v - spec.name_base].title() if named else str(v)
                       for v in values)
    raise ScheduleError(f"{spec.name} field: range '{part}' wraps around and has a step, "
                        "which cron implementations read differently; list the values "
                        f"instead, e.g. '{listing}'")


@lru_cache(maxsize=4096)
def _read_field(text: str, index: int) -> tuple[tuple[int, ...], int]:
    """A field's allowed values, sorted and as a bit mask (day-of-week 7 read as 0).
    Remembered: big task files repeat the same field texts over and over."""
    spec = _FIELDS[index]
    values = _field_values(text, spec)
    if spec.high_is_low and spec.high in values:
        values = (values - {spec.high}) | {spec.low}
    mask = 0
    for value in values:
        mask |= 1 << value
    return tuple(sorted(values)), mask


@lru_cache(maxsize=1024)
def _date_exists(days: int, month_mask: int) -> bool:
    """Whether a chosen day of the month exists in a chosen month (no February 30th).
    Under the AND rule that is all a date needs: any existing date falls on every weekday
    in some year. Under the OR rule every month has the chosen weekdays."""
    return any(days & ((2 << _LONGEST_MONTH[m]) - 2)
               for m in range(1, 13) if month_mask >> m & 1)


def read_cron(text: str) -> CronFields:
    """Validate a 5- or 6-field expression (or a macro's expansion) into its values."""
    fields = text.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ScheduleError(
            f"'{text}' has {len(fields)} fields; expected 6 "
            "(second minute hour day-of-month month day-of-week) or 5 (classic cron)"
        )
    # Six plain calls, not a loop: this runs once per task at load (10,000s of tasks).
    seconds = _read_field(fields[0], 0)[0]
    minutes = _read_field(fields[1], 1)[0]
    hours = _read_field(fields[2], 2)[0]
    days = _read_field(fields[3], 3)[1]
    month_mask = _read_field(fields[4], 4)[1]
    weekdays = _read_field(fields[5], 5)[0]
    either_day = not fields[3].startswith("*") and not fields[5].startswith("*")
    if not either_day and not _date_exists(days, month_mask):
        raise ScheduleError(f"'{text}' can never fire (no matching date)")
    return _new_cron_fields(
        expression=" ".join(fields),
        seconds=seconds,
        minutes=minutes,
        hours=hours,
        days_of_month=days,
        months=month_mask,
        weekdays=weekdays,
        either_day=either_day,
    )
