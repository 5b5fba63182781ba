"""The one rule for writing times: JSON in UTC to the millisecond, text to the second in a
zone, distances from now in two units; and the `list` reply made from task snapshots."""

from __future__ import annotations

from datetime import UTC
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from torchd.control.listing import list_rows
from torchd.control.verbs import run_row
from torchd.core.timefmt import from_iso, iso_utc, local_iso, relative, span

INSTANT = 1792826700.25  # 2026-10-24T07:25:00.250Z, the day before DST ends in Paris
PARIS = ZoneInfo("Europe/Paris")


def test_json_times_are_utc_to_the_millisecond_at_a_fixed_width() -> None:
    assert iso_utc(INSTANT) == "2026-10-24T07:25:00.250Z"
    assert iso_utc(1792826700) == "2026-10-24T07:25:00.000Z"
    assert iso_utc(1792826700.9999) == "2026-10-24T07:25:00.999Z"  # truncated, never later
    assert from_iso(iso_utc(INSTANT)) == INSTANT


def test_text_times_are_to_the_second_in_the_zone_with_its_offset() -> None:
    assert local_iso(INSTANT, PARIS) == "2026-10-24T09:25:00+02:00"
    assert local_iso(INSTANT + 86400, PARIS) == "2026-10-25T08:25:00+01:00"  # after DST
    assert local_iso(INSTANT + 0.7, UTC) == "2026-10-24T07:25:00+00:00"


def test_a_time_without_an_offset_is_not_a_reply_time() -> None:
    with pytest.raises(ValueError, match="has no UTC offset"):
        from_iso("2026-10-24T07:25:00")


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.9, "0s"), (45, "45s"), (60, "1m"), (250, "4m 10s"), (3600, "1h"),
    (7500, "2h 5m"), (86399, "23h 59m"), (86400 * 3 + 3599, "3d"), (86400 + 7200, "1d 2h"),
    (-5, "0s"),
])
def test_a_span_shows_its_two_largest_units(seconds: float, text: str) -> None:
    assert span(seconds) == text


def test_a_relative_time_says_which_way() -> None:
    assert relative(INSTANT + 250.5, INSTANT) == "in 4m 10s"
    assert relative(INSTANT - 7500, INSTANT) == "2h 5m ago"
    assert relative(INSTANT + 0.5, INSTANT) == "now"


def test_a_history_row_carries_its_times_in_the_json_form() -> None:
    row = {"run_id": "r", "task": "a", "at": INSTANT, "scheduled": 1792826700.0,
           "started": INSTANT, "ended": None, "duration": None}
    assert run_row(row, "Europe/Paris") == {
        "run_id": "r", "task": "a", "at": "2026-10-24T07:25:00.250Z",
        "scheduled": "2026-10-24T07:25:00.000Z", "started": "2026-10-24T07:25:00.250Z",
        "ended": None, "duration": None, "timezone": "Europe/Paris"}


def _task(name: str, **fields: Any) -> dict[str, Any]:
    snapshot: dict[str, Any] = {
        "name": name, "type": "cron", "schedule": "@hourly", "enabled": True,
        "for_this_host": True, "paused": False, "timezone": "UTC", "next_fire": None,
        "running_since": None, "last_run": None, "last_start_error": None,
        "last_start_error_at": None}
    return {**snapshot, **fields}


def test_the_list_is_by_next_fire_then_the_idle_tasks_with_why() -> None:
    soon, later = iso_utc(INSTANT), iso_utc(INSTANT + 60)
    rows = list_rows([
        _task("z-paused", paused=True, next_fire=soon),
        _task("later", next_fire=later),
        _task("off", enabled=False),
        _task("b-soon", next_fire=soon),
        _task("elsewhere", for_this_host=False),
        _task("keeper", type="daemon", schedule=None),
        _task("boot", schedule="@reboot"),
        _task("a-soon", next_fire=soon),
        _task("done", schedule="at 2026-01-01T00:00:00Z"),
    ])
    assert [(r["name"], r["next_fire"], r["idle"]) for r in rows] == [
        ("a-soon", soon, None), ("b-soon", soon, None), ("later", later, None),
        ("boot", None, "at start only"), ("done", None, "no more fires"),
        ("elsewhere", None, "not for this host"), ("keeper", None, "daemon task"),
        ("off", None, "disabled"), ("z-paused", None, "paused")]


def test_the_last_run_is_the_latest_of_a_run_going_one_ended_and_a_start_error() -> None:
    ended = {"run_id": "r", "outcome": "failed", "exit_code": 3, "signal": None,
             "started": iso_utc(INSTANT), "ended": iso_utc(INSTANT + 1)}
    failed_to_start = _task("a", last_run=ended, last_start_error="No such file",
                            last_start_error_at=iso_utc(INSTANT + 5))
    going = _task("b", last_run=ended, running_since=iso_utc(INSTANT + 10))
    rows = {r["name"]: r["last"] for r in list_rows([failed_to_start, going, _task("c")])}
    assert rows == {
        "a": {"at": iso_utc(INSTANT + 5), "outcome": "start-error", "exit_code": None,
              "signal": None, "error": "No such file"},
        "b": {"at": iso_utc(INSTANT + 10), "outcome": "running", "exit_code": None,
              "signal": None, "error": None},
        "c": None}
