"""Operations through the real CLI and daemon: history, trigger, kill, pause/resume, logs,
submit, and what survives a kill -9 of the daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import Daemon, lines, process_gone, torchd_cmd, wait_for
from torchd.core.timefmt import iso_utc

pytestmark = pytest.mark.e2e
Factory = Callable[..., Daemon]


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def as_json(daemon: Daemon, *args: str) -> Any:
    return json.loads(ok(daemon.cli(*args, "--json")))


def history(daemon: Daemon, *args: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = as_json(daemon, "history", *args)
    return runs


def ended_runs(daemon: Daemon, task: str, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    """Wait until `count` runs of `task` have an outcome; return them, newest first."""
    def done() -> list[dict[str, Any]]:
        runs = [r for r in history(daemon, task, "-n", "200") if r["outcome"]]
        return runs if len(runs) >= count else []
    return wait_for(done, timeout=timeout, message=f"{count} ended run(s) of {task}")


def submit(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """`torchd submit` (its command comes last, after --, so the state dir goes first)."""
    separator = args.index("--")
    return subprocess.run(
        torchd_cmd("submit", "--state-dir", str(daemon.state_dir), *args[:separator],
                   *args[separator:]),
        capture_output=True, text=True, timeout=60, check=False)


def test_history_records_outcomes_and_filters(write_tasks: Callable[..., Path],
                                              daemon_factory: Factory) -> None:
    """Each run is a row with its outcome, exit code, attempt and trigger; filters work."""
    config = write_tasks("""
        tasks:
          - {name: good, schedule: "* * * * * *", command: "echo fine"}
          - {name: bad, schedule: "* * * * * *", command: "exit 4"}
          - {name: missing, schedule: "* * * * * *", command: ["/no/such/program"]}
    """)
    daemon = daemon_factory(config).start()
    ended_runs(daemon, "good", 2)
    bad = ended_runs(daemon, "bad", 2)[0]
    assert (bad["outcome"], bad["exit_code"], bad["trigger"], bad["attempt"]) == (
        "failed", 4, "schedule", 1)
    assert bad["host"]
    assert bad["pid"]
    assert bad["ended"] >= bad["started"]
    start_error = ended_runs(daemon, "missing", 1)[0]
    assert start_error["outcome"] == "start-error"
    assert "No such file or directory" in start_error["reason"]
    failed = history(daemon, "--failed", "-n", "100")
    assert failed
    assert {r["outcome"] for r in failed} == {"failed", "start-error"}
    # The newest row may be a run still going (no outcome yet): the tasks fire every second.
    good = history(daemon, "good", "-n", "5")
    assert {r["task"] for r in good} == {"good"}
    assert {r["outcome"] for r in good if r["outcome"]} == {"ok"}
    assert len(history(daemon, "-n", "3")) == 3
    assert history(daemon, "--since", "1h")
    # Tasks keep firing while the CLI runs, so "--since 0s" may see runs that start after
    # its cutoff, but never one that started before it.
    cutoff = iso_utc(time.time())  # the JSON form sorts as time does
    recent = history(daemon, "--since", "0s", "-n", "1000")
    assert all(r["at"] >= cutoff for r in recent)
    assert bad["run_id"] not in {r["run_id"] for r in recent}
    table = ok(daemon.cli("history", "bad", "-n", "5")).splitlines()
    assert table[0].split()[:5] == ["RUN", "TASK", "TIME", "DURATION", "OUTCOME"]
    assert any(" failed " in line for line in table[1:])


def test_history_is_read_without_a_daemon(write_tasks: Callable[..., Path],
                                          daemon_factory: Factory) -> None:
    """With the daemon stopped, history and logs read the state dir directly."""
    config = write_tasks("""
        tasks:
          - {name: once, schedule: "* * * * * *", command: "echo from-the-run"}
    """)
    daemon = daemon_factory(config).start()
    run_id = ended_runs(daemon, "once", 1)[0]["run_id"]
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert run_id in {r["run_id"] for r in history(daemon, "once", "-n", "100")}
    assert "from-the-run" in ok(daemon.cli("logs", "once", "--run", run_id))


def test_trigger_wait_exits_with_the_run_exit_code(write_tasks: Callable[..., Path],
                                                   daemon_factory: Factory) -> None:
    config = write_tasks("""
        tasks:
          - {name: job, schedule: "@yearly", command: 'echo "run $TORCHD_RUN_ID"; exit 7'}
    """)
    daemon = daemon_factory(config).start()
    result = daemon.cli("trigger", "job", "--wait")
    assert result.returncode == 7, result.stderr
    run_id = result.stdout.split()[3]
    assert f"run {run_id} ended: failed (exit=7)" in result.stdout
    row = history(daemon, "job")[0]
    assert (row["run_id"], row["trigger"], row["outcome"]) == (run_id, "manual", "failed")
    assert ok(daemon.cli("logs", "job")).splitlines()[1] == f"run {run_id}"


def test_trigger_respects_overlap_unless_forced(write_tasks: Callable[..., Path],
                                                daemon_factory: Factory) -> None:
    config = write_tasks("""
        tasks:
          - {name: slow, schedule: "@yearly", command: "sleep 30", kill_grace: 1s}
    """)
    daemon = daemon_factory(config).start()
    first = as_json(daemon, "trigger", "slow")
    assert first["status"] == "started"
    second = daemon.cli("trigger", "slow")
    assert second.returncode == 1
    assert "skipped: 1 run(s) still running (max_running=1)" in second.stdout
    forced = as_json(daemon, "trigger", "slow", "--force")
    assert forced["status"] == "started"
    status = as_json(daemon, "status")
    assert len(next(t for t in status["tasks"] if t["name"] == "slow")["running"]) == 2
    skipped = [r for r in history(daemon, "slow") if r["outcome"] == "skipped"]
    assert [r["run_id"] for r in skipped] == [second.stdout.split()[3]]


def test_kill_stops_the_run_group_and_records_killed(write_tasks: Callable[..., Path],
                                                     daemon_factory: Factory) -> None:
    config = write_tasks("""
        tasks:
          - name: stubborn
            schedule: "@yearly"
            command: "trap '' TERM; sleep 60 & sleep 60; wait"
            kill_grace: 1s
    """)
    daemon = daemon_factory(config).start()
    run_id = as_json(daemon, "trigger", "stubborn")["run_id"]
    pids = wait_for(lambda: [p.pid for p in daemon.descendants()
                             if p.name() == "sleep"], message="the run's sleeps")
    result = as_json(daemon, "kill", "stubborn", "--run", run_id)
    assert result["runs"][0]["run_id"] == run_id
    assert result["runs"][0]["ended"]
    assert result["runs"][0]["outcome"] == "killed"
    wait_for(lambda: all(process_gone(pid) for pid in pids), message="the group gone")
    assert ended_runs(daemon, "stubborn", 1)[0]["outcome"] == "killed"
    missing = daemon.cli("kill", "stubborn")
    assert (missing.returncode, missing.stderr.strip()) == (
        1, "torchd: task 'stubborn' has no run going")


def test_pause_survives_restart_and_resume_fires_again(tmp_path: Path,
                                                       write_tasks: Callable[..., Path],
                                                       daemon_factory: Factory) -> None:
    out = tmp_path / "out"
    config = write_tasks(f"""
        tasks:
          - {{name: tick, schedule: "* * * * * *", command: "echo x >> {out}"}}
          - {{name: keeper, type: daemon, command: "sleep 300"}}
    """)
    daemon = daemon_factory(config).start()
    wait_for(lambda: lines(out), message="a first fire")
    keeper_pid = wait_for(lambda: [p.pid for p in daemon.descendants() if p.name() == "sleep"],
                          message="the keep-alive instance")[0]
    ok(daemon.cli("pause", "tick"))
    assert ok(daemon.cli("pause", "keeper")).splitlines() == [
        "paused: keeper", "paused tasks: keeper, tick"]  # what it changed, then all paused
    wait_for(lambda: process_gone(keeper_pid), message="the paused instance stopped")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert json.loads((daemon.state_dir / "paused.json").read_text())["tasks"] == [
        "keeper", "tick"]
    daemon.start()
    status = {t["name"]: t for t in as_json(daemon, "status")["tasks"]}
    assert status["tick"]["paused"]
    assert status["keeper"]["paused"]
    assert " paused " in ok(daemon.cli("status"))
    count = len(lines(out))
    skipped = wait_for(lambda: [r for r in history(daemon, "tick", "-n", "50")
                                if r["reason"] == "the task is paused"],
                       message="paused fires recorded as skipped")
    assert skipped[0]["outcome"] == "skipped"
    assert len(lines(out)) == count  # nothing ran while paused
    assert not [p for p in daemon.descendants() if p.name() == "sleep"]
    ok(daemon.cli("resume", "--all"))
    wait_for(lambda: len(lines(out)) > count, message="fires after resume")
    wait_for(lambda: [p for p in daemon.descendants() if p.name() == "sleep"],
             message="the instance started again")


def test_pause_all_and_errors(write_tasks: Callable[..., Path],
                              daemon_factory: Factory) -> None:
    config = write_tasks("""
        tasks:
          - {name: a, schedule: "@yearly", command: "true"}
          - {name: dormant, schedule: "@yearly", command: "true", enabled: false}
    """)
    daemon = daemon_factory(config).start()
    assert as_json(daemon, "pause", "--all")["paused_all"] is True
    refused = daemon.cli("resume", "a")
    assert refused.returncode == 1
    assert "task 'a' is paused by 'pause --all'; use 'resume --all'" in refused.stderr
    paused_trigger = daemon.cli("trigger", "a")
    assert "task 'a' is paused; resume it, or use --force" in paused_trigger.stderr
    unknown = daemon.cli("pause", "nope")
    assert (unknown.returncode, unknown.stderr.strip()) == (1, "torchd: no task named 'nope'")
    both = daemon.cli("pause", "a", "--all")
    assert both.returncode == 2
    ok(daemon.cli("resume", "--all"))
    disabled = daemon.cli("trigger", "dormant")
    assert disabled.stderr.strip() == (
        "torchd: task 'dormant' is disabled; use --force to run it anyway")
    assert as_json(daemon, "trigger", "dormant", "--force", "--wait")["outcome"] == "ok"


def test_logs_of_a_run_last_lines_and_follow(write_tasks: Callable[..., Path],
                                             daemon_factory: Factory) -> None:
    config = write_tasks("""
        tasks:
          - name: talk
            schedule: "@yearly"
            command: 'for i in 1 2 3 4 5; do echo "line $i of $TORCHD_RUN_ID"; done'
          - name: stream
            type: daemon
            command: 'i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.2; done'
    """)
    daemon = daemon_factory(config).start()
    first = as_json(daemon, "trigger", "talk", "--wait")["run_id"]
    second = as_json(daemon, "trigger", "talk", "--wait")["run_id"]
    assert f"line 5 of {second}" in ok(daemon.cli("logs", "talk"))
    text = ok(daemon.cli("logs", "talk", "--run", first))
    assert f"line 1 of {first}" in text
    assert second not in text
    assert ok(daemon.cli("logs", "talk", "--run", first, "-n", "2")).splitlines()[0] == (
        f"line 5 of {first}")
    unknown = daemon.cli("logs", "talk", "--run", "feedfeed")
    assert "no record of run feedfeed of task 'talk' in the history" in unknown.stderr
    follower = subprocess.Popen(torchd_cmd("logs", "stream", "-f", "--state-dir",
                                           str(daemon.state_dir)),
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert follower.stdout is not None
        seen = [follower.stdout.readline() for _ in range(15)]
        ticks = [int(line.split()[1]) for line in seen if line.startswith("tick ")]
        assert len(ticks) >= 10
        assert ticks == sorted(ticks)
    finally:
        os.killpg(follower.pid, signal.SIGKILL)
        follower.communicate()
    as_lines = subprocess.Popen(torchd_cmd("logs", "stream", "-f", "--json", "--state-dir",
                                           str(daemon.state_dir)),
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert as_lines.stdout is not None
        replies = [json.loads(as_lines.stdout.readline()) for _ in range(3)]
        assert "run_id" in replies[0]
        assert all(r["text"].startswith("tick ") for r in replies[1:])
        assert replies[1]["offset"] < replies[2]["offset"]
    finally:
        os.killpg(as_lines.pid, signal.SIGKILL)
        as_lines.communicate()


def test_submit_runs_once_and_at_survives_restart(tmp_path: Path,
                                                  write_tasks: Callable[..., Path],
                                                  daemon_factory: Factory) -> None:
    out = tmp_path / "out"
    config = write_tasks("""
        tasks:
          - {name: placeholder, schedule: "@yearly", command: "true"}
    """)
    daemon = daemon_factory(config).start()
    now = submit(daemon, "--name", "now", "--", "/bin/sh", "-c", f"echo now >> {out}")
    assert now.returncode == 0, now.stderr
    assert now.stdout.startswith("submitted submit:now: runs at ")
    wait_for(lambda: lines(out) == ["now"], message="the submitted run")
    row = ended_runs(daemon, "submit:now", 1)[0]
    assert (row["trigger"], row["outcome"]) == ("submit", "ok")
    # due after the restart below, however slowly a loaded machine makes it
    later = submit(daemon, "--name", "later", "--at", "10s", "--", "/bin/sh", "-c",
                   f"echo later >> {out}")
    assert later.returncode == 0, later.stderr
    tasks = {t["name"]: t for t in as_json(daemon, "status")["tasks"]}
    assert tasks["submit:later"]["submitted"]
    assert "submit:now" not in tasks
    daemon.signal(signal.SIGTERM)  # it is kept while the daemon is down
    assert daemon.wait_exit() == 0
    assert [e["name"] for e in json.loads((daemon.state_dir / "submitted.json").read_text())] \
        == ["submit:later"]
    daemon.start()
    wait_for(lambda: lines(out) == ["now", "later"], timeout=25, message="the later run")
    wait_for(lambda: json.loads((daemon.state_dir / "submitted.json").read_text()) == [],
             message="the submission forgotten once run")
    bad = submit(daemon, "--at", "2001-01-01T00:00:00Z", "--", "true")
    assert (bad.returncode, bad.stderr.strip()) == (
        1, "torchd: at: 2001-01-01T00:00:00Z is in the past")
    elsewhere = submit(daemon, "--hosts", "no-such-host-*", "--", "true")
    assert "this host does not match hosts" in elsewhere.stderr


def test_kill_9_mid_run_is_recorded_lost_after_restart(write_tasks: Callable[..., Path],
                                                       daemon_factory: Factory) -> None:
    config = write_tasks("""
        tasks:
          - {name: long, schedule: "@yearly", command: "sleep 120"}
    """)
    daemon = daemon_factory(config).start()
    run_id = as_json(daemon, "trigger", "long")["run_id"]
    sleeper = wait_for(lambda: [p.pid for p in daemon.descendants() if p.name() == "sleep"],
                       message="the run")[0]
    wait_for(lambda: history(daemon, "long") and history(daemon, "long")[0]["pid"],
             message="the run's row")
    os.kill(daemon.pid, signal.SIGKILL)
    daemon.wait_exit()
    assert psutil.pid_exists(sleeper)  # orphaned, still running
    daemon.start()
    row = wait_for(lambda: [r for r in history(daemon, "long") if r["run_id"] == run_id
                            and r["outcome"]], message="the lost run closed")[0]
    assert row["outcome"] == "lost"
    assert row["reason"] == ("the daemon died while it ran; its process was still running "
                             "and is ended with its group")
    wait_for(lambda: process_gone(sleeper), message="the orphan ended")
    assert f"task long run {run_id} was in flight when the daemon died" in daemon.stderr()


def test_bad_requests_get_error_replies(write_tasks: Callable[..., Path],
                                        daemon_factory: Factory) -> None:
    """Malformed and ill-typed requests are answered with an error; the daemon goes on."""
    import socket

    config = write_tasks("""
        tasks:
          - {name: a, schedule: "@yearly", command: "true"}
    """)
    daemon = daemon_factory(config).start()
    sock_path = daemon.state_dir / "torchd.sock"
    assert oct(sock_path.stat().st_mode & 0o777) == "0o600"

    def ask(raw: bytes) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(sock_path))
            sock.sendall(raw)
            reply: dict[str, Any] = json.loads(sock.makefile("rb").readline())
            return reply

    cases = {
        b"not json\n": "bad-request",
        b"[1, 2]\n": "bad-request",
        b'{"cmd": "explode"}\n': "bad-request",
        b'{"cmd": "trigger"}\n': "bad-argument",
        b'{"cmd": "trigger", "task": 5}\n': "bad-argument",
        b'{"cmd": "kill", "task": "a", "run": ["x"]}\n': "bad-argument",
        b'{"cmd": "logs", "task": "a", "lines": -1}\n': "bad-argument",
        b'{"cmd": "submit", "command": []}\n': "bad-argument",
        b'{"cmd": "submit", "command": ["true"], "at": "soon"}\n': "bad-argument",
        b'{"cmd": "pause", "task": "a", "all": "yes"}\n': "bad-argument",
        b'{"cmd": "history", "limit": "many"}\n': "bad-argument",
    }
    for raw, code in cases.items():
        reply = ask(raw)
        assert (reply["ok"], reply["error"]["code"]) == (False, code), raw
    assert ask(b'{"cmd": "ping"}\n')["ok"] is True


def test_socket_group_lets_its_members_in_and_peers_are_checked(
        write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """With daemon.socket_group the socket is 0660 for that group; a member (nobody, in
    nogroup) may use it; a peer outside it is refused by the daemon itself even if the
    file's mode were opened up."""
    import grp
    import shutil
    import stat
    import sys
    import tempfile

    from tests.helpers import require_root, require_tool

    require_root()
    setpriv = require_tool("setpriv")
    base = Path(tempfile.mkdtemp(prefix="torchd-group-", dir="/tmp"))
    base.chmod(0o755)
    try:
        config = write_tasks("""
            daemon: {socket_group: nogroup}
            tasks:
              - {name: a, schedule: "@yearly", command: "true"}
        """)
        daemon = Daemon(config=config, state_dir=base / "state").start()
        try:
            base.joinpath("state").chmod(0o755)
            sock = base / "state" / "torchd.sock"
            info = sock.stat()
            assert stat.S_IMODE(info.st_mode) == 0o660
            assert info.st_gid == grp.getgrnam("nogroup").gr_gid

            def as_user(user: str, group: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [setpriv, f"--reuid={user}", f"--regid={group}", "--clear-groups",
                     sys.executable, "-m", "torchd", "status", "--json", "--state-dir",
                     str(base / "state")],
                    capture_output=True, text=True, timeout=60, check=False,
                    env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path.cwd())}, cwd="/")

            member = as_user("nobody", "nogroup")
            assert member.returncode == 0, member.stderr
            assert json.loads(member.stdout)["tasks"][0]["name"] == "a"
            outsider = as_user("daemon", "daemon")
            assert outsider.returncode == 1
            assert "Permission denied" in outsider.stderr
            sock.chmod(0o666)  # the file no longer protects it: the daemon's check does
            refused = as_user("daemon", "daemon")
            assert refused.returncode == 1
            assert refused.stderr.strip() == (
                "torchd: permission denied: this user may not use the torchd control socket "
                "(see daemon.socket_group)")
        finally:
            daemon.kill_everything()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_queued_trigger_keeps_its_run_id_and_can_be_waited_for(
        tmp_path: Path, write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    """With overlap: queue the second trigger waits for the first run; --wait follows it
    through the queue to its end, under the run id it announced."""
    release = tmp_path / "release"
    config = write_tasks(f"""
        tasks:
          - name: serial
            schedule: "@yearly"
            overlap: queue
            command: 'while [ ! -e {release} ]; do sleep 0.05; done; echo "id $TORCHD_RUN_ID"'
    """)
    daemon = daemon_factory(config).start()
    first = as_json(daemon, "trigger", "serial")
    assert first["status"] == "started"
    waiting = subprocess.Popen(torchd_cmd("trigger", "serial", "--wait", "--json",
                                          "--state-dir", str(daemon.state_dir)),
                               stdout=subprocess.PIPE, text=True)
    wait_for(lambda: as_json(daemon, "status")["tasks"][0]["waiting"] == 1,
             message="the second trigger queued")
    release.touch()
    out, _ = waiting.communicate(timeout=30)
    second = json.loads(out)
    assert (second["status"], second["outcome"]) == ("queued", "ok")
    rows = {r["run_id"]: r for r in history(daemon, "serial")}
    assert rows[second["run_id"]]["started"] >= rows[first["run_id"]]["ended"]
    assert f"id {second['run_id']}" in ok(daemon.cli("logs", "serial"))
