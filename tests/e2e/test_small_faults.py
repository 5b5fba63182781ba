"""Smaller faults found by the campaign (issue 21): a request nested too deeply, missed
fires named right, a submission held back by daemon.max_running, problems in status."""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.test_operations import as_json, ok, submit
from tests.helpers import Daemon, full_filesystem, wait_for
from torchd.core.timefmt import iso_utc

Factory = Callable[..., Daemon]


def test_a_request_nested_too_deeply_is_a_bad_request(write_tasks: Callable[..., Path],
                                                      daemon_factory: Factory) -> None:
    """100,000 nested brackets on the socket: bad-request, no traceback in the log."""
    daemon = daemon_factory(write_tasks('tasks: [{name: a, schedule: "@hourly", '
                                        'command: "true"}]\n')).start()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(daemon.state_dir / "torchd.sock"))
        sock.sendall(b"[" * 100_000 + b"\n")
        reply = json.loads(sock.makefile("rb").readline())
    assert reply == {"ok": False, "error": {"code": "bad-request",
                                            "message": "the request is nested too deeply"}}
    assert "Traceback" not in daemon.stderr()
    assert daemon.cli("status").returncode == 0


def test_missed_fires_name_the_last_fire_that_did_not_run(
        write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """Down since 4 minutes before the newest fire of an every-minute task with `catchup:
    last`: the newest runs, and the log line and history row name the three before it."""
    config = write_tasks("""
        tasks:
          - {name: minute, schedule: "* * * * *", catchup: last, command: "true"}
    """)
    daemon = daemon_factory(config)
    now = time.time()
    if now % 60 > 45:  # keep the next fire from falling due while the daemon starts
        time.sleep(60 - now % 60 + 0.2)
        now = time.time()
    newest = math.floor(now / 60) * 60
    recorded = newest - 240
    daemon.state_dir.mkdir(mode=0o700)
    (daemon.state_dir / "fires.ledger").write_text(f"minute {float(recorded)!r}\n")
    daemon.start()
    first, last = iso_utc(recorded + 60), iso_utc(recorded + 180)
    wait_for(lambda: any(r["outcome"] == "missed" for r in as_json(daemon, "history")),
             message="the missed row")
    (missed,) = [r for r in as_json(daemon, "history") if r["outcome"] == "missed"]
    assert missed["reason"] == f"3 fire(s) missed from {first} to {last}"
    assert f"task minute: missed 3 fire(s) from {first} to {last}" in daemon.stderr()
    assert f"catching up 1 missed fire(s), {iso_utc(newest)}" in daemon.stderr()


def test_a_submission_waits_for_the_daemon_wide_limit(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """daemon.max_running 1 with overlap skip, the one slot taken: a `torchd submit` waits
    for it and runs, instead of being recorded as skipped."""
    marker = tmp_path / "submitted-ran"
    config = write_tasks("""
        daemon: {max_running: 1}
        tasks:
          - {name: hog, schedule: "@yearly", command: "sleep 2"}
    """)
    daemon = daemon_factory(config).start()
    ok(daemon.cli("trigger", "hog"))
    submitted = ok(submit(daemon, "--name", "later", "--", "touch", str(marker)))
    assert submitted.startswith("submitted submit:later")
    wait_for(marker.exists, timeout=15, message="the submission ran")
    rows = as_json(daemon, "history", "submit:later")
    assert [r["outcome"] for r in rows] == ["ok"]


def test_a_full_disk_shows_in_status(write_tasks: Callable[..., Path],
                                     daemon_factory: Factory) -> None:
    """Task logs on a full file system: status names the problem, and says when it
    began; it clears once the logs are written again."""
    config = write_tasks("""
        tasks:
          - {name: full, schedule: "* * * * * *", command: "echo lost output"}
    """)
    daemon = daemon_factory(config)
    with full_filesystem(daemon.log_dir) as logs:
        daemon.start()

        def problems() -> dict[str, str]:
            status = json.loads(daemon.cli("status", "--json").stdout)
            return {p["key"]: p["message"] for p in status["problems"]}

        found = wait_for(problems, timeout=15, message="a problem in status")
        assert "No space left on device" in found["task-logs"]
        assert "PROBLEM (task-logs, since " in daemon.cli("status").stdout
        (logs / ".filler").unlink()
        wait_for(lambda: "task-logs" not in problems(), timeout=15,
                 message="the problem cleared")
        daemon.kill_everything()
