"""Schedules against croniter: a hypothesis sweep over random expressions in UTC (the pure
schedule tests are in tests/unit/test_cronexpr.py)."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import cron_expressions
from torchd.core.schedule.cronexpr import parse_schedule, upcoming

UTC_ZONE = ZoneInfo("UTC")
CRONITER_SAME_BOUNDS = re.compile(r"(?<![0-9])([0-9]+)-\1(?:/[0-9]+)?(?![0-9])")
SUNDAY_TO_SUNDAY = re.compile(r"(?<![0-9])7-0(?:/[0-9]+)?(?![0-9])")
JAN_1_2026 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def _for_croniter(expression: str) -> str:
    """A one-value range such as '5-5', '5-5/2' or, in the day of week, '7-0' (Sunday to
    Sunday) as its value: croniter reads those as '*'."""
    fields = CRONITER_SAME_BOUNDS.sub(r"\1", expression).split()
    fields[5] = SUNDAY_TO_SUNDAY.sub("0", fields[5])
    return " ".join(fields)


def _croniter_fires(expression: str, start: float, count: int) -> list[float]:
    oracle = croniter(_for_croniter(expression), datetime.fromtimestamp(start, UTC),
                      ret_type=float, second_at_beginning=True)
    return [oracle.get_next(float) for _ in range(count)]


@settings(max_examples=300, deadline=None)
@given(expression=cron_expressions(day_star_steps=False),
       start=st.integers(0, 60 * 366 * 86400))
def test_matches_croniter_in_utc(expression: str, start: int) -> None:
    """croniter, written independently, agrees on the next 50 fires from anywhere in
    1970-2030. Two croniter quirks are kept out of its way: it reads a day field such as
    '*/2' as restricted where Vixie cron does not (so none are drawn here; the enumeration
    test covers them), and it reads a one-value range as '*' (see _for_croniter)."""
    expected = _croniter_fires(expression, start, 50)
    assert upcoming(parse_schedule(expression, UTC_ZONE), start, 50) == expected


def test_day_of_week_ranges_ending_on_sunday_match_croniter() -> None:
    """Every range from a weekday to Sunday (SUN, 0 or 7), with and without each step, fires
    as croniter has it (it reads the Sunday as 7 too)."""
    starts = ["MON", "Tue", "wed", "THU", "Fri", "SAT", *map(str, range(1, 7))]
    steps = ["", *(f"/{n}" for n in range(1, 8))]
    for first in starts:
        for last, step in itertools.product(("SUN", "Sun", "0", "7"), steps):
            expression = f"0 0 12 * * {first}-{last}{step}"
            fires = upcoming(parse_schedule(expression, UTC_ZONE), JAN_1_2026, 15)
            assert fires == _croniter_fires(expression, JAN_1_2026, 15), expression


@pytest.mark.parametrize(("template", "low", "high"), [
    ("{} * * * * *", 0, 59),
    ("0 {} * * * *", 0, 59),
    ("0 0 {} * * *", 0, 23),
    ("0 0 0 {} * *", 1, 31),
    ("0 0 0 1 {} *", 1, 12),
    ("0 0 0 * * {}", 0, 7),
], ids=["second", "minute", "hour", "day-of-month", "month", "day-of-week"])
def test_every_wrapping_range_matches_croniter(template: str, low: int, high: int) -> None:
    """Every range that wraps around ('22-2', 'Nov-Mar' as '11-3'), in each field, fires
    as croniter has it: from its start to the field's top, then from the bottom."""
    for first, last in itertools.combinations(range(high, low - 1, -1), 2):
        expression = template.format(f"{first}-{last}")
        fires = upcoming(parse_schedule(expression, UTC_ZONE), JAN_1_2026, 30)
        assert fires == _croniter_fires(expression, JAN_1_2026, 30), expression


def test_names_and_steps_of_1_in_wrapping_ranges_match_croniter() -> None:
    for expression in ("0 0 0 1 Nov-Mar *", "0 0 0 1 dec-jan *", "0 0 9 * * Fri-Mon",
                       "0 0 9 * * SAT-tue", "0 0 9 * * Sun-Mon", "0 0 9 * * 7-Tue",
                       "0 0 22-2/1 * * *", "0 0 0 1 Nov-Mar/1 *", "0 0 9 * * Fri-Mon/1"):
        fires = upcoming(parse_schedule(expression, UTC_ZONE), JAN_1_2026, 30)
        assert fires == _croniter_fires(expression, JAN_1_2026, 30), expression
