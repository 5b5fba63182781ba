"""The hook runner in-process with real /bin/sh hook commands."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from torchd.core.clock import SystemClock
from torchd.core.events import FireMissed, RunEnded
from torchd.core.model import HookAction, HookEvent, LogPolicy, RunOutcome, Trigger
from torchd.daemon.hooks import HookRunner


def _ended(outcome: str) -> RunEnded:
    now = time.time()
    return RunEnded(task="job", run_id="r1", pid=1, outcome=RunOutcome(outcome), exit_code=None,
                    signal=15, started=now, ended=now, duration=0.5, scheduled=now,
                    fire_id="job@x", attempt=1, trigger=Trigger.SCHEDULE, log_file="job.log",
                    log_end=0, err_start=None, err_end=None)


def test_on_missed_and_outcomes_that_are_not_failures(tmp_path: Path) -> None:
    """on_missed gets the missed fires; a killed run is not a failure; a command that
    outlives its timeout is stopped and recorded as a failed hook."""
    out = tmp_path / "out"
    calls: list[dict[str, Any]] = []
    hooks = ((HookEvent.ON_MISSED, HookAction(command=(
        "/bin/sh", "-c", f'echo "$TORCHD_EVENT $TORCHD_TASK $TORCHD_OUTCOME" >> {out}'))),
        (HookEvent.ON_FAILURE, HookAction(command=("sleep", "30"), timeout=0.3)))

    async def body() -> None:
        runner = HookRunner(log_dir=tmp_path, base_env={"PATH": "/usr/bin:/bin"},
                            clock=SystemClock(), record=lambda **call: calls.append(call),
                            host="test-host")
        runner.configure(hooks, {}, LogPolicy())
        runner.on_event(FireMissed(task="job", first=1.0, last=61.0, count=2))
        runner.on_event(_ended("killed"))  # not a failure: no hook
        runner.on_event(_ended("timeout"))
        async with asyncio.timeout(10):
            while len(calls) < 2:
                await asyncio.sleep(0.02)
        await runner.close(1.0)

    asyncio.run(body())
    assert out.read_text() == "on_missed job missed\n"
    by_action = sorted((c["event"], c["ok"], c["detail"]) for c in calls)
    assert by_action == [("on_failure", False, "signal=SIGTERM outcome=timeout"),
                         ("on_missed", True, "exit=0 outcome=ok")]
    assert "fire=on_missed:job" in (tmp_path / "hooks.log").read_text()
