"""What a task file names that this host lacks: a task's working directory or program.

Warnings, not errors: one file serves many hosts, and a script may be deployed after the
file that runs it. `torchd check` prints them (config.lint, code `missing`); a run that
meets one fails with a start error that says where it looked."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from torchd.config.relpaths import against
from torchd.core.model import TaskSpec


def missing_problem(spec: TaskSpec, base: Path) -> tuple[str, str] | None:
    """(the field, what is wrong) when the task's cwd or program is not on this host
    (`base`: where a relative path is read from); config.lint makes it a warning."""
    if spec.cwd is not None and not os.path.isdir(spec.cwd):
        return "cwd", f"{spec.cwd} is not a directory on this host"
    if not spec.command:
        return None
    program = spec.command[0]
    if "/" in program:
        path = against(Path(spec.cwd) if spec.cwd else base, program)
        if not os.path.isfile(path):
            return "command", f"{path} does not exist on this host"
        if not os.access(path, os.X_OK):
            return "command", f"{path} is not executable"
        return None
    search = dict(spec.env).get("PATH") or os.environ.get("PATH") or os.defpath
    if shutil.which(program, path=search) is None:
        return "command", f"'{program}' is not found on PATH={search}"
    return None
