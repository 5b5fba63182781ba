"""Cron arithmetic in real zones, across DST changes, against a second-by-second reference.

The reference walks every second of a window, reads the zone's clock face, and applies the
rules as the README states them, with no cleverness:
- a matching wall time fires when it shows, but a repeated one only on its first showing;
- when the clock jumps forward over wall times that match, one fire at the jump;
- schedules whose hour field allows every hour fire whenever a second's wall time
  matches (elapsed time: nothing at the jump, twice in the repeated hour).
With a task's `dst` policy given, the every-hour exception goes and the policy decides:
`skipped: skip` drops the fire at the jump, `repeated: both` fires on the second showing
too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.oracle import field_sets
from tests.strategies import cron_expressions
from torchd.core.schedule.cronexpr import DstPolicy, Repeated, Skipped, parse_schedule, upcoming

ZONES = ("America/New_York", "Europe/London", "Australia/Lord_Howe", "America/Santiago",
         "Pacific/Chatham", "Asia/Kolkata", "UTC")
WINDOW = 3 * 3600
_WALL_EPOCH = datetime(1970, 1, 1)  # a clock face: deliberately naive


def _offset(zone: ZoneInfo, instant: int) -> int:
    return int(datetime.fromtimestamp(instant, zone).utcoffset().total_seconds())  # type: ignore[union-attr]


def offset_changes(zone: ZoneInfo, year: int) -> list[int]:
    """Instants in a year at which the zone's offset changes (hourly scan, then exact)."""
    start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    changes = []
    for hour in range(366 * 24):
        low, high = start + hour * 3600, start + (hour + 1) * 3600
        if _offset(zone, low) != _offset(zone, high):
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if _offset(zone, middle) == _offset(zone, low) else (
                    low, middle)
            changes.append(high)
    return changes


def reference_fires(expression: str, zone: ZoneInfo, start: int, end: int,
                    policy: tuple[str, str] | None = None) -> list[int]:
    sets = field_sets(expression)
    fields = expression.split()
    either_day = not fields[3].startswith("*") and not fields[5].startswith("*")
    every_hour = len(sets[2]) == 24
    if policy is None:  # today's rule: run-after and first, but every-hour is elapsed
        run_after, both = not every_hour, every_hour
    else:
        run_after, both = policy[0] == "run-after", policy[1] == "both"

    weekdays = {d % 7 for d in sets[5]}

    def matches(wall: datetime) -> bool:
        if wall.second not in sets[0] or wall.minute not in sets[1] or wall.hour not in sets[2]:
            return False
        dom, dow = wall.day in sets[3], (wall.weekday() + 1) % 7 in weekdays
        return ((dom or dow) if either_day else (dom and dow)) and wall.month in sets[4]

    fires = []
    previous = start + _offset(zone, start)
    for instant in range(start + 1, end + 1):
        local = datetime.fromtimestamp(instant, zone)
        wall = instant + int(local.utcoffset().total_seconds())  # type: ignore[union-attr]
        due = matches(local) and (both or local.fold == 0)
        if wall - previous > 1 and run_after:  # the clock jumped over some wall times
            due = due or any(matches(_WALL_EPOCH + timedelta(seconds=w))
                             for w in range(previous + 1, wall))
        if due:
            fires.append(instant)
        previous = wall
    return fires


def _ours(expression: str, zone: ZoneInfo, start: int, end: int,
          policy: tuple[str, str] | None = None) -> list[int]:
    dst = None if policy is None else DstPolicy(skipped=Skipped(policy[0]),
                                                repeated=Repeated(policy[1]))
    schedule = parse_schedule(expression, zone, dst)
    fires, cursor = [], float(start)
    while True:
        found = schedule.next_after(cursor)
        if found is None or found > end:
            return fires
        assert found == int(found), "fires fall on whole seconds"
        fires.append(int(found))
        cursor = found


CHANGES = [(name, change) for name in ZONES if name != "UTC"
           for change in offset_changes(ZoneInfo(name), 2026)]


def test_the_zones_have_changes_in_2026() -> None:
    assert {name for name, _ in CHANGES} == set(ZONES) - {"UTC", "Asia/Kolkata"}


# Dense hour and minute fields so that windows around a change hold fires.
@settings(max_examples=120, deadline=None)
@given(expression=cron_expressions(dense=True), change=st.sampled_from(CHANGES),
       lead=st.integers(0, WINDOW))
def test_around_offset_changes_matches_reference(expression: str, change: tuple[str, int],
                                                 lead: int) -> None:
    zone = ZoneInfo(change[0])
    start = change[1] - lead
    assert _ours(expression, zone, start, start + WINDOW) == reference_fires(
        expression, zone, start, start + WINDOW)


POLICIES = [(skipped, repeated) for skipped in ("run-after", "skip")
            for repeated in ("first", "both")]


@settings(max_examples=200, deadline=None)
@given(expression=cron_expressions(dense=True), change=st.sampled_from(CHANGES),
       lead=st.integers(0, WINDOW), policy=st.sampled_from(POLICIES))
