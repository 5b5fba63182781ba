"""Schedules against croniter: a hypothesis sweep over random expressions in UTC (the pure
schedule tests are in tests/unit/test_cronexpr.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.strategies import cron_expressions
from torchd.core.schedule.cronexpr import parse_schedule, upcoming

UTC_ZONE = ZoneInfo("UTC")
CRONITER_SAME_BOUNDS = re.compile(r"(?<![0-9])([0-9]+)-\1(?:/[0-9]+)?(?![0-9])")


@settings(max_examples=300, deadline=None)
@given(expression=cron_expressions(day_star_steps=False),
       start=st.integers(0, 60 * 366 * 86400))
def test_matches_croniter_in_utc(expression: str, start: int) -> None:
    """croniter, written independently, agrees on the next 50 fires from anywhere in
    1970-2030. Two croniter quirks are kept out of its way: it reads a day field such as
    '*/2' as restricted where Vixie cron does not (so none are drawn here; the enumeration
    test covers them), and it reads a one-value range such as '5-5' or '5-5/2' as '*'
    (so those are handed to it as '5')."""
    oracle = croniter(CRONITER_SAME_BOUNDS.sub(r"\1", expression),
                      datetime.fromtimestamp(start, UTC), ret_type=float,
                      second_at_beginning=True)
    expected = [oracle.get_next(float) for _ in range(50)]
    assert upcoming(parse_schedule(expression, UTC_ZONE), start, 50) == expected
