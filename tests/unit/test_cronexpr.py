"""Schedules: seconds-first cron, checked against a brute-force reference (the comparison
with croniter over random expressions is in tests/integration/test_cronexpr_sweeps.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.oracle import field_sets
from torchd.core.errors import ScheduleError
from torchd.core.schedule.cronexpr import (
    EverySchedule,
    RebootSchedule,
    parse_schedule,
    upcoming,
)
from torchd.core.schedule.cronfields import read_cron

UTC_ZONE = ZoneInfo("UTC")
START = datetime(2026, 11, 22, 0, 0, 0, tzinfo=UTC).timestamp()


def reference_fires(expression: str, start: datetime, days: int,
                    limit: int = 3000) -> list[datetime]:
    """Vixie-cron semantics by plain enumeration: every day in the window, every matching
    hour, minute and second. If both day fields are restricted, either may match (OR);
    otherwise both must."""
    fields = expression.split()
    sets = field_sets(expression)
    dow = {d % 7 for d in sets[5]}
    dom_star, dow_star = fields[3].startswith("*"), fields[5].startswith("*")
    found = []
    for day_offset in range(days + 1):
        day = start + timedelta(days=day_offset)
        weekday = (day.weekday() + 1) % 7  # Python Monday=0 -> cron Sunday=0
        dom_ok, dow_ok = day.day in sets[3], weekday in dow
        day_ok = (dom_ok or dow_ok) if not (dom_star or dow_star) else (dom_ok and dow_ok)
        if not (day_ok and day.month in sets[4]):
            continue
        for hour in sorted(sets[2]):
            for minute in sorted(sets[1]):
                for second in sorted(sets[0]):
                    t = day.replace(hour=hour, minute=minute, second=second)
                    if t > start:
                        found.append(t)
                    if len(found) >= limit:
                        return found
    return found


@pytest.mark.parametrize("expression", [
    "*/7 * * * * *",
    "5,10-12 */3 * * * *",
    "0 0 */6 * * *",
    "30 15 10 1 * MON",  # day-of-month OR day-of-week
    "0 0 0 * * SAT,SUN",
    "0 */20 3-5 13 * 5",  # Friday or the 13th
    "15 0 0 1,15 JAN-MAR *",
    "0 0 12 * * 7",  # 7 is Sunday too
    "0 0 0 30 2 MON",  # no February 30th, but the Mondays of February (OR rule)
    "0 0 6 31 * *",  # only the months that have a 31st
    "0 0 0 * * MON-SUN",  # a range ending on Sunday ends at 7
    "0 0 9 13 * Fri-Sun",
    "0 0 0 * * Mon-Sun/2",
    "0 30 22-2 * Nov-Feb Fri-Mon",  # ranges that wrap around
    "0 50-5 * 28-3 * *",
])
def test_matches_reference_evaluator(expression: str) -> None:
    """Our arithmetic agrees with a plain enumeration (120 days or 3,000 fires)."""
    start = datetime(2026, 11, 20, tzinfo=UTC)
    expected = reference_fires(expression, start, 120)
    schedule = parse_schedule(expression, UTC_ZONE)
    got = upcoming(schedule, start.timestamp(), len(expected) + 1)
    assert [datetime.fromtimestamp(t, UTC) for t in got[: len(expected)]] == expected
    assert expected, "the window should hold at least one fire"


def test_five_fields_fire_at_second_zero() -> None:
    assert read_cron("*/15 * * * *").expression == "0 */15 * * * *"
    schedule = parse_schedule("*/15 * * * *", UTC_ZONE)
    fires = upcoming(schedule, START + 1, 3)
    assert [datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S") for t in fires] == [
        "00:15:00", "00:30:00", "00:45:00"]


@pytest.mark.parametrize(("macro", "first"), [
    ("@hourly", "2026-11-22T01:00:00"),
    ("@daily", "2026-11-23T00:00:00"),
    ("@weekly", "2026-11-29T00:00:00"),  # Sunday
    ("@monthly", "2026-12-01T00:00:00"),
    ("@yearly", "2027-01-01T00:00:00"),
])
def test_macros(macro: str, first: str) -> None:
    schedule = parse_schedule(macro, UTC_ZONE)
    (fire,) = upcoming(schedule, START, 1)
    assert datetime.fromtimestamp(fire, UTC).replace(tzinfo=None).isoformat() == first


def test_every_counts_from_the_previous_fire() -> None:
    schedule = parse_schedule("@every 1h30m", UTC_ZONE)
    assert schedule == EverySchedule(text="@every 1h30m", interval=5400.0)
    assert upcoming(schedule, 100.0, 2) == [5500.0, 10900.0]


def test_reboot_has_no_timetable() -> None:
    schedule = parse_schedule("@reboot", UTC_ZONE)
    assert isinstance(schedule, RebootSchedule)
    assert schedule.next_after(START) is None


def test_time_zone_is_applied() -> None:
    schedule = parse_schedule("0 0 9 * * *", ZoneInfo("Asia/Tokyo"))
    (fire,) = upcoming(schedule, START, 1)
    assert datetime.fromtimestamp(fire, UTC).hour == 0  # 09:00 JST is 00:00 UTC


def test_leap_day_schedule_is_valid() -> None:
    schedule = parse_schedule("0 0 0 29 2 *", UTC_ZONE)
    (fire,) = upcoming(schedule, START, 1)
    assert datetime.fromtimestamp(fire, UTC).date().isoformat() == "2028-02-29"


@pytest.mark.parametrize(("text", "message"), [
    ("61 * * * * *", "second field '61' is out of range 0-59"),
    ("* 60 * * * *", "minute field '60' is out of range 0-59"),
    ("* * 24 * * *", "hour field '24' is out of range 0-23"),
    ("* * * 0 * *", "day-of-month field '0' is out of range 1-31"),
    ("* * * * 13 *", "month field '13' is out of range 1-12"),
    ("* * * * * 8", "day-of-week field '8' is out of range 0-7"),
    ("*/0 * * * * *", "second field: step in '*/0' must be at least 1"),
    ("0 0 0 * * Fri-Mon/2", "day-of-week field: range 'Fri-Mon/2' wraps around and has a "
     "step, which cron implementations read differently; list the values instead, e.g. "
     "'Fri,Sun'"),
    ("0 0 0 * nov-mar/2 *", "month field: range 'nov-mar/2' wraps around and has a step, "
     "which cron implementations read differently; list the values instead, e.g. "
     "'Nov,Jan,Mar'"),
    ("0 0 22-3/2 * * *", "hour field: range '22-3/2' wraps around and has a step, which "
     "cron implementations read differently; list the values instead, e.g. '22,0,2'"),
    ("0 50-10/15 * * * *", "minute field: range '50-10/15' wraps around and has a step, "
     "which cron implementations read differently; list the values instead, e.g. '50,5'"),
    ("* * * 31 4 *", "'* * * 31 4 *' can never fire (no matching date)"),
    ("0 0 0 30,31 2 *", "'0 0 0 30,31 2 *' can never fire (no matching date)"),
    ("0 0 0 31 4-6/2,9,11 *", "'0 0 0 31 4-6/2,9,11 *' can never fire (no matching date)"),
    ("@every 500ms", "@every: interval '500ms' is below the 1s minimum"),
    ("", "is empty"),
])
def test_schedule_errors(text: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(text, UTC_ZONE)
    assert str(caught.value) == message


@pytest.mark.parametrize(("field", "weekdays"), [
    ("MON-SUN", (0, 1, 2, 3, 4, 5, 6)),
    ("Fri-Sun", (0, 5, 6)),
    ("Mon-Sun/2", (0, 1, 3, 5)),  # 1, 3, 5, 7
    ("1-0/2", (0, 1, 3, 5)),
    ("Wed-7/2", (0, 3, 5)),
    ("Tue-Sun/2", (2, 4, 6)),  # 7 is not on the step
    ("SUN-SAT", (0, 1, 2, 3, 4, 5, 6)),  # at the start, Sunday is 0
    ("SUN-SUN", (0,)),
])
def test_a_day_of_week_range_ending_on_sunday_ends_at_7(field: str,
                                                        weekdays: tuple[int, ...]) -> None:
    """0 and 7 are both Sunday: SUN (or 0) ending a range is 7, not a range backwards."""
    assert read_cron(f"0 0 0 * * {field}").weekdays == weekdays


def _bits(mask: int) -> tuple[int, ...]:
    return tuple(n for n in range(32) if mask >> n & 1)


@pytest.mark.parametrize(("expression", "field", "values"), [
    ("58-1 * * * * *", 0, (0, 1, 58, 59)),
    ("0 55-2 * * * *", 1, (0, 1, 2, 55, 56, 57, 58, 59)),
    ("0 0 22-2 * * *", 2, (0, 1, 2, 22, 23)),
    ("0 0 0 30-2 * *", 3, (1, 2, 30, 31)),
    ("0 0 0 * Nov-Mar *", 4, (1, 2, 3, 11, 12)),
    ("0 0 0 * * Fri-Mon", 5, (0, 1, 5, 6)),
    ("0 0 0 * * 7-2", 5, (0, 1, 2)),  # from Sunday (7) to Tuesday
])
def test_a_range_without_a_step_may_wrap_around(expression: str, field: int,
                                                values: tuple[int, ...]) -> None:
    """From its start to the field's top, then from the bottom to its end, as croniter."""
    read = read_cron(expression)
    got = (read.seconds, read.minutes, read.hours, _bits(read.days_of_month),
           _bits(read.months), read.weekdays)[field]
    assert got == values


