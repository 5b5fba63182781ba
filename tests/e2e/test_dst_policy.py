"""A task's `dst:` policy through the real CLI and the real daemon (libfaketime puts the
daemon's clock seconds before a change in America/New_York)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.helpers import Daemon, fire_ids, libfaketime, lines, record_cmd, torchd_cmd, wait_for

Factory = Callable[..., Daemon]
ZONE = "timezone: America/New_York"


def _next(config: Path, task: str, after: str) -> list[str]:
    result = subprocess.run(torchd_cmd("next", "-c", str(config), task, "-n", "3", "--after",
                                       after), capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    return [line.rstrip() for line in result.stdout.splitlines()]


def test_next_shows_each_policy_around_the_changes(write_tasks: Callable[..., Path]) -> None:
    """`torchd next --after` just before the spring-forward and fall-back changes."""
    config = write_tasks(f"""
        tasks:
          - {{name: runafter, schedule: "0 30 2 * * *", command: "true", {ZONE}}}
          - {{name: skip, schedule: "0 30 2 * * *", command: "true", {ZONE},
             dst: {{skipped: skip}}}}
          - {{name: first, schedule: "0 30 1 * * *", command: "true", {ZONE}}}
          - {{name: both, schedule: "0 30 1 * * *", command: "true", {ZONE},
             dst: {{repeated: both}}}}
        """)
    spring, fall = "2026-03-08T00:00:00-05:00", "2026-11-01T00:00:00-04:00"
    assert _next(config, "runafter", spring) == [
        "runafter", "  2026-03-08T03:00:00-04:00", "  2026-03-09T02:30:00-04:00",
        "  2026-03-10T02:30:00-04:00"]
    assert _next(config, "skip", spring) == [
        "skip  (dst: skipped: skip, repeated: first)", "  2026-03-09T02:30:00-04:00",
        "  2026-03-10T02:30:00-04:00", "  2026-03-11T02:30:00-04:00"]
    assert _next(config, "first", fall) == [
        "first", "  2026-11-01T01:30:00-04:00", "  2026-11-02T01:30:00-05:00",
        "  2026-11-03T01:30:00-05:00"]
    assert _next(config, "both", fall) == [
        "both  (dst: skipped: run-after, repeated: both)", "  2026-11-01T01:30:00-04:00",
        "  2026-11-01T01:30:00-05:00  (repeated hour, second showing)",
        "  2026-11-02T01:30:00-05:00"]


def test_a_repeated_wall_time_fires_on_its_second_showing_only_with_both(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """The daemon starts at 01:29:57 EST, in the repeated hour: `both` fires at 01:30 EST;
    the default (first) already fired at 01:30 EDT and waits for the next day."""
    out = tmp_path / "out"
    config = write_tasks(f"""
        tasks:
          - {{name: first, schedule: "0 30 1 * * *", command: '{record_cmd(out)}', {ZONE}}}
          - {{name: both, schedule: "0 30 1 * * *", command: '{record_cmd(out)}', {ZONE},
             dst: {{repeated: both}}}}
        """)
    daemon = daemon_factory(config)
    daemon.start_env = libfaketime(FAKETIME="@2026-11-01 06:29:57")  # UTC
    daemon.start()
    wait_for(lambda: lines(out), timeout=15, message="the second showing's fire")
    assert fire_ids(out) == ["both@2026-11-01T06:30:00Z"]
    tasks = {t["name"]: t for t in json.loads(daemon.cli("status", "--json").stdout)["tasks"]}
    assert tasks["first"]["next_fire"].startswith("2026-11-02T06:30:00")
    assert tasks["both"]["next_fire"].startswith("2026-11-02T06:30:00")


def test_a_skipped_wall_time_runs_at_the_gap_end_unless_skip(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """The daemon starts at 01:59:57 EST, before the gap: the default fires at 03:00 EDT;
    `skip` does not fire that day."""
    out = tmp_path / "out"
    config = write_tasks(f"""
        tasks:
          - {{name: runafter, schedule: "0 30 2 * * *", command: '{record_cmd(out)}', {ZONE}}}
          - {{name: skip, schedule: "0 30 2 * * *", command: '{record_cmd(out)}', {ZONE},
             dst: {{skipped: skip}}}}
        """)
    daemon = daemon_factory(config)
    daemon.start_env = libfaketime(FAKETIME="@2026-03-08 06:59:57")  # UTC
    daemon.start()
    wait_for(lambda: lines(out), timeout=15, message="the fire at the gap's end")
    assert fire_ids(out) == ["runafter@2026-03-08T07:00:00Z"]
    tasks = {t["name"]: t for t in json.loads(daemon.cli("status", "--json").stdout)["tasks"]}
    assert tasks["skip"]["next_fire"].startswith("2026-03-09T06:30:00")
