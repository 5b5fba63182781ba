"""Exception types. Messages are built here, from typed arguments, for people to read."""

from __future__ import annotations

from dataclasses import dataclass


class TorchdError(Exception):
    """Root of every error torchd raises on purpose."""


EXCERPT_WIDTH = 100  # characters of a source line shown; a longer one is cut around the column


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a task file, located as precisely as we can: a YAML syntax
    error also has its column and the text of its line (`source`)."""

    file: str
    line: int | None
    task: str | None
    field: str | None
    message: str
    column: int | None = None  # 1-based, in characters
    source: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}" if self.column is None else f":{self.line}:{self.column}"
        parts = [where]
        if self.task is not None:
            parts.append(f"task '{self.task}'")
        if self.field is not None:
            parts.append(self.field)
        parts.append(self.message)
        return ": ".join(parts)

    def excerpt(self) -> tuple[str, ...]:
        """The source line and a caret under the column, to print below the problem; none
        when either is unknown. Tabs before the column are kept under it, so the caret
        lines up wherever the terminal's tab stops are."""
        if self.source is None or self.column is None:
            return ()
        at = self.column - 1
        start = max(0, min(at - EXCERPT_WIDTH // 2, len(self.source) - EXCERPT_WIDTH))
        shown = "".join(c if c.isprintable() or c == "\t" else "\ufffd"
                        for c in self.source[start:start + EXCERPT_WIDTH])
        lead = "..." if start else ""
        tail = "..." if start + EXCERPT_WIDTH < len(self.source) else ""
        before = (lead + shown[:at - start]).ljust(len(lead) + at - start)  # past the end
        pad = "".join(c if c == "\t" else " " for c in before)
        return f"    {lead}{shown}{tail}", f"    {pad}^"

    def shown(self) -> str:
        """The problem as a terminal shows it: its line, then the excerpt."""
        return "\n".join((str(self), *self.excerpt()))


class ConfigError(TorchdError):
    """A task file that cannot be loaded; carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        count = len(problems)
        summary = f"{count} problem{'s' if count != 1 else ''} in task file"
        super().__init__(summary + "\n" + "\n".join(str(p) for p in problems))


class ScheduleError(TorchdError):
    """A schedule expression that cannot be used; the message says which part and why."""


class DurationError(TorchdError):
    """A duration that is not a number of seconds or a string like '1h30m'."""

    def __init__(self, text: object) -> None:
        super().__init__(
            f"'{text}' is not a duration: use seconds (30) or units s, m, h, d (e.g. '1h30m')"
        )


class AlreadyRunningError(TorchdError):
    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        super().__init__(f"already running (pid {pid})" if pid is not None and pid > 0
                         else "already running")


class ControlError(TorchdError):
    """The daemon answered a control request with an error (its `code`), or could not be
    reached (no code)."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class UsageError(TorchdError):
    """A command given something it cannot use (exit code 2, like a bad argument)."""


class SchedulerError(TorchdError):
    """An operator's request that the engine cannot do (unknown task, nothing to kill, ...)."""
