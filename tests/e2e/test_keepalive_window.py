"""`type: daemon` with `window: {schedule, for}`: instances kept alive only inside the
window, under libfaketime (the daemon's wall clock starts seconds before an opening)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.test_operations import ended_runs
from tests.helpers import Daemon, libfaketime, lines, wait_for

Factory = Callable[..., Daemon]


def _worker(out: Path) -> str:
    """Says when it starts and when it is asked to stop (TERM)."""
    return (f"echo start >> {out}; trap 'echo term >> {out}; exit 0' TERM; "
            "while :; do sleep 0.1; done")


def _tasks(out: Path, window: str) -> str:
    # cgroups: false: under libfaketime, the cgroup freeze's time.sleep(0.0005) fails with
    # EINVAL (libfaketime's nanosleep), which would fail the stop this file is about.
    return f"""
        daemon: {{timezone: UTC, cgroups: false}}
        tasks:
          - name: worker
            type: daemon
            kill_grace: 2s
            window: {window}
            command: "{_worker(out)}"
        """


def _window(daemon: Daemon) -> dict[str, Any]:
    (task,) = json.loads(daemon.cli("status", "--json").stdout)["tasks"]
    window: dict[str, Any] = task["window"]
    return window


def test_a_window_opens_and_closes(tmp_path: Path, write_tasks: Callable[..., Path],
                                   daemon_factory: Factory) -> None:
    """Started at 10:00:09 (the 10:00:00 window closed at :08; a start under load takes
    seconds): nothing runs until 10:00:20; at 10:00:28 the instance is stopped with TERM
    and its run recorded killed, reason "window closed"."""
    out = tmp_path / "out"
    daemon = daemon_factory(write_tasks(_tasks(out, '{schedule: "*/20 * * * * *", for: 8s}')))
    daemon.start_env = libfaketime(FAKETIME="@2026-11-22 10:00:09")
    daemon.start()
    assert _window(daemon) == {"schedule": "*/20 * * * * *", "for": 8.0, "open": False,
                               "closes_at": None, "next_opening": "2026-11-22T10:00:20.000Z"}
    assert lines(out) == []
    wait_for(lambda: lines(out) == ["start"], timeout=20, message="the window's instance")
    window = _window(daemon)  # one reply: a second status could come after the close
    assert (window["open"], window["closes_at"]) == (True, "2026-11-22T10:00:28.000Z")
    wait_for(lambda: lines(out) == ["start", "term"], timeout=15, message="the stop at close")
    (run,) = ended_runs(daemon, "worker", 1)
    assert (run["outcome"], run["reason"]) == ("killed", "window closed")
    wait_for(lambda: not _window(daemon)["open"], timeout=10, message="closed in status")
    assert _window(daemon)["next_opening"] == "2026-11-22T10:00:40.000Z"


def test_a_daemon_started_inside_a_window_starts_at_once(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    out = tmp_path / "out"
    daemon = daemon_factory(write_tasks(_tasks(out, '{schedule: "0 * * * * *", for: 30s}')))
    daemon.start_env = libfaketime(FAKETIME="@2026-11-22 10:00:11")
    daemon.start()
    wait_for(lambda: lines(out) == ["start"], timeout=10, message="the instance at start")
    assert _window(daemon)["closes_at"] == "2026-11-22T10:00:30.000Z"


def test_a_reload_that_changes_the_window_applies_it_at_once(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """Inside the window; a reload to a window that is closed now stops the instance; a
    reload to one that is open now starts it again."""
    out = tmp_path / "out"
    config = write_tasks(_tasks(out, '{schedule: "0 * * * * *", for: 1h}'))
    daemon = daemon_factory(config)
    daemon.start_env = libfaketime(FAKETIME="@2026-11-22 10:00:11")
    daemon.start()
    wait_for(lambda: lines(out) == ["start"], timeout=10, message="the instance at start")
    write_tasks(_tasks(out, '{schedule: "0 0 3 * * *", for: 1h}'))
    assert daemon.cli("reload").returncode == 0
    wait_for(lambda: lines(out) == ["start", "term"], timeout=10, message="stopped at reload")
    assert _window(daemon) == {"schedule": "0 0 3 * * *", "for": 3600.0, "open": False,
                               "closes_at": None, "next_opening": "2026-11-23T03:00:00.000Z"}
    write_tasks(_tasks(out, '{schedule: "0 0 10 * * *", for: 2h}'))
    assert daemon.cli("reload").returncode == 0
    wait_for(lambda: lines(out) == ["start", "term", "start"], timeout=10,
             message="started again at reload")
    assert _window(daemon)["closes_at"] == "2026-11-22T12:00:00.000Z"
