"""Loading a real task file as root: a file others can change is refused (the parsing
rules are in tests/unit/test_config.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import require_root
from torchd.config.source import load_config
from torchd.core.errors import ConfigError


@pytest.mark.parametrize(("mode", "owner", "message"), [
    (0o664, 0, "writable by group or others (mode 0664); refusing it: chmod go-w"),
    (0o646, 0, "writable by group or others (mode 0646); refusing it: chmod go-w"),
    (0o644, 65534, "owned by uid 65534, not root; refusing it: chown root"),
])
def test_a_root_daemon_refuses_a_file_others_can_change(
        tmp_path: Path, mode: int, owner: int, message: str) -> None:
    require_root()
    path = tmp_path / "tasks.yaml"
    path.write_text('tasks:\n  - {name: a, schedule: "@hourly", command: "true"}\n')
    path.chmod(mode)
    os.chown(path, owner, -1)
    with pytest.raises(ConfigError) as caught:
        load_config(path, identity=None)
    (problem,) = caught.value.problems
    assert message in str(problem)
    assert str(problem).startswith(f"{path}: torchd runs as root and the file is ")
    path.chmod(0o644)
    os.chown(path, 0, -1)
    assert len(load_config(path, identity=None).tasks) == 1
