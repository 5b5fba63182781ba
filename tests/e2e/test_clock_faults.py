"""Clock faults: a clock that ran ahead and was corrected, a step forward (issue 21)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.e2e.test_operations import as_json, ended_runs
from tests.helpers import Daemon, fire_ids, libfaketime, lines, record_cmd, wait_for

Factory = Callable[..., Daemon]
TWO_DAYS = 2 * 86400


def fire_seconds(fire: str) -> int:
    return int(datetime.fromisoformat(fire.split("@")[1].replace("Z", "+00:00")).timestamp())


def test_after_a_clock_that_ran_ahead_is_corrected_tasks_fire_from_now(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """A daemon ran two days ahead (libfaketime): its ledger holds fires two days off.
    Started again on the right clock, the every-second task fires at once, status says
    the clock was corrected, and the one-time task that ran stays done."""
    out = tmp_path / "out"
    once_at = (datetime.now(UTC) + timedelta(seconds=TWO_DAYS + 4)).isoformat()
    config = write_tasks(f"""
        tasks:
          - {{name: tick, schedule: "* * * * * *", command: '{record_cmd(out)}'}}
          - {{name: once, at: "{once_at}", command: 'echo once >> {tmp_path}/once'}}
    """)
    ahead = daemon_factory(config)
    ahead.start_env = libfaketime(FAKETIME=f"+{TWO_DAYS}")
    ahead.start()
    wait_for(lambda: (tmp_path / "once").exists() and len(lines(out)) >= 2, timeout=20,
             message="fires on the clock two days ahead")
    assert ahead.cli("stop").returncode == 0
    before = len(lines(out))
    now = daemon_factory(config).start()
    wait_for(lambda: len(lines(out)) >= before + 2, timeout=10,
             message="fires on the corrected clock")
    assert abs(fire_seconds(fire_ids(out)[-1]) - time.time()) < 10  # the clock of now
    status = json.loads(now.cli("status", "--json").stdout)
    (problem,) = [p for p in status["problems"] if p["key"] == "clock"]
    assert "ahead of the clock: the clock ran ahead and has been corrected since" in (
        problem["message"])
    tasks = {task["name"]: task for task in status["tasks"]}
    assert tasks["once"]["next_fire"] is None
    assert (tmp_path / "once").read_text() == "once\n"
    assert "task once: no fire to come (it ran already)" in now.stderr()


def test_a_step_forward_does_not_turn_fires_into_skips(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """The clock steps 2 s forward: the two fires that fall due at once both run (the
    second once the first, 0.3 s long, has ended: it would have ended before the second's
    time); none is skipped by max_running."""
    offset = tmp_path / "offset"
    offset.write_text("+0\n")
    out = tmp_path / "out"
    config = write_tasks(f"""
        tasks:
          - {{name: tick, schedule: "* * * * * *", command: '{record_cmd(out)}; sleep 0.3'}}
    """)
    daemon = daemon_factory(config)
    daemon.start_env = libfaketime(FAKETIME_TIMESTAMP_FILE=str(offset), FAKETIME_NO_CACHE="1")
    daemon.start()
    wait_for(lambda: len(lines(out)) >= 2, timeout=10, message="fires before the step")
    for step in (2, 4, 6):
        count = len(lines(out))
        offset.write_text(f"+{step}\n")
        wait_for(lambda n=count: len(lines(out)) >= n + 4, timeout=10,
                 message="fires after the step")
        ended_runs(daemon, "tick", len(lines(out)))  # the step's runs over before the next
    outcomes = [run["outcome"] for run in as_json(daemon, "history", "-n", "100")]
    assert "skipped" not in outcomes, outcomes
    seconds = sorted(fire_seconds(i) for i in fire_ids(out))
    assert seconds == list(range(seconds[0], seconds[0] + len(seconds)))  # none left out
