"""Hot reload through SIGUSR2, `torchd reload` and file changes, with running work kept."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import Daemon, fire_ids, lines, process_gone, record_cmd, wait_for
from torchd.control.client import call

pytestmark = pytest.mark.e2e


def status(daemon: Daemon) -> dict[str, Any]:
    result = daemon.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def task(daemon: Daemon, name: str) -> dict[str, Any]:
    return next(t for t in status(daemon)["tasks"] if t["name"] == name)


def replace_file(path: Path, text: str) -> None:
    """Save the way editors and deploy tools do: write a temporary file, rename it over."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(textwrap.dedent(text))
    os.replace(tmp, path)


def test_reload_keeps_running_cron_run_and_applies_new_schedule(
        tmp_path: Path, write_tasks: Callable[..., Path],
        daemon_factory: Callable[..., Daemon]) -> None:
    long_out, tick_out, release = tmp_path / "long", tmp_path / "tick", tmp_path / "release"
    # The run goes on until the test lets it end, however slowly the reload comes.
    long_cmd = (f'echo "start $$" >> {long_out}; until [ -e {release} ]; do sleep 0.05; done;'
                f' echo "done $$" >> {long_out}')
    config = write_tasks(f"""
        daemon: {{watch: false}}
        tasks:
          - {{name: long, schedule: "* * * * * *", command: '{long_cmd}'}}
          - {{name: tick, schedule: "* * * * * *", command: '{record_cmd(tick_out)}'}}
        """)
    daemon = daemon_factory(config).start()
    first = wait_for(lambda: lines(long_out), timeout=10, message="the long run")[0]
    pid = int(first.split()[1])
    replace_file(config, f"""
        daemon: {{watch: false}}
        tasks:
          - {{name: long, schedule: "@hourly", command: "echo v2"}}
          - {{name: tick, schedule: "*/3 * * * * *", command: '{record_cmd(tick_out)}'}}
        """)
    result = daemon.cli("reload")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        result.stdout.splitlines()[0],
        "0 added, 2 changed, 0 removed, 0 unchanged",
        "  ~ long (schedule, command)",
        "  ~ tick (schedule)",
    ]
    assert result.stdout.startswith("reloaded: config ")
    # ping stays small however many tasks changed: counts; the names are one request away
    ping = call(daemon.state_dir / "torchd.sock", "ping")
    assert ping["last_reload"]["changes"] == {"added": 0, "changed": 2, "removed": 0,
                                              "unchanged": 0}
    full = call(daemon.state_dir / "torchd.sock", "last_reload")
    assert full["changes"]["changed"] == {"long": ["schedule", "command"], "tick": ["schedule"]}
    assert full["source"] == "request", "the CLI asks over the socket; it does not signal"
    assert (f"reload (request) applied config {full['config_hash']}: 0 added, 2 changed "
            "(long: schedule, command; tick: schedule), 0 removed") in daemon.stderr()
    again = call(daemon.state_dir / "torchd.sock", "reload")
    assert (again["source"], again["ok"], again["seq"]) == ("request", True, full["seq"] + 1)
    assert again["changes"] == {"added": [], "changed": {}, "removed": [], "unchanged": 2}
    assert psutil.pid_exists(pid), "reload must not touch a running cron run"
    release.touch()
    wait_for(lambda: f"done {pid}" in lines(long_out), timeout=10, message="the run to finish")
    # The run's last echo comes before its exit, and its footer after the daemon reaps it.
    footers = wait_for(lambda: [line for line in lines(daemon.log_dir / "long.log")
                                if " end run=" in line], timeout=10, message="the run's footer")
    assert len(footers) == 1
    assert footers[0].endswith(" outcome=ok"), footers
    reloaded_at = len(fire_ids(tick_out))
    wait_for(lambda: len(fire_ids(tick_out)) >= reloaded_at + 2, timeout=12,
             message="two fires on the new schedule")
    new_seconds = [int(i.split(":")[-1].rstrip("Z")) for i in fire_ids(tick_out)[reloaded_at:]]
    assert all(s % 3 == 0 for s in new_seconds), new_seconds
    assert len(fire_ids(tick_out)) == len(set(fire_ids(tick_out)))


def test_broken_file_keeps_last_good_config(tmp_path: Path, write_tasks: Callable[..., Path],
                                            daemon_factory: Callable[..., Daemon]) -> None:
    out = tmp_path / "out"
    config = write_tasks(f"""
        daemon: {{watch: false}}
        tasks:
          - {{name: tick, schedule: "* * * * * *", command: '{record_cmd(out)}'}}
        """)
    daemon = daemon_factory(config).start()
    wait_for(lambda: lines(out), timeout=10, message="a first fire")
    good_hash = status(daemon)["config_hash"]
    replace_file(config, """
        daemon: {watch: false}
        tasks:
          - {name: tick, schedule: "61 * * * * *", command: "true"}
        """)
    cli = daemon.cli("reload")
    assert cli.returncode == 2
    assert cli.stderr.splitlines()[0] == (f"{config}:4: task 'tick': schedule: second field "
                                          "'61' is out of range 0-59")
    assert cli.stderr.splitlines()[-1] == "1 problem found; the daemon keeps its previous config"
    assert status(daemon)["last_reload"]["source"] == "request", "the daemon parsed it"
    daemon.signal(signal.SIGUSR2)  # the same path, whoever asks
    last = wait_for(lambda: (r := status(daemon)["last_reload"])["source"] == "signal" and r,
                    timeout=10, message="the rejected reload")
    assert last["ok"] is False
    assert last["errors"] == [f"{config}:4: task 'tick': schedule: second field '61' is out of "
                              "range 0-59"]
    assert status(daemon)["config_hash"] == good_hash
    count = len(lines(out))
    wait_for(lambda: len(lines(out)) >= count + 2, timeout=10, message="the old task firing on")


