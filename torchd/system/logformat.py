"""How torchd's own log lines look: with a time, or, on a stream to the systemd journal,
with a `<N>` syslog level instead (the journal keeps the time, and `journalctl -p err`
then finds torchd's errors); or, with `daemon.log_format: json` (`--log-format json`),
one JSON object per line for a log shipper."""

from __future__ import annotations

import json
import logging
import os

from torchd.core.logfields import FIELDS
from torchd.core.model import LogFormat
from torchd.core.timefmt import iso_utc

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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `ts` (UTC, milliseconds), `level`, `msg`, `logger`, the
    fields of core.logfields a log call gave (`task`, `run_id`, `fire_id`, `outcome`,
    `duration_s`, `host`) where it gave them, and `exc` (the traceback) if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {"ts": iso_utc(record.created), "level": record.levelname,
                                    "msg": record.getMessage(), "logger": record.name}
        fields = record.__dict__
        for name in FIELDS:
            value = fields.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter_for(fd: int | None, log_format: LogFormat = LogFormat.TEXT) -> logging.Formatter:
    """For a stream on descriptor `fd` (None: a file, never the journal's): JSON when asked
    for (the journal too keeps each line as its message), else the journal's levels on
    its stream, or the text format."""
    if log_format is LogFormat.JSON:
        return JsonFormatter()
    if fd is not None and is_journal(fd):
        return JournalFormatter()
    return logging.Formatter(LOG_FORMAT)
