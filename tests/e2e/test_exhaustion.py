"""Exhausted resources fail one fire or request, never the daemon (issue 21)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.helpers import Daemon, require_tool, torchd_cmd, wait_for

Factory = Callable[..., Daemon]


def with_nofile(limit: str) -> Callable[..., list[str]]:
    prlimit = require_tool("prlimit")
    return lambda *args: [prlimit, f"--nofile={limit}", "--", *torchd_cmd(*args)]


def test_running_out_of_descriptors_fails_fires_not_the_daemon(
        write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """RLIMIT_NOFILE 64 (soft and hard) and 30 tasks each holding a run open: fires that
    find no descriptor are start errors with the reason, `status` shows the condition,
    and the daemon goes on (and recovers when runs end)."""
    tasks = "\n".join(f'  - {{name: t{i}, schedule: "*/2 * * * * *", command: "sleep 3"}}'
                      for i in range(30))
    config = write_tasks(f"tasks:\n{tasks}\n")
    daemon = daemon_factory(config)
    daemon.cmd = with_nofile("64:64")
    daemon.start()

    def rows(*args: str) -> list[dict[str, object]]:
        asked = daemon.cli("history", "-n", "500", "--json", *args)
        if asked.returncode != 0:  # the daemon may lack a descriptor for the database too
            assert "the run history cannot be read now" in asked.stderr, asked.stderr
            return []
        runs: list[dict[str, object]] = json.loads(asked.stdout)
        return runs

    def start_errors() -> list[dict[str, object]]:
        return [r for r in rows("--failed") if r["outcome"] == "start-error"]

    errors = wait_for(start_errors, timeout=30, message="fires failing for descriptors")
    assert all("Too many open files" in str(r["reason"]) for r in errors), errors
    status = json.loads(daemon.cli("status", "--json").stdout)
    problems = {p["key"]: p["message"] for p in status["problems"]}
    assert "descriptors" in problems, status["problems"]
    wait_for(lambda: any(r["outcome"] == "ok" for r in rows()), timeout=30,
             message="runs that did start end well")
    assert daemon.proc is not None
    assert daemon.proc.poll() is None, daemon.stderr()
    assert "internal error" not in daemon.stderr()


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(
        write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """Started with a soft limit of 64 under a hard one of 4096, the daemon runs with
    4096."""
    config = write_tasks('tasks:\n  - {name: a, schedule: "@hourly", command: "true"}\n')
    daemon = daemon_factory(config)
    daemon.cmd = with_nofile("64:4096")
    daemon.start()
    with open(f"/proc/{daemon.pid}/limits", encoding="ascii") as limits:
        line = next(row for row in limits if row.startswith("Max open files"))
    assert line.split()[3:5] == ["4096", "4096"]