def test_dst_policies_around_offset_changes_match_reference(
        expression: str, change: tuple[str, int], lead: int, policy: tuple[str, str]) -> None:
    """Each of the four policies, in every zone with changes, every-hour schedules too."""
    zone = ZoneInfo(change[0])
    start = change[1] - lead
    assert _ours(expression, zone, start, start + WINDOW, policy) == reference_fires(
        expression, zone, start, start + WINDOW, policy)


@pytest.mark.parametrize("policy", POLICIES, ids="/".join)
@pytest.mark.parametrize("change", CHANGES, ids=[f"{name}@{at}" for name, at in CHANGES])
def test_each_policy_at_each_change_with_a_fire_every_minute(
        change: tuple[str, int], policy: tuple[str, str]) -> None:
    """A schedule that fires on every minute of hours 0-3 and 22-23 (never every hour),
    through every change of 2026 in every zone."""
    expression = "0 * 0-3,22-23 * * *"
    zone = ZoneInfo(change[0])
    start, end = change[1] - WINDOW, change[1] + WINDOW
    assert _ours(expression, zone, start, end, policy) == reference_fires(
        expression, zone, start, end, policy)


@settings(max_examples=30, deadline=None)
@given(expression=cron_expressions(dense=True), zone_name=st.sampled_from(ZONES),
       start=st.integers(int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()),
                         int(datetime(2027, 1, 1, tzinfo=UTC).timestamp())))
def test_anywhere_in_the_year_matches_reference(expression: str, zone_name: str,
                                                start: int) -> None:
    zone = ZoneInfo(zone_name)
    assert _ours(expression, zone, start, start + WINDOW) == reference_fires(
        expression, zone, start, start + WINDOW)


def wall_time_reference(expression: str, zone: ZoneInfo, start: int, end: int,
                        limit: int) -> list[int]:
    """The rules applied to each matching wall time of each day in the window (not to each
    second): fast enough for months, written independently of the code under test. Stops
    after the day on which `limit` fires are reached (a day's fires all come before the
    next day's)."""
    sets = field_sets(expression)
    fields = expression.split()
    either_day = not fields[3].startswith("*") and not fields[5].startswith("*")
    every_hour = len(sets[2]) == 24
    weekdays = {d % 7 for d in sets[5]}
    start_wall = datetime.fromtimestamp(start, zone).replace(tzinfo=None)
    earliest = start_wall - timedelta(hours=3)  # no DST change moves a wall time further
    day, last_day = earliest.date(), datetime.fromtimestamp(end, zone).date()
    fires: set[int] = set()
    considered = 0
    while day <= last_day and considered <= limit + 7200:  # margin: a repeated hour's order
        dom, dow = day.day in sets[3], (day.weekday() + 1) % 7 in weekdays
        if ((dom or dow) if either_day else (dom and dow)) and day.month in sets[4]:
            for wall in (datetime(day.year, day.month, day.day, h, m, sec)
                         for h in sorted(sets[2]) for m in sorted(sets[1])
                         for sec in sorted(sets[0])):
                if wall < earliest:
                    continue
                fires.update(_instants(wall, zone, every_hour=every_hour))
                considered += wall > start_wall
                if considered > limit + 7200:
                    break
        day += timedelta(days=1)
    return sorted(t for t in fires if start < t <= end)[:limit]


def _instants(wall: datetime, zone: ZoneInfo, *, every_hour: bool) -> list[int]:
    first = int(wall.replace(tzinfo=zone, fold=0).timestamp())
    second = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    shows = [i for i in sorted({first, second})
             if datetime.fromtimestamp(i, zone).replace(tzinfo=None) == wall]
    if shows:
        return shows if every_hour else shows[:1]
    if every_hour:
        return []
    # Skipped by a gap: the first instant after it (bisection between the two readings).
    low, high = min(first, second), max(first, second)
    before = _offset(zone, low)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if _offset(zone, middle) == before else (low, middle)
    return [high]


@settings(max_examples=40, deadline=None)
@given(expression=cron_expressions(), zone_name=st.sampled_from(ZONES),
       start=st.integers(int(datetime(2025, 1, 1, tzinfo=UTC).timestamp()),
                         int(datetime(2027, 1, 1, tzinfo=UTC).timestamp())))
def test_six_simulated_months_match_the_wall_time_reference(
        expression: str, zone_name: str, start: int) -> None:
    """Half a year from a random instant, in a random zone (two DST changes for most),
    up to 2,000 fires."""
    zone = ZoneInfo(zone_name)
    expected = wall_time_reference(expression, zone, start, start + 182 * 86400, 2000)
    got = upcoming(parse_schedule(expression, zone), float(start), len(expected) + 1)
    assert got[: len(expected)] == [float(t) for t in expected]
    if len(expected) < 2000:
        assert len(got) == len(expected) or got[len(expected)] > start + 182 * 86400
