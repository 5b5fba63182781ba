"""Task output where operators look (issue 23): on `torchd run`'s stdout, prefixed by task
and run, rate-limited; `<N>` levels on a stream to the journal; times in the log file."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Daemon, lines, wait_for

pytestmark = pytest.mark.e2e
Factory = Callable[..., Daemon]
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def run_ids(daemon: Daemon, task: str) -> list[str]:
    history = daemon.cli("history", task, "--json")
    assert history.returncode == 0, history.stderr
    return [run["run_id"] for run in json.loads(history.stdout)]


def test_task_output_is_on_stdout_with_task_and_run(write_tasks: Callable[..., Path],
                                                     daemon_factory: Factory) -> None:
    config = write_tasks("""
        tasks:
          - {name: greet, schedule: "@reboot", command: "printf 'hello\\nworld\\npartial'"}
          - {name: quiet, schedule: "@reboot", command: "echo secret", log: {stdout: false}}
        """)
    daemon = daemon_factory(config).start()
    out = daemon.stderr_path  # the daemon's stdout and stderr, as a container keeps them
    wait_for(lambda: any("greet[" in line and line.endswith(": partial")
                         for line in lines(out)), timeout=15, message="greet's output")
    wait_for(lambda: run_ids(daemon, "quiet"), timeout=15, message="quiet's run")
    (run_id,) = run_ids(daemon, "greet")
    echoed = [line for line in lines(out) if f"greet[{run_id}]: " in line]
    assert [re.sub(f"^{STAMP} ", "", line) for line in echoed] == [
        f"greet[{run_id}]: hello", f"greet[{run_id}]: world", f"greet[{run_id}]: partial"]
    assert all(re.match(f"{STAMP} greet", line) for line in echoed)
    assert not any("secret" in line for line in lines(out))  # log: {stdout: false}
    assert "secret" in daemon.cli("logs", "quiet").stdout  # still in its log


def test_a_runaway_task_is_rate_limited_on_stdout_not_in_its_log(
        write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    config = write_tasks("""
        tasks:
          - {name: flood, schedule: "@reboot", command: "seq 1 5000",
             log: {stdout_rate: 1}}
        """)
    daemon = daemon_factory(config).start()
    out = daemon.stderr_path
    wait_for(lambda: any("not shown here" in line for line in lines(out)), timeout=15,
             message="the notice of withheld lines")
    shown = [line.split("]: ", 1)[1] for line in lines(out) if "flood[" in line]
    # ten seconds' worth at 1/s (a slow rate: however a loaded machine splits the output
    # into reads, no token comes back before seq has written all of it)
    assert shown[:10] == [str(n) for n in range(1, 11)]
    assert shown[10].startswith("torchd: 4990 line(s) not shown here "
                                "(log.stdout_rate=1/s); the task log has them")
    logged = daemon.cli("logs", "flood").stdout.splitlines()
    assert [n for n in logged if n.isdigit()] == [str(n) for n in range(1, 5001)]


def test_on_a_journal_stream_lines_carry_levels_not_times(
        write_tasks: Callable[..., Path], daemon_factory: Factory) -> None:
    config = write_tasks("""
        tasks:
          - {name: greet, schedule: "@reboot", command: "echo hello"}
          - {name: broken, schedule: "@reboot", command: ["no-such-program-here"]}
        """)
    daemon = daemon_factory(config)
    daemon.stderr_path.parent.mkdir(parents=True, exist_ok=True)
    daemon.stderr_path.touch()
    info = os.stat(daemon.stderr_path)  # the stream systemd would name
    daemon.start_env = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
    daemon.start()
    out = daemon.stderr_path
    wait_for(lambda: any(line.startswith("<6>greet[") for line in lines(out)), timeout=15,
             message="greet's output")
    wait_for(lambda: any(line.startswith("<3>torchd.") and "could not start" in line
                         for line in lines(out)), timeout=15, message="the start error")
    assert any(line.startswith("<6>torchd.") and " started pid=" in line for line in lines(out))
    assert not any(re.match(r"\d{4}-", line) for line in lines(out))


def test_timestamps_start_each_line_in_the_log(write_tasks: Callable[..., Path],
                                               daemon_factory: Factory) -> None:
    config = write_tasks("""
        tasks:
          - {name: slow, schedule: "@reboot", log: {timestamps: true, stdout: false},
             command: "printf 'one\\ntw'; sleep 0.3; printf 'o\\nthree\\n'"}
        """)
    daemon = daemon_factory(config).start()
    wait_for(lambda: "three" in daemon.cli("logs", "slow").stdout, timeout=15,
             message="the run's output")
    output = [line for line in daemon.cli("logs", "slow").stdout.splitlines()
              if not line.startswith("---")]
    assert [re.sub(f"^{STAMP} ", "", line) for line in output] == ["one", "two", "three"]
    assert all(re.match(f"{STAMP} ", line) for line in output)
