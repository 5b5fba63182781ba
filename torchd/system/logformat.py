"""How torchd's own log lines look: with a time, or, on a stream to the systemd journal,
with a `<N>` syslog level instead (the journal keeps the time, and `journalctl -p err`
then finds torchd's errors)."""

from __future__ import annotations

import logging
import os

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_SYSLOG_LEVELS = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4,
                  logging.INFO: 6, logging.DEBUG: 7}


def is_journal(fd: int) -> bool:
    """systemd sets JOURNAL_STREAM to the device and inode of the stream it gave the
    service; a descriptor that still points there (not redirected) is read by journald."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        info = os.fstat(fd)
        return (int(device), int(inode)) == (info.st_dev, info.st_ino)
    except (OSError, ValueError):
        return False


class JournalFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        level = _SYSLOG_LEVELS.get(record.levelno, 6)
        # Each line of a multi-line message (a traceback) carries the level.
        return "\n".join(f"<{level}>{line}" for line in super().format(record).split("\n"))


def formatter_for(fd: int) -> logging.Formatter:
    return JournalFormatter() if is_journal(fd) else logging.Formatter(LOG_FORMAT)
