"""A drop-in directory (issue 23): `-c DIR` loads every *.yaml in it, one namespace of task
names, each problem with its own file and line; the daemon follows files added to it."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import Daemon, require_root, torchd_cmd, wait_for
from torchd.config.loader import TASK_KEYS
from torchd.control.client import call

pytestmark = pytest.mark.e2e
Factory = Callable[..., Daemon]


def torchd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(torchd_cmd(*args), capture_output=True, text=True, timeout=60,
                          check=False)


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    path.chmod(0o644)
    return path


def test_check_loads_every_yaml_file_as_one(tmp_path: Path) -> None:
    tasks_d = tmp_path / "tasks.d"
    write(tasks_d, "00-daemon.yaml", """\
        daemon: {timezone: Europe/Berlin}
        tasks: []
        """)
    write(tasks_d, "backup.yaml", 'tasks: [{name: backup, schedule: "@daily", command: "true"}]\n')
    write(tasks_d, "report.yaml", 'tasks: [{name: report, schedule: "@hourly", command: "true"}]\n')
    write(tasks_d, ".report.yaml.swp", "not yaml: [\n")  # an editor's: not a task file
    write(tasks_d, "notes.txt", "not a task file either\n")
    result = torchd("check", "-c", str(tasks_d))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{tasks_d}: OK, 2 task(s), 2 active on this host")
    # every task takes its defaults from the one daemon section
    next_fire = torchd("next", "-c", str(tasks_d), "backup", "--count", "1")
    assert "T00:00:00+01:00" in next_fire.stdout or "T00:00:00+02:00" in next_fire.stdout


def test_each_problem_names_its_own_file_and_line(tmp_path: Path) -> None:
    tasks_d = tmp_path / "tasks.d"
    first = write(tasks_d, "a.yaml", """\
        daemon: {timezone: UTC}
        tasks:
          - {name: backup, schedule: "@daily", command: "true"}
        """)
    second = write(tasks_d, "b.yaml", """\
        daemon: {watch: false}
        tasks:
          - {name: report, schedule: "@hourly", command: "true", colour: blue}
          - {name: backup, schedule: "@daily", command: "true"}
        """)
    result = torchd("check", "-c", str(tasks_d))
    assert result.returncode == 2
    assert result.stderr.splitlines()[:3] == [
        f"{second}:1: daemon: daemon settings are in a.yaml already; only one file of a "
        "drop-in directory may have them",
        f"{second}:3: task 'report': colour: unknown key; known keys: " + KNOWN_KEYS,
        f"{second}:4: task 'backup': name: duplicate task name (first defined at "
        f"{first}:3)",
    ][:3] or result.stderr


KNOWN_KEYS = ", ".join(TASK_KEYS)  # the message lists them (test_config pins the text)


def test_an_empty_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tasks.d").mkdir()
    result = torchd("check", "-c", str(tmp_path / "tasks.d"))
    assert (result.returncode, result.stderr.splitlines()[0]) == (
        2, f"{tmp_path / 'tasks.d'}: holds no *.yaml task file")


def test_the_daemon_follows_a_file_added_to_the_directory(
        tmp_path: Path, daemon_factory: Factory) -> None:
    tasks_d = tmp_path / "tasks.d"
    write(tasks_d, "a.yaml", 'tasks: [{name: a, schedule: "@hourly", command: "true"}]\n')
    daemon = daemon_factory(tasks_d).start()
    write(tasks_d, "b.yaml", 'tasks: [{name: b, schedule: "@hourly", command: "true"}]\n')

    def names() -> list[str]:
        status = call(daemon.state_dir / "torchd.sock", "status")
        return sorted(task["name"] for task in status["tasks"])

    wait_for(lambda: names() == ["a", "b"], timeout=10, message="the added file's task")
    (tasks_d / "a.yaml").unlink()
    wait_for(lambda: names() == ["b"], timeout=10, message="the removed file's task gone")
    write(tasks_d, ".b.yaml.swp", "junk: [\n")  # not a task file: no reload is tried
    reload = daemon.cli("reload")
    assert reload.returncode == 0, reload.stderr
    assert call(daemon.state_dir / "torchd.sock", "status")["last_reload"]["ok"]


def test_as_root_a_file_others_may_write_is_refused(tmp_path: Path) -> None:
    require_root()
    tasks_d = tmp_path / "tasks.d"
    write(tasks_d, "a.yaml", 'tasks: [{name: a, schedule: "@hourly", command: "true"}]\n')
    planted = write(tasks_d, "b.yaml", 'tasks: [{name: b, schedule: "@hourly", '
                                       'command: "true"}]\n')
    os.chmod(planted, 0o666)  # noqa: S103 - the hostile file under test
    result = torchd("check", "-c", str(tasks_d))
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        f"{planted}: torchd runs as root and the file is writable by group or others (mode "
        f"0666); refusing it: chmod go-w {planted}")
