"""Task logs (rotation, split stderr, per-run cap, a full disk) and event hooks (commands
and webhooks to a test server on loopback), with the real daemon."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_operations import as_json, ended_runs, ok
from tests.helpers import Daemon, full_filesystem, lines, wait_for
from torchd.core.timefmt import from_iso

pytestmark = pytest.mark.e2e
Factory = Callable[..., Daemon]
MB = 1 << 20


def test_a_run_printing_200_mb_leaves_the_log_capped(write_tasks: Callable[..., Path],
                                                     daemon_factory: Factory) -> None:
    """With the defaults (10MB files, a cron run keeps at most 10MB), 200 MB of output
    costs at most 10 MB of disk; the run itself still succeeds."""
    config = write_tasks("""
        tasks:
          - {name: flood, schedule: "@yearly", command: "yes xxxxxxxxxxxxxxx | head -c 200000000"}
    """)
    daemon = daemon_factory(config).start()
    result = as_json(daemon, "trigger", "flood", "--wait")
    assert result["outcome"] == "ok"
    files = sorted(daemon.log_dir.glob("flood.log*"))
    total = sum(f.stat().st_size for f in files)
    assert 10 * MB < total < 10 * MB + 2048
    text = (daemon.log_dir / "flood.log").read_bytes()
    assert b"output reached log.max_run_bytes=10485760; the rest is discarded" in text
    assert b"end run=" in text.splitlines()[-1]


def test_rotation_keeps_n_files_and_logs_finds_rotated_runs(
        write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    config = write_tasks("""
        daemon:
          log: {max_bytes: 2KB, keep: 2}
        tasks:
          - name: chatty
            schedule: "@yearly"
            command: 'head -c 1500 /dev/zero | tr "\\0" "a"; echo; echo "id $TORCHD_RUN_ID"'
    """)
    daemon = daemon_factory(config).start()
    run_ids = [as_json(daemon, "trigger", "chatty", "--wait")["run_id"] for _ in range(5)]
    names = sorted(p.name for p in daemon.log_dir.glob("chatty.log*"))
    assert names == ["chatty.log", "chatty.log.1", "chatty.log.2"]
    assert all(p.stat().st_size <= 2048 for p in daemon.log_dir.glob("chatty.log*"))
    # Each run's header went at the end of a file and its output, past 2KB, into the
    # next: the newest run reads whole across chatty.log.1 and chatty.log.
    newest = ok(daemon.cli("logs", "chatty", "--run", run_ids[4]))
    assert newest.startswith("--- torchd ")
    assert f"start run={run_ids[4]}" in newest.splitlines()[0]
    assert f"id {run_ids[4]}" in newest
    # The middle run's header file was rotated away; its output is still found.
    middle = ok(daemon.cli("logs", "chatty", "--run", run_ids[2])).splitlines()
    assert middle[0] == "[torchd: the start of this run's output has been rotated away]"
    assert middle[-2] == f"id {run_ids[2]}"
    assert f"end run={run_ids[2]}" in middle[-1]
    gone = daemon.cli("logs", "chatty", "--run", run_ids[0])
    assert (gone.returncode, gone.stdout) == (0, "")


def test_split_sends_stderr_to_its_own_file(write_tasks: Callable[..., Path],
                                            daemon_factory: Factory) -> None:
    config = write_tasks("""
        tasks:
          - name: both
            schedule: "@yearly"
            command: "echo to-out; echo to-err >&2"
            log: {split: true}
    """)
    daemon = daemon_factory(config).start()
    as_json(daemon, "trigger", "both", "--wait")
    out = ok(daemon.cli("logs", "both"))
    err = ok(daemon.cli("logs", "both", "--stderr"))
    assert "to-out" in out
    assert "to-err" not in out
    assert "to-err" in err
    assert "to-out" not in err
    assert (daemon.log_dir / "both.err.log").exists()


def test_a_full_disk_is_survived_and_reported_once(write_tasks: Callable[..., Path],
                                                   daemon_factory: Factory) -> None:
    """Writing the log fails with ENOSPC (a full tmpfs): runs go on, reported once."""
    config = write_tasks("""
        tasks:
          - {name: full, schedule: "* * * * * *", command: "echo lost output"}
    """)
    daemon = daemon_factory(config)
    with full_filesystem(daemon.log_dir):
        daemon.start()
        runs = ended_runs(daemon, "full", 3)
        daemon.kill_everything()
    assert {r["outcome"] for r in runs} == {"ok"}
    errors = [line for line in daemon.stderr().splitlines() if "full.log" in line
              and "No space left on device" in line]
    # One line for the log, one for the daemon's problem (which status shows) beginning.
    assert [" torchd.tasklog: " in line for line in errors] == [True, False], errors
    assert " torchd.health: 1 task log(s) cannot be written" in errors[1]


@pytest.fixture
def webhook_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    failures = {"left": 1}  # the first POST fails: the daemon must retry

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if failures["left"]:
                failures["left"] -= 1
                self.send_response(503)
            else:
                received.append({"body": json.loads(body), "marker": self.headers["X-Marker"]})
                self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            """Quiet: the server's request lines would clutter the test output."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


