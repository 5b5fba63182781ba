"""Relative paths in a task file mean the task file's directory (issue 23): for the state
dir, a task's cwd and its program, in a detached daemon and for the CLI run elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import end_detached, torchd_cmd, wait_for

pytestmark = pytest.mark.e2e


def torchd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(torchd_cmd(*args), capture_output=True, text=True, timeout=60,
                          check=False, cwd=cwd)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A directory with a task file, a script and a jobs directory, as in a git checkout."""
    root = tmp_path / "project"
    (root / "jobs").mkdir(parents=True)
    script = root / "script.sh"
    script.write_text("#!/bin/sh\necho ran > script.out\n")
    script.chmod(0o755)
    (root / "tasks.yaml").write_text(textwrap.dedent("""\
        daemon:
          state_dir: ./state
        tasks:
          - {name: in-jobs, schedule: "* * * * * *", cwd: ./jobs,
             command: ["sh", "-c", "pwd > out.txt"]}
          - {name: script, schedule: "* * * * * *", command: ["./script.sh"]}
          - {name: shell, schedule: "* * * * * *", command: "pwd > shell.txt"}
        """))
    yield root
    end_detached(root / "state")


def test_a_detached_daemon_reads_relative_paths_against_the_task_file(
        project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    started = torchd("start", "-c", "../project/tasks.yaml", cwd=elsewhere)
    assert started.returncode == 0, started.stderr
    assert f"state dir {project / 'state'}" in started.stdout
    wait_for(lambda: all((project / name).exists()
                         for name in ("jobs/out.txt", "script.out", "shell.txt")),
             timeout=15, message="the three tasks' files")
    assert (project / "jobs" / "out.txt").read_text().strip() == str(project / "jobs")
    assert (project / "shell.txt").read_text().strip() == str(project)
    assert not (elsewhere / "state").exists()
    # the CLI run from a third place finds the daemon by the same rule
    status = torchd("status", "-c", str(project / "tasks.yaml"), cwd=Path("/"))
    assert status.returncode == 0, status.stderr
    stopped = torchd("stop", "-c", "project/tasks.yaml", cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stderr


def test_check_warns_of_a_cwd_or_program_missing_here(tmp_path: Path) -> None:
    config = tmp_path / "tasks.yaml"
    (tmp_path / "not-executable.sh").write_text("#!/bin/sh\n")
    config.write_text(textwrap.dedent("""\
        tasks:
          - {name: no-dir, schedule: "@hourly", cwd: ./missing, command: ["true"]}
          - {name: no-script, schedule: "@hourly", command: ["./missing.sh"]}
          - {name: no-program, schedule: "@hourly", command: ["no-such-program-here"]}
          - {name: not-executable, schedule: "@hourly", command: ["./not-executable.sh"]}
          - {name: elsewhere, schedule: "@hourly", hosts: ["no-such-host"],
             command: ["./missing.sh"]}
          - {name: fine, schedule: "@hourly", command: ["true"]}
        """))
    result = torchd("check", "-c", str(config), cwd=Path("/"))
    assert result.returncode == 0, result.stderr  # one file serves hosts that may differ
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    fix = ("[missing] (install it, or restrict the task with hosts:; or silence it with "
           "lint: {ignore: [missing]})")
    assert warnings == [
        f"warning: {config}:2: task 'no-dir': cwd: {tmp_path}/missing is not a directory "
        f"on this host {fix}",
        f"warning: {config}:3: task 'no-script': command: {tmp_path}/missing.sh does not "
        f"exist on this host {fix}",
        f"warning: {config}:4: task 'no-program': command: 'no-such-program-here' is not "
        f"found on PATH={os.environ.get('PATH') or os.defpath} {fix}",
        f"warning: {config}:5: task 'not-executable': command: {tmp_path}/not-executable.sh "
        f"is not executable {fix}",
    ]


def test_a_start_error_says_where_the_program_was_looked_for(tmp_path: Path) -> None:
    config = tmp_path / "tasks.yaml"
    config.write_text(textwrap.dedent("""\
        tasks:
          - {name: script, schedule: "* * * * * *", command: ["./missing.sh"]}
          - {name: program, schedule: "* * * * * *", command: ["no-such-program-here"],
             env: {PATH: "/usr/bin:/bin"}}
        """))
    state = tmp_path / "state"
    try:
        started = torchd("start", "-c", str(config), "--state-dir", str(state), cwd=Path("/"))
        assert started.returncode == 0, started.stderr

        def details() -> set[str]:
            history = torchd("history", "--state-dir", str(state), "--json", cwd=tmp_path)
            return {run["reason"] for run in json.loads(history.stdout or "[]")
                    if run["outcome"] == "start-error"}

        found = wait_for(lambda: len(details()) == 2 and details(), timeout=15,
                         message="both start errors")
        assert found == {
            f"No such file or directory: ./missing.sh (looked in {tmp_path})",
            "no-such-program-here: not found on PATH=/usr/bin:/bin",
        }
    finally:
        end_detached(state)
