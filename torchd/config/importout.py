"""What `torchd import` writes: imported tasks as a torchd task file (YAML), each with a
comment above it naming where it came from (file:line) and every warning, and the task
names derived from commands and made unique. Shared by importcron and importgotorch."""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field

_NOT_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
# what YAML does not allow anywhere in a stream, even in a comment (YAML 1.1, "printable")
_NOT_PRINTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd"
                            "\U00010000-\U0010ffff]")
# and, in a quoted scalar, what YAML would read as a line break (folded into a space)
_ESCAPED = re.compile(f"{_NOT_PRINTABLE.pattern}|[\x85\u2028\u2029]")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
# words that run another command: the name comes from the command they run
_WRAPPERS = frozenset(("exec", "nice", "ionice", "nohup", "env", "sudo", "time", "command",
                       "chronic", "flock", "timeout", "run-parts", "test", "["))
_CHECKS = frozenset(("test", "[", "[[", "cd", "true", ":"))  # not what a list is for
_OPERATOR_CHARS = frozenset("&|;()<>")

Value = str | int | list[str] | dict[str, str]


@dataclass(slots=True, kw_only=True)
class Imported:
    """One task to write, or one source entry that could not become a task (`skipped`)."""

    origin: str  # file:line
    name_hint: str = "task"
    keys: list[tuple[str, Value]] = field(default_factory=list)  # in the order written
    warnings: list[str] = field(default_factory=list)
    skipped: str | None = None  # why no task was written


def name_from_command(command: str) -> str:
    """A task name from a shell command: the base name of the program it runs (past
    variable assignments and wrappers such as nice or timeout; in a list such as
    `test -x X || (cd / && run-parts /etc/cron.daily)`, the first command that is not a
    test or a cd), in the task-name alphabet."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = ""
        words = list(lexer)
    except ValueError:
        words = command.split()
    segments: list[list[str]] = [[]]
    for word in words:
        if word and set(word) <= _OPERATOR_CHARS:
            segments.append([])
        else:
            segments[-1].append(word)
    for segment in segments:
        if segment and segment[0] not in _CHECKS and (name := _program_name(segment)):
            return name
    return _program_name(words) or "task"


def _program_name(words: list[str]) -> str | None:
    for word in words:
        if _ASSIGNMENT.match(word) or word.startswith("-") or word in _WRAPPERS:
            continue
        if word.isdigit():  # an argument of a wrapper (nice -n 5, timeout 60)
            continue
        name = _NOT_NAME.sub("-", os.path.basename(word.rstrip("/"))).strip("-.")
        if name:
            return name
    return None


def _unique(names: list[str]) -> list[str]:
    taken: set[str] = set()
    unique = []
    for name in names:
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{name}-{n}"
        taken.add(candidate)
        unique.append(candidate)
    return unique


def _scalar(value: str | int) -> str:
    """A YAML scalar: numbers plain, text double-quoted (a JSON string is one)."""
    if isinstance(value, int):
        return str(value)
    return _ESCAPED.sub(lambda m: f"\\u{ord(m[0]):04x}", json.dumps(value, ensure_ascii=False))


def _value_lines(key: str, value: Value) -> list[str]:
    if isinstance(value, list):
        return [f"    {key}: [{', '.join(_scalar(v) for v in value)}]"]
    if isinstance(value, dict):
        return [f"    {key}:"] + [f"      {_scalar(k)}: {_scalar(v)}" for k, v in value.items()]
    return [f"    {key}: {_scalar(value)}"]


def _one_line(text: str) -> str:
    """Text for a comment: one line, what YAML cannot hold shown as \\xNN."""
    return _NOT_PRINTABLE.sub(lambda m: f"\\x{ord(m[0]):02x}", " ".join(text.splitlines()))


def render(entries: list[Imported], source: str, what: str) -> str:
    """The task file: a header, then each task (or a comment for each skipped entry)."""
    tasks = [e for e in entries if e.skipped is None]
    names = iter(_unique([e.name_hint for e in tasks]))
    lines = [f"# imported by `torchd import {what}` from {_one_line(source)}",
             "# check it with `torchd check -c FILE`; the README's \"Coming from cron and "
             "gotorch\" says how each rule was read", "tasks:"]
    if not tasks:
        lines[-1] = "tasks: []"
    for entry in entries:
        lines.append("")
        if entry.skipped is not None:
            lines.append(f"  # {_one_line(entry.origin)}: skipped: {_one_line(entry.skipped)}")
            continue
        lines.append(f"  # {_one_line(entry.origin)}")
        lines.extend(f"  # warning: {_one_line(w)}" for w in entry.warnings)
        lines.append(f"  - name: {_scalar(next(names))}")
        for key, value in entry.keys:
            lines.extend(_value_lines(key, value))
    return "\n".join(lines) + "\n"
