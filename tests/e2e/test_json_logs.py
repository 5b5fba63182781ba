"""The daemon's own log as JSON lines (`--log-format json`, `daemon.log_format`), from a
real daemon: every line parses, and run lines carry their fields."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Daemon, wait_for

pytestmark = pytest.mark.e2e
TASKS = """\
tasks:
  - {name: good, schedule: "* * * * * *", command: "true"}
  - {name: bad, schedule: "* * * * * *", command: "exit 3"}
"""


def json_lines(daemon: Daemon) -> list[dict[str, Any]]:
    """Every whole line of the daemon's stderr, each of which must be one JSON object."""
    text = daemon.stderr()
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines()]


def ended(lines: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("task") == task and "outcome" in line
            and " ended " in line["msg"]]


def test_every_line_is_json_and_run_lines_carry_their_fields(
        write_tasks: Callable[..., Path], daemon_factory: Callable[..., Daemon]) -> None:
    """--log-format json: ts, level, msg, logger on every line; task, run_id, fire_id,
    outcome and duration_s on a run's end."""
    daemon = daemon_factory(write_tasks(TASKS)).start("--log-format", "json")
    wait_for(lambda: len(ended(json_lines(daemon), "good")) >= 2
             and len(ended(json_lines(daemon), "bad")) >= 2, timeout=20,
             message="two ends of each task")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    lines = json_lines(daemon)
    for line in lines:
        assert {"ts", "level", "msg", "logger"} <= line.keys(), line
        assert line["ts"].endswith("Z")
    assert any(line["msg"] == "stop requested" for line in lines)
    failed = ended(lines, "bad")[0]
    assert failed["level"] == "WARNING"
    assert failed["outcome"] == "failed"
    assert failed["fire_id"].startswith("bad@")
    assert failed["run_id"] in failed["msg"]
    assert isinstance(failed["duration_s"], float)
    assert failed["logger"] == "torchd.scheduler"
    start = next(line for line in lines if line.get("run_id") == failed["run_id"]
                 and " started " in line["msg"])
    assert start["fire_id"] == failed["fire_id"]
    assert "outcome" not in start


def test_the_flag_wins_over_the_file(write_tasks: Callable[..., Path],
                                     daemon_factory: Callable[..., Daemon]) -> None:
    """daemon.log_format: json in the file, --log-format text on the command line: text."""
    config = write_tasks("daemon: {log_format: json}\n" + TASKS)
    by_file = daemon_factory(config, state="file").start()
    by_flag = daemon_factory(config, state="flag").start("--log-format", "text")
    wait_for(lambda: " ended " in by_flag.stderr() and " ended " in by_file.stderr(),
             timeout=20, message="a run's end in both logs")
    assert json_lines(by_file)
    first = by_flag.stderr().splitlines()[0]
    assert not first.startswith("{")
    assert " INFO torchd" in first
