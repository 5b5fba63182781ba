"""What becomes of a run's output lines besides the log file: a time at the start of each
line in the file (`log.timestamps`), and a copy on the daemon's stdout (`log.stdout`),
each line prefixed with its task and run, at most `log.stdout_rate` lines a second per
task, so that a runaway task cannot flood the journal or a container's log."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from torchd.core.timefmt import iso_utc

log = logging.getLogger("torchd.output")

MAX_LINE = 8192  # bytes of one echoed line; a longer one is cut and marked
BURST_SECONDS = 10.0  # a task may print this many seconds' worth of its rate at once
JOURNAL_INFO, JOURNAL_ERR = b"<6>", b"<3>"  # syslog levels journald reads at line starts


def stamp_lines(data: bytes, stamp: bytes, at_line_start: bool) -> tuple[bytes, bool]:
    """`data` with `stamp` before each line that starts in it; and whether the next chunk
    starts a line. A chunk is stamped with one time: its lines arrived together."""
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: b"" if data ends a line
    parts = [stamp + line + b"\n" for line in lines]
    if tail:
        parts.append(stamp + tail)
    if not at_line_start and parts:
        parts[0] = parts[0][len(stamp):]
    return b"".join(parts), not tail


@dataclass(slots=True)
class _Allowance:
    """A task's token bucket of stdout lines."""

    tokens: float
    at: float  # monotonic time of the last refill
    withheld: int = 0  # lines not shown since the last notice


class OutputEcho:
    """Copies run output to one stream (the daemon's stdout) a line at a time.

    `journal`: stdout is a journald stream (JOURNAL_STREAM names it), so lines carry a
    `<N>` level and no time of their own (the journal keeps one)."""

    def __init__(self, write: Callable[[bytes], object], *, journal: bool,
                 clock_time: Callable[[], float], clock_mono: Callable[[], float]) -> None:
        self._write = write
        self._journal = journal
        self._time = clock_time
        self._mono = clock_mono
        self._allowances: dict[str, _Allowance] = {}
        self._broken = False

    def stream(self, task: str, run_id: str, rate: int, err: bool) -> EchoStream:
        level = JOURNAL_ERR if err else JOURNAL_INFO
        prefix = (level if self._journal else b"") + f"{task}[{run_id}]: ".encode()
        return EchoStream(self, task, prefix, rate)

    def emit(self, task: str, prefix: bytes, lines: list[bytes], rate: int) -> None:
        """Write whole lines (without their newlines), as far as the task's rate allows;
        before the first line shown after some were withheld, say how many."""
        allowance = self._allowance(task, rate)
        shown = min(len(lines), int(allowance.tokens))
        allowance.tokens -= shown
        out = []
        if shown:
            out.extend(self._withheld(allowance, prefix, rate))
        out.extend(self._line(prefix, line) for line in lines[:shown])
        allowance.withheld += len(lines) - shown
        if out:
            self._send(b"".join(out))

    def ended(self, task: str, prefix: bytes, rate: int) -> None:
        """A run's stream ended: say how many of its lines were withheld, if any."""
        allowance = self._allowances.get(task)
        if allowance is not None and allowance.withheld:
            self._send(b"".join(self._withheld(allowance, prefix, rate)))

    def _withheld(self, allowance: _Allowance, prefix: bytes, rate: int) -> list[bytes]:
        if not allowance.withheld:
            return []
        count, allowance.withheld = allowance.withheld, 0
        return [self._line(prefix, f"torchd: {count} line(s) not shown here "
                                   f"(log.stdout_rate={rate}/s); the task log has them"
                                   .encode())]

    def _allowance(self, task: str, rate: int) -> _Allowance:
        now = self._mono()
        burst = rate * BURST_SECONDS
        allowance = self._allowances.get(task)
        if allowance is None:
            allowance = self._allowances[task] = _Allowance(tokens=burst, at=now)
        else:
            allowance.tokens = min(burst, allowance.tokens + (now - allowance.at) * rate)
            allowance.at = now
        return allowance

    def _line(self, prefix: bytes, line: bytes) -> bytes:
        if len(line) > MAX_LINE:
            line = line[:MAX_LINE] + b" [cut]"
        if self._journal:
            return prefix + line + b"\n"
        return iso_utc(self._time()).encode() + b" " + prefix + line + b"\n"

    def _send(self, data: bytes) -> None:
        try:
            self._write(data)
        except OSError as exc:  # stdout closed or full disk behind it: say so once
            if not self._broken:
                self._broken = True
                log.error("cannot copy task output to stdout (%s); it stays in the task logs",
                          exc.strerror)


class EchoStream:
    """One run's output stream, cut into lines for the echo; a partial line waits for
    its end (or the run's end) up to MAX_LINE bytes."""

    __slots__ = ("_echo", "_partial", "_prefix", "_rate", "_task")

    def __init__(self, echo: OutputEcho, task: str, prefix: bytes, rate: int) -> None:
        self._echo = echo
        self._task = task
        self._prefix = prefix
        self._rate = rate
        self._partial = b""

    def feed(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE:
            lines.append(self._partial)
            self._partial = b""
        if lines:
            self._echo.emit(self._task, self._prefix, lines, self._rate)

    def close(self) -> None:
        if self._partial:
            self._echo.emit(self._task, self._prefix, [self._partial], self._rate)
            self._partial = b""
        self._echo.ended(self._task, self._prefix, self._rate)


def stdout_writer() -> Callable[[bytes], object]:
    """Whole writes to file descriptor 1 (os.write may write part of a long chunk)."""
    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]
    return write
