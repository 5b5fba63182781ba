"""What a task file names that this host lacks: a task's working directory or program.

Warnings, not errors: one file serves many hosts, and a script may be deployed after the
file that runs it. `torchd check` prints them; a run that meets one fails with a start
error that says where it looked."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from torchd.config.relpaths import against, file_dir
from torchd.core.model import Config, TaskSpec


def missing_here(config: Config) -> list[str]:
    """One line per active task whose cwd or program is not on this host."""
    base = file_dir(config.path)
    found: list[str] = []
    for spec in config.tasks:
        if spec.active and (problem := _missing(spec, base)):
            found.append(f"{spec.file or config.path}:{spec.line}: task '{spec.name}': "
                         f"{problem}")
    return found


def _missing(spec: TaskSpec, base: Path) -> str | None:
    if spec.cwd is not None and not os.path.isdir(spec.cwd):
        return f"cwd: {spec.cwd} is not a directory on this host"
    program = spec.command[0]
    if "/" in program:
        path = against(Path(spec.cwd) if spec.cwd else base, program)
        if not os.path.isfile(path):
            return f"command: {path} does not exist on this host"
        if not os.access(path, os.X_OK):
            return f"command: {path} is not executable"
        return None
    search = dict(spec.env).get("PATH") or os.environ.get("PATH") or os.defpath
    if shutil.which(program, path=search) is None:
        return f"command: '{program}' is not found on PATH={search}"
    return None
