"""Commands that need no daemon load neither the engine nor asyncio (`check` loads the
cgroup probe of process/ to say which containment a daemon would get)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

TASKS = """
tasks:
  - name: tick
    schedule: "*/5 * * * * *"
    command: "true"
"""


@pytest.mark.parametrize("command", [["check", "-c", "{config}"],
                                     ["next", "-c", "{config}"],
                                     ["history", "--state-dir", "{state}"],
                                     ["logs", "tick", "--state-dir", "{state}"]],
                         ids=lambda c: c[0])
def test_a_command_without_a_daemon_stays_out_of_the_engine(
        command: list[str], tmp_path: Path, write_tasks: Callable[..., Path]) -> None:
    config = write_tasks(TASKS)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    argv = [part.format(config=config, state=state) for part in command]
    probe = ("import sys; from torchd.cli.main import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print(json.dumps(sorted(m for m in sys.modules if m == 'asyncio' or "
             "m.split('.')[:2][-1] in ('engine', 'daemon', 'cluster', 'control'))))")
    result = subprocess.run([sys.executable, "-c", "import json\n" + probe, *argv],
                            capture_output=True, text=True, timeout=30, check=True)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    # control/ lends the client and the vocabulary of requests; its API and server stay out
    assert [m for m in loaded if m != "torchd.control" and not m.startswith(
        ("torchd.control.client", "torchd.control.protocol", "torchd.control.verbs"))] == []
