"""Where the tasks come from: one task file, or a drop-in directory of them.

`-c /etc/torchd/tasks.d/` loads every `*.yaml` in the directory (not those starting with a
dot: editors' temporary files), in name order, as one file would be: one namespace of
task names, every problem with its own file and line. At most one of the files has a
`daemon:` section (found by a top-level `daemon:` line); every file's tasks take their
defaults from it."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from torchd.config.loader import (
    MAX_FILE_BYTES,
    ParseCache,
    after_problems,
    digest_of,
    load_file,
    parse_config,
    read_or_report,
)
from torchd.core.errors import ConfigError, ConfigProblem
from torchd.core.hostmatch import HostIdentity
from torchd.core.model import Config, DaemonSettings, TaskSpec

_DAEMON_SECTION = re.compile(rb"^daemon[ \t]*:", re.MULTILINE)


def load_config(path: str | Path, *, identity: HostIdentity | None,
                cache: ParseCache | None = None) -> Config:
    """The tasks of a file or a drop-in directory; ConfigError listing every problem."""
    if os.path.isdir(path):
        return _load_directory(Path(path), identity=identity, cache=cache)
    return load_file(path, identity=identity, cache=cache)


def source_digest(path: Path) -> str:
    """The digest load_config would give the source as it is now (OSError or ConfigError
    when it cannot be read)."""
    if os.path.isdir(path):
        return _combined_digest({file: read_or_report(file) for file in task_files(path)})
    return digest_of(read_or_report(path))


def daemon_file(path: Path) -> Path | None:
    """The file whose `daemon:` section applies: the file itself, or in a drop-in
    directory the first with one (None if none has; never raises)."""
    if not os.path.isdir(path):
        return path
    try:
        for file in task_files(path):
            with open(file, "rb") as handle:
                if _DAEMON_SECTION.search(handle.read(MAX_FILE_BYTES)):
                    return file
    except (OSError, ConfigError):
        pass
    return None


def task_files(directory: Path) -> list[Path]:
    """The directory's task files, in name order."""
    try:
        names = sorted(entry.name for entry in os.scandir(directory)
                       if entry.name.endswith(".yaml") and not entry.name.startswith("."))
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(directory), None, None, None,
                                         f"cannot list the directory: {exc.strerror}")]) from None
    return [directory / name for name in names]


def _combined_digest(contents: dict[Path, bytes]) -> str:
    digest = hashlib.sha256()
    for file, data in contents.items():
        digest.update(f"{file.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:12]


def _load_directory(directory: Path, *, identity: HostIdentity | None,
                    cache: ParseCache | None) -> Config:
    files = task_files(directory)
    if not files:
        raise ConfigError([ConfigProblem(str(directory), None, None, None,
                                         "holds no *.yaml task file")])
    problems: list[ConfigProblem] = []
    contents: dict[Path, bytes] = {}
    for file in files:
        try:
            contents[file] = read_or_report(file)
        except ConfigError as exc:
            problems.extend(exc.problems)
    with_daemon = [file for file, data in contents.items() if _DAEMON_SECTION.search(data)]
    for extra in with_daemon[1:]:
        problems.append(ConfigProblem(str(extra), None, None, "daemon", (
            f"daemon settings are in {with_daemon[0].name} already; only one file of a "
            "drop-in directory may have them")))
    order = sorted(contents, key=lambda file: file not in with_daemon[:1])  # daemon's first
    daemon: DaemonSettings | None = None
    parsed: list[Config] = []
    for file in order:
        file_cache = None
        if cache is not None:
            file_cache = cache.files.setdefault(file.name, ParseCache())
        try:
            config = parse_config(contents[file], str(file), identity=identity,
                                  cache=file_cache, daemon=daemon if parsed else None,
                                  graph=False)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        parsed.append(config)
        daemon = daemon or config.daemon
    tasks = _one_namespace([task for config in parsed for task in config.tasks], problems)
    if not problems:
        problems.extend(after_problems(tasks))
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.file, p.line or 0)))
    if cache is not None:
        cache.files = {name: c for name, c in cache.files.items()
                       if directory / name in contents}
    assert daemon is not None  # noqa: S101 - a directory with no problem parsed a file
    return Config(path=str(directory), digest=_combined_digest(contents), daemon=daemon,
                  tasks=tuple(sorted(tasks, key=lambda task: (task.file, task.line))))


def _one_namespace(tasks: list[TaskSpec], problems: list[ConfigProblem]) -> list[TaskSpec]:
    first: dict[str, TaskSpec] = {}
    for task in sorted(tasks, key=lambda task: (task.file, task.line)):
        if task.name in first:
            earlier = first[task.name]
            problems.append(ConfigProblem(task.file, task.line, task.name, "name", (
                f"duplicate task name (first defined at {earlier.file}:{earlier.line})")))
        else:
            first[task.name] = task
    return list(first.values())
