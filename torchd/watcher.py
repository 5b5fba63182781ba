"""Watch the task file's directory (so rename-style saves are seen) and debounce changes.

A change is applied SETTLED seconds after the file was closed after writing or renamed
into place (its content is then whole), and DEBOUNCE seconds after other changes (a
writer may still be writing); every new event restarts the wait."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

DEBOUNCE = 0.3
SETTLED = 0.05  # after close-after-write or a rename: only coalesces the event burst
_COMPLETE_EVENTS = frozenset({"moved", "closed"})
_WRITE_EVENTS = frozenset({"modified", "created", "moved", "closed", "deleted"})


class _Handler(FileSystemEventHandler):
    def __init__(self, target: Path, poke: Callable[[bool], None]) -> None:
        self._target = str(target)
        self._poke = poke

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _WRITE_EVENTS:
            return  # opening the file to read it must not trigger another reload
        paths = (event.src_path, getattr(event, "dest_path", ""))
        if any(os.fsdecode(p) == self._target for p in paths if p):
            self._poke(event.event_type in _COMPLETE_EVENTS
                       and os.fsdecode(paths[1] or paths[0]) == self._target)


class FileWatcher:
    """Calls on_change (in the loop) once the file has settled (see the module doc)."""

    def __init__(self, path: Path, on_change: Callable[[], None]) -> None:
        self._path = path.absolute()
        self._on_change = on_change
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._observer: Observer | None = None  # type: ignore[valid-type]

    def start(self) -> None:
        observer = Observer()
        observer.daemon = True
        observer.schedule(_Handler(self._path, self._poke_threadsafe), str(self._path.parent),
                          recursive=False)
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._observer is not None:
            # watchdog's emitter may poll once more after stop() and logs that at ERROR
            # ("queue_events() called when the thread is inactive"); it is harmless.
            logging.getLogger("watchdog.observers.inotify").setLevel(logging.CRITICAL)
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def _poke_threadsafe(self, complete: bool) -> None:
        self._loop.call_soon_threadsafe(self._poke, complete)

    def _poke(self, complete: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(SETTLED if complete else DEBOUNCE,
                                            self._on_change)