def test_hooks_run_commands_and_post_webhooks(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory,
        webhook_server: tuple[str, list[dict[str, Any]]]) -> None:
    url, received = webhook_server
    out = tmp_path / "hook.out"
    config = write_tasks(f"""
        daemon:
          hooks:
            on_failure:
              webhook: {{url: "{url}", headers: {{X-Marker: hook-marker}}, timeout: 5s}}
        tasks:
          - name: flaky
            schedule: "@yearly"
            command: "exit 3"
            hooks:
              on_start: 'echo "start $TORCHD_TASK $TORCHD_RUN_ID" >> {out}'
              on_failure:
                command: 'echo "failure $TORCHD_OUTCOME $TORCHD_EXIT_CODE $TORCHD_HOST" >> {out}'
          - name: fine
            schedule: "@yearly"
            command: "true"
            hooks:
              on_success: 'echo "success $TORCHD_TASK $TORCHD_DURATION $TORCHD_LOG_FILE" >> {out}'
    """)
    daemon = daemon_factory(config).start()
    flaky = daemon.cli("trigger", "flaky", "--wait", "--json")
    assert flaky.returncode == 3  # the run's own exit code
    run_id = json.loads(flaky.stdout)["run_id"]
    as_json(daemon, "trigger", "fine", "--wait")
    wait_for(lambda: len(lines(out)) == 3, message="three hook commands")
    got = sorted(lines(out))
    assert got[0].startswith("failure failed 3 ")
    assert got[1] == f"start flaky {run_id}"
    assert got[2].startswith("success fine 0.")
    assert got[2].endswith(str(daemon.log_dir / "fine.log"))
    wait_for(lambda: received, timeout=20, message="the webhook after a retry")
    doc = received[0]["body"]
    assert received[0]["marker"] == "hook-marker"
    assert (doc["event"], doc["task"], doc["run_id"], doc["outcome"], doc["exit_code"]) == (
        "on_failure", "flaky", run_id, "failed", 3)
    assert len(received) == 1
    calls = wait_for(lambda: _hook_calls(daemon, "webhook"), message="the recorded call")
    assert calls == [(1, "HTTP 204 (attempt 2)")]


def _hook_calls(daemon: Daemon, action: str) -> list[tuple[int, str]]:
    import sqlite3

    with sqlite3.connect(daemon.state_dir / "history.db") as conn:
        return list(conn.execute("SELECT ok, detail FROM hook_calls WHERE action = ?",
                                 (action,)))


def test_a_failing_webhook_is_recorded_and_scheduling_goes_on(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """Nothing listens on the port: every attempt fails, the failure is recorded, and the
    task keeps firing on time meanwhile."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "out"
    config = write_tasks(f"""
        tasks:
          - name: tick
            schedule: "* * * * * *"
            command: "echo x >> {out}"
            hooks:
              on_start: {{webhook: "http://127.0.0.1:{port}/nobody"}}
    """)
    daemon = daemon_factory(config).start()
    calls = wait_for(lambda: _hook_calls(daemon, "webhook"), timeout=30,
                     message="a failed webhook recorded")
    assert calls[0][0] == 0
    assert calls[0][1].endswith("after 4 attempts")
    # Fired every second during the 7 s of retries, each on time (a loop the retries held
    # up would start them late, all at once).
    wait_for(lambda: len(lines(out)) >= 7, timeout=10, message="seven fires")
    runs = as_json(daemon, "history", "tick", "-n", "7")
    assert len(runs) == 7
    assert all(from_iso(r["started"]) - from_iso(r["scheduled"]) < 2.0 for r in runs), runs
