"""Relative paths in a task file name paths in the task file's directory, wherever the
daemon or the CLI runs from (a detached daemon works in /)."""

from __future__ import annotations

import os
from pathlib import Path


def file_dir(file: str | Path) -> Path:
    """The directory of the task file as it was named (not where its symlinks lead)."""
    return Path(os.path.abspath(file)).parent


def source_dir(source: Path) -> Path:
    """Where relative paths lead for a task source: a drop-in directory itself, or the
    directory of a task file."""
    return source if os.path.isdir(source) else file_dir(source)


def against(base: Path, path: str) -> str:
    """`path` as written when absolute, else inside `base` (`.` parts dropped; `..` kept,
    since only the kernel knows where it leads past a symlink)."""
    return path if os.path.isabs(path) else str(base / path)
