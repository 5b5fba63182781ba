"""Small operator state kept in the state dir across restarts: paused tasks and submitted
one-off tasks. Each is one JSON file, replaced atomically."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("torchd.opstate")


class JsonFile:
    def __init__(self, path: Path, empty: Any) -> None:
        self.path = path
        self._empty = empty

    def load(self) -> Any:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return self._empty
        except (OSError, ValueError) as exc:
            # Kept aside, not overwritten: an operator may want what it held.
            aside = self.path.with_name(self.path.name + ".unreadable")
            log.error("cannot read %s (%s); it is kept as %s and ignored", self.path, exc,
                      aside)
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            return self._empty

    def save(self, value: Any) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(value, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("cannot save %s: %s", self.path, exc)