def test_file_change_reloads_by_itself(tmp_path: Path, write_tasks: Callable[..., Path],
                                       daemon_factory: Callable[..., Daemon]) -> None:
    new_out = tmp_path / "new"
    config = write_tasks('tasks: [{name: old, schedule: "@hourly", command: "true"}]\n')
    daemon = daemon_factory(config).start()
    replace_file(config, f"""
        tasks:
          - {{name: old, schedule: "@hourly", command: "true"}}
          - {{name: new, schedule: "* * * * * *", command: '{record_cmd(new_out)}'}}
        """)
    wait_for(lambda: lines(new_out), timeout=10, message="the task added by a renamed file")
    last = status(daemon)["last_reload"]
    assert last["source"] == "file change"
    assert last["changes"]["added"] == ["new"]
    with config.open("a") as handle:  # an in-place edit is seen too
        handle.write('  - {name: third, schedule: "@daily", command: "true"}\n')
    wait_for(lambda: any(t["name"] == "third" for t in status(daemon)["tasks"]), timeout=10,
             message="the task added by an in-place edit")


def test_dry_run_shows_the_diff_and_changes_nothing(
        write_tasks: Callable[..., Path], daemon_factory: Callable[..., Daemon]) -> None:
    config = write_tasks("""
        daemon: {watch: false, timezone: UTC}
        tasks:
          - {name: a, schedule: "@hourly", command: "true"}
          - {name: b, schedule: "@hourly", command: "true"}
        """)
    daemon = daemon_factory(config).start()
    replace_file(config, """
        daemon: {watch: false, timezone: UTC}
        tasks:
          - {name: a, schedule: "0 0 12 * * *", command: "true"}
          - {name: c, schedule: "@hourly", command: "true"}
        """)
    result = daemon.cli("reload", "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[1:5] == ["1 added, 1 changed, 1 removed, 0 unchanged", "  + c",
                        "  ~ a (schedule)", "  - b"]
    assert any(line.startswith("  next fires of a: ") and "T12:00:00+00:00" in line
               for line in out)  # text: in the task's zone, to the second
    assert [t["name"] for t in status(daemon)["tasks"]] == ["a", "b"]
    assert status(daemon)["generation"] == 1


def test_dry_run_under_watch_shows_what_the_watcher_applied(
        write_tasks: Callable[..., Path], daemon_factory: Callable[..., Daemon]) -> None:
    """With watch: true the edit is applied before a dry run could see it: the dry run says
    so, and shows what that reload changed."""
    config = write_tasks("""
        daemon: {watch: true, timezone: UTC}
        tasks:
          - {name: a, schedule: "@hourly", command: "true"}
          - {name: b, schedule: "@hourly", command: "true"}
        """)
    daemon = daemon_factory(config).start()
    replace_file(config, """
        daemon: {watch: true, timezone: UTC}
        tasks:
          - {name: a, schedule: "0 0 12 * * *", command: "true"}
          - {name: c, schedule: "@hourly", command: "true"}
        """)
    wait_for(lambda: status(daemon)["generation"] == 2, timeout=10, message="the watcher's reload")
    result = daemon.cli("reload", "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0].startswith(f"dry run: nothing to reload: {config} (hash ")
    assert ("is unchanged; the daemon watches it and has already applied it (generation 2, "
            "file change at ") in out[0]
    assert out[1:5] == ["1 added, 1 changed, 1 removed, 0 unchanged", "  + c",
                        "  ~ a (schedule)", "  - b"]


def test_daemon_tasks_across_reload(tmp_path: Path, write_tasks: Callable[..., Path],
                                    daemon_factory: Callable[..., Daemon]) -> None:
    """Unchanged keepers keep their pid; changed ones restart; removed ones stop."""
    config = write_tasks("""
        daemon: {watch: false}
        tasks:
          - {name: steady, type: daemon, command: "sleep 300"}
          - {name: edited, type: daemon, command: "sleep 300"}
          - {name: dropped, type: daemon, command: "sleep 300"}
        """)
    daemon = daemon_factory(config).start()
    pids = wait_for(lambda: all(t["running"] for t in status(daemon)["tasks"]) and
                    {t["name"]: t["running"][0] for t in status(daemon)["tasks"]},
                    timeout=10, message="three keepers")
    replace_file(config, """
        daemon: {watch: false}
        tasks:
          - {name: steady, type: daemon, command: "sleep 300"}
          - {name: edited, type: daemon, command: "sleep 301"}
        """)
    assert daemon.cli("reload").returncode == 0
    wait_for(lambda: process_gone(pids["dropped"]), timeout=15, message="removed keeper stopped")
    wait_for(lambda: process_gone(pids["edited"]), timeout=15, message="old edited keeper gone")
    new_edited = wait_for(lambda: task(daemon, "edited")["running"], timeout=10,
                          message="the edited keeper restarted")[0]
    assert new_edited != pids["edited"]
    assert " ".join(psutil.Process(new_edited).cmdline()).endswith("sleep 301")
    assert task(daemon, "steady")["running"] == [pids["steady"]]
