"""Small operator state kept in the state dir across restarts: paused tasks and submitted
one-off tasks. Each is one JSON file, replaced atomically."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from torchd.store.statedir import FileModes, open_file, rewrite

log = logging.getLogger("torchd.opstate")


MAX_BYTES = 64 << 20  # far beyond what pauses and pending submissions take


class JsonFile:
    def __init__(self, path: Path, empty: Any, modes: FileModes | None = None) -> None:
        self.path = path
        self._empty = empty
        self._modes = modes or FileModes()

    def load(self) -> Any:
        try:
            with os.fdopen(open_file(self.path, os.O_RDONLY, self._modes), "rb") as handle:
                data = handle.read(MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                raise ValueError(f"larger than {MAX_BYTES} bytes")
            return json.loads(data.decode("utf-8"))
        except FileNotFoundError:
            return self._empty
        except (OSError, ValueError, RecursionError) as exc:
            # Kept aside, not overwritten: an operator may want what it held.
            aside = self.path.with_name(self.path.name + ".unreadable")
            log.error("cannot read %s (%s); it is kept as %s and ignored", self.path, exc,
                      aside)
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            return self._empty

    def save(self, value: Any) -> None:
        text = json.dumps(value, indent=1, sort_keys=True).encode()
        try:
            os.close(rewrite(self.path, text, self._modes, durable=True))
        except OSError as exc:
            log.error("cannot save %s: %s", self.path, exc)