def test_random_interval_stays_within_bounds_and_is_stable_per_query() -> None:
    schedule = parse_schedule("@random 1m 5m", UTC_ZONE)
    draws = []
    cursor = START
    for _ in range(200):
        nxt = schedule.next_after(cursor)
        assert nxt is not None
        assert schedule.next_after(cursor) == nxt  # asked twice, the same answer
        draws.append(nxt - cursor)
        cursor = nxt
    assert all(60 <= d <= 300 for d in draws)
    assert len({round(d, 3) for d in draws}) > 150  # really drawn, not fixed


@pytest.mark.parametrize(("text", "message"), [
    ("@random 5m", "@random: give a lower and an upper interval, e.g. '@random 1m 5m'"),
    ("@random 5m 1m", "@random: '1m' is shorter than '5m'"),
    ("@random 0s 1m", "@random: interval '0s' is below the 1s minimum"),
    ("@random 1m later", "@random: 'later' is not a duration: use seconds (30) or units s, "
                         "m, h, d (e.g. '1h30m')"),
])
def test_random_errors(text: str, message: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(text, UTC_ZONE)
    assert str(caught.value) == message


def test_at_fires_once_and_window_bounds_any_schedule() -> None:
    from torchd.core.schedule.bounded import AtSchedule, WindowedSchedule

    once = AtSchedule(text="at x", instant=START + 100)
    assert upcoming(once, START, 5) == [START + 100]
    assert once.next_after(START + 100) is None
    hourly = parse_schedule("@hourly", UTC_ZONE)
    window = WindowedSchedule(inner=hourly, start=START + 3600, end=START + 3 * 3600)
    assert upcoming(window, START - 86400, 10) == [START + 3600, START + 7200, START + 10800]
    assert WindowedSchedule(inner=hourly, start=None, end=START + 1).next_after(START) is None
