"""The `dst:` key: read and checked by the loader, part of the shared-schedule key, and
applied by the cron arithmetic at a real change (the sweeps against the brute-force
reference are in tests/integration/test_cron_time_zones_sweeps.py)."""

from __future__ import annotations

import textwrap
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.unit.test_config import problems, task_file
from torchd.config.loader import ParseCache, parse_config
from torchd.core.schedule.cronexpr import (
    CronSchedule,
    DstPolicy,
    Repeated,
    Skipped,
    parse_schedule,
    upcoming,
)

NEW_YORK = ZoneInfo("America/New_York")


def _problems(body: str) -> list[str]:
    return problems(task_file(body))


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param('schedule: "@daily"\ncommand: "true"\ndst: {skiped: skip}\n',
                 "t.yaml:5: task 'job': dst: unknown key 'skiped' (did you mean 'skipped'?); "
                 "known: skipped, repeated", id="unknown-key"),
    pytest.param('schedule: "@daily"\ncommand: "true"\ndst: {skipped: later}\n',
                 "t.yaml:5: task 'job': dst: skipped: 'later' is not one of: run-after, skip",
                 id="bad-skipped"),
    pytest.param('schedule: "@daily"\ncommand: "true"\ndst: {repeated: twice}\n',
                 "t.yaml:5: task 'job': dst: repeated: 'twice' is not one of: first, both",
                 id="bad-repeated"),
    pytest.param('schedule: "@daily"\ncommand: "true"\ndst: skip\n',
                 "t.yaml:5: task 'job': dst: expected a mapping of skipped, repeated, got "
                 "text", id="not-a-mapping"),
    pytest.param('schedule: "@every 1h"\ncommand: "true"\ndst: {skipped: skip}\n',
                 "t.yaml:5: task 'job': dst: applies to a cron expression; '@every 1h' does "
                 "not follow the wall clock", id="every"),
    pytest.param('type: daemon\ncommand: "true"\ndst: {skipped: skip}\n',
                 "t.yaml:5: task 'job': dst: a daemon task is kept running and takes no "
                 "schedule", id="daemon"),
])
def test_bad_dst_is_reported_with_file_line_and_field(body: str, expected: str) -> None:
    assert _problems(body) == [expected]


def test_policy_is_read_and_defaults_per_key() -> None:
    config = parse_config(b'tasks: [{name: a, schedule: "0 30 2 * * *", command: "true",'
                          b' dst: {repeated: both}}]\n', "t.yaml", identity=None)
    schedule = config.tasks[0].schedule
    assert isinstance(schedule, CronSchedule)
    assert schedule.dst == DstPolicy(skipped=Skipped.RUN_AFTER, repeated=Repeated.BOTH)


def test_tasks_share_a_schedule_only_with_the_same_policy() -> None:
    """The shared-schedule cache keys on expression, zone and policy."""
    cache = ParseCache()
    tasks = parse_config(textwrap.dedent("""\
        tasks:
          - {name: a, schedule: "0 30 2 * * *", command: "true", timezone: America/New_York}
          - {name: b, schedule: "0 30 2 * * *", command: "true", timezone: America/New_York,
             dst: {skipped: skip}}
          - {name: c, schedule: "0 30 2 * * *", command: "true", timezone: America/New_York,
             dst: {skipped: skip}}
        """).encode(), "t.yaml", identity=None, cache=cache).tasks
    assert tasks[0].schedule is not tasks[1].schedule
    assert tasks[1].schedule is tasks[2].schedule
    after = datetime(2026, 3, 7, 12, tzinfo=NEW_YORK).timestamp()
    assert tasks[0].schedule is not None
    assert tasks[1].schedule is not None
    assert tasks[0].schedule.next_after(after) != tasks[1].schedule.next_after(after)
    # A reload that drops the policy from b and c keeps both schedules apart still.
    again = parse_config(b'tasks: [{name: b, schedule: "0 30 2 * * *", command: "true",'
                         b' timezone: America/New_York}]\n', "t.yaml", identity=None,
                         cache=cache).tasks
    assert again[0].schedule is not None
    assert again[0].schedule.next_after(after) == tasks[0].schedule.next_after(after)


def _local(expression: str, dst: DstPolicy | None, after: datetime, count: int) -> list[str]:
    schedule = parse_schedule(expression, NEW_YORK, dst)
    return [datetime.fromtimestamp(t, NEW_YORK).strftime("%m-%d %H:%M %Z")
            for t in upcoming(schedule, after.timestamp(), count)]


@pytest.mark.parametrize(("skipped", "expected"), [
    (Skipped.RUN_AFTER, ["03-07 02:30 EST", "03-08 03:00 EDT", "03-09 02:30 EDT"]),
    (Skipped.SKIP, ["03-07 02:30 EST", "03-09 02:30 EDT", "03-10 02:30 EDT"]),
])
def test_skipped_wall_time(skipped: Skipped, expected: list[str]) -> None:
    after = datetime(2026, 3, 7, tzinfo=NEW_YORK)
    assert _local("0 30 2 * * *", DstPolicy(skipped=skipped), after, 3) == expected


@pytest.mark.parametrize(("repeated", "expected"), [
    (Repeated.FIRST, ["11-01 01:30 EDT", "11-02 01:30 EST"]),
    (Repeated.BOTH, ["11-01 01:30 EDT", "11-01 01:30 EST", "11-02 01:30 EST"]),
])
def test_repeated_wall_time(repeated: Repeated, expected: list[str]) -> None:
    after = datetime(2026, 11, 1, tzinfo=NEW_YORK)
    got = _local("0 30 1 * * *", DstPolicy(repeated=repeated), after, len(expected))
    assert got == expected


def test_no_policy_keeps_the_every_hour_exception() -> None:
    """Not given: an every-hour schedule follows elapsed time (nothing for the gap); given
    as run-after, it fires once at the gap's end."""
    after = datetime(2026, 3, 8, 1, 30, tzinfo=NEW_YORK)
    assert _local("0 30 * * * *", None, after, 2) == ["03-08 03:30 EDT", "03-08 04:30 EDT"]
    assert _local("0 30 * * * *", DstPolicy(), after, 2) == ["03-08 03:00 EDT", "03-08 03:30 EDT"]
