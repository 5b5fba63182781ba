"""Cron arithmetic in real zones across DST changes: hand-checked cases. The hypothesis
sweeps against a second-by-second reference are in
tests/integration/test_cron_time_zones_sweeps.py."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from torchd.core.schedule.cronexpr import parse_schedule, upcoming

NEW_YORK, LONDON = ZoneInfo("America/New_York"), ZoneInfo("Europe/London")


def _local(zone: ZoneInfo, fires: list[float]) -> list[str]:
    return [datetime.fromtimestamp(t, zone).isoformat() for t in fires]


def _from(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@pytest.mark.parametrize(("zone", "expression", "after", "expected"), [
    # Spring forward, New York 2026-03-08 02:00 EST -> 03:00 EDT: 02:30 never shows.
    (NEW_YORK, "0 30 2 * * *", "2026-03-07T12:00:00-05:00",
     ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]),
    # Every fire inside the gap becomes one fire at its end; 03:00 itself is the same fire.
    (NEW_YORK, "0 0,15,30,45 2,3 * * *", "2026-03-08T01:00:00-05:00",
     ["2026-03-08T03:00:00-04:00", "2026-03-08T03:15:00-04:00", "2026-03-08T03:30:00-04:00"]),
    # Hourly follows elapsed time: one hour between fires, nothing extra at the gap.
    (NEW_YORK, "0 30 * * * *", "2026-03-08T00:45:00-05:00",
     ["2026-03-08T01:30:00-05:00", "2026-03-08T03:30:00-04:00", "2026-03-08T04:30:00-04:00"]),
    # Fall back, New York 2026-11-01 02:00 EDT -> 01:00 EST: 01:30 shows twice, fires once.
    (NEW_YORK, "0 30 1 * * *", "2026-10-31T12:00:00-04:00",
     ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
    # Hourly fires in both showings of the repeated hour.
    (NEW_YORK, "0 0 * * * *", "2026-11-01T00:30:00-04:00",
     ["2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"]),
    # Asked from inside the second showing: the repeated fires are not due again.
    (NEW_YORK, "0 */20 1,2 * * *", "2026-11-01T01:10:00-05:00",
     ["2026-11-01T02:00:00-05:00", "2026-11-01T02:20:00-05:00"]),
    # London 2026-03-29 01:00 GMT -> 02:00 BST, and 2026-10-25 02:00 BST -> 01:00 GMT.
    (LONDON, "0 30 1 * * *", "2026-03-28T12:00:00+00:00",
     ["2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00"]),
    (LONDON, "0 30 1 * * *", "2026-10-24T12:00:00+01:00",
     ["2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00"]),
])
def test_dst_rules(zone: ZoneInfo, expression: str, after: str, expected: list[str]) -> None:
    fires = upcoming(parse_schedule(expression, zone), _from(after), len(expected))
    assert _local(zone, fires) == expected


def test_a_year_of_daily_fires_in_new_york_is_365_fires() -> None:
    """Once a day, every day, DST or not: no day lost, none doubled."""
    schedule = parse_schedule("0 30 1 * * *", NEW_YORK)
    fires = upcoming(schedule, _from("2026-01-01T00:00:00-05:00"), 400)
    in_2026 = [t for t in fires if datetime.fromtimestamp(t, NEW_YORK).year == 2026]
    assert len(in_2026) == 365
    assert len({datetime.fromtimestamp(t, NEW_YORK).date() for t in in_2026}) == 365



@pytest.mark.parametrize(("hours", "elapsed"), [
    ("*", True), ("*/1", True), ("0-23", True), ("0-23/1", True), ("0-11,12-23", True),
    ("2-1", True), (",".join(str(h) for h in range(24)), True),
    ("0-22", False), ("1,2", False), ("0-11,12-22", False),
])
def test_elapsed_time_is_decided_by_the_set_of_hours(hours: str, elapsed: bool) -> None:
    """An hour field that allows all 24 hours, however written, fires in both showings of
    the repeated hour; any other fires once."""
    fires = upcoming(parse_schedule(f"0 0 {hours} * * *", NEW_YORK),
                     _from("2026-11-01T00:30:00-04:00"), 2)
    second = "2026-11-01T01:00:00-05:00" if elapsed else "2026-11-01T02:00:00-05:00"
    assert _local(NEW_YORK, fires) == ["2026-11-01T01:00:00-04:00", second]
