"""Keep-alive window arithmetic (core.schedule.window) and the `window:` key's checks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.unit.test_config import problems, task_file
from torchd.config.loader import parse_config
from torchd.core.schedule.cronexpr import parse_schedule
from torchd.core.schedule.window import KeepWindow, WindowState

T0 = datetime(2026, 11, 23, 8, tzinfo=UTC).timestamp()  # a Monday, 08:00 UTC


def _window(expression: str, duration: float) -> KeepWindow:
    return KeepWindow(schedule=parse_schedule(expression, UTC), duration=duration)


WORKDAY = _window("0 0 8 * * 1-5", 10 * 3600)  # 08:00-18:00 on weekdays


@pytest.mark.parametrize(("offset", "expected"), [
    (-1, WindowState(open=False, closes_at=None, next_opening=T0)),
    (0, WindowState(open=True, closes_at=T0 + 36000, next_opening=T0 + 86400)),
    (35999, WindowState(open=True, closes_at=T0 + 36000, next_opening=T0 + 86400)),
    (36000, WindowState(open=False, closes_at=None, next_opening=T0 + 86400)),
    (4 * 86400 + 36000, WindowState(open=False, closes_at=None, next_opening=T0 + 7 * 86400)),
], ids=["before", "at-opening", "last-second", "at-close", "friday-evening"])
def test_workday_window(offset: float, expected: WindowState) -> None:
    assert WORKDAY.state_at(T0 + offset) == expected


def test_a_window_that_opens_again_before_it_closes_is_extended() -> None:
    """Every 10 s for 15 s: open for good, stopped at the extension limit, never closed
    between openings."""
    window = _window("*/10 * * * * *", 15)
    state = window.state_at(T0 + 3)
    assert state.open
    assert state.closes_at is not None
    assert state.closes_at > T0 + 3600


def test_a_window_that_opens_once_in_four_years() -> None:
    window = _window("0 0 0 29 2 *", 60)
    state = window.state_at(datetime(2027, 3, 1, tzinfo=UTC).timestamp())
    assert state == WindowState(open=False, closes_at=None,
                                next_opening=datetime(2028, 2, 29, tzinfo=UTC).timestamp())


def _problems(body: str) -> list[str]:
    return problems(task_file(body))


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param('type: daemon\ncommand: "w"\nwindow: {schedule: "0 0 8 * * *", fr: 1h}\n',
                 ["t.yaml:5: task 'job': window: 'for' (how long the window stays open) is "
                  "required",
                  "t.yaml:5: task 'job': window: unknown key 'fr' (did you mean 'for'?); "
                  "known: schedule, for"], id="unknown-key"),
    pytest.param('type: daemon\ncommand: "w"\nwindow: {schedule: "0 0 8 * * *", for: 0}\n',
                 ["t.yaml:5: task 'job': window: for: must be more than 0"], id="for-zero"),
    pytest.param('type: daemon\ncommand: "w"\nwindow: {schedule: "0 0 25 * * *", for: 1h}\n',
                 ["t.yaml:5: task 'job': window: schedule: hour field '25' is out of range "
                  "0-23"], id="bad-schedule"),
    pytest.param('type: daemon\ncommand: "w"\nwindow: {schedule: "@every 1h", for: 1h}\n',
                 ["t.yaml:5: task 'job': window: schedule: a window opens on a cron "
                  "expression; '@every 1h' is not one"], id="every"),
    pytest.param('schedule: "@hourly"\ncommand: "w"\nwindow: {schedule: "@daily", for: 1h}\n',
                 ["t.yaml:5: task 'job': window: only a daemon task (type: daemon) is kept "
                  "alive inside a window; a cron task has its schedule"], id="cron-task"),
    pytest.param('type: daemon\ncommand: "w"\nwindow: "08:00-18:00"\n',
                 ["t.yaml:5: task 'job': window: expected a mapping of schedule, for, got "
                  "text"], id="not-a-mapping"),
])
def test_bad_window_is_reported_with_file_line_and_field(body: str,
                                                         expected: list[str]) -> None:
    assert _problems(body) == expected


def test_window_is_read_in_the_task_zone() -> None:
    config = parse_config(b'tasks: [{name: w, type: daemon, command: "w",'
                          b' timezone: Asia/Tokyo,'
                          b' window: {schedule: "0 0 8 * * *", for: 10h}}]\n', "t.yaml",
                          identity=None)
    window = config.tasks[0].window
    assert window is not None
    assert window.duration == 36000
    state = window.state_at(datetime(2026, 11, 23, 0, tzinfo=UTC).timestamp())  # 09:00 JST
    assert state.closes_at == datetime(2026, 11, 23, 9, tzinfo=UTC).timestamp()
