"""Watch the task file and debounce its changes.

What is watched is every directory on the file's way: its own directory (so rename-style
saves are seen), and the directory of each symlink it is reached through and of the real
file (so an edit of a symlink's target, or a Kubernetes ConfigMap mount replacing its
`..data` symlink, is seen). Only the events a change can make are subscribed to: reading
a neighbouring file costs nothing. For a drop-in directory, its task files are watched
too (an edit where a symlinked one leads is not seen: reload then).

A change is applied SETTLED seconds after the file was closed after writing or renamed
into place (its content is then whole), and DEBOUNCE seconds after other changes (a
writer may still be writing); every new event restarts the wait."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from torchd.system.safefile import UnsafePathError, resolve_trusted

DEBOUNCE = 0.3
SETTLED = 0.05  # after close-after-write or a rename: only coalesces the event burst
_COMPLETE_EVENTS = frozenset({"moved", "closed"})
_WRITE_EVENTS = frozenset({"modified", "created", "moved", "closed", "deleted"})
# What a change of the file, or of a symlink on its way, can make; no opens, reads or
# closes without writing.
_SUBSCRIBED = [FileModifiedEvent, FileCreatedEvent, FileMovedEvent, FileDeletedEvent,
               FileClosedEvent, DirCreatedEvent, DirMovedEvent]


def watched_paths(path: Path) -> frozenset[str]:
    """The paths whose change changes what `path` reads: itself, each symlink it is
    reached through, and the real file."""
    try:
        resolved = resolve_trusted(path, None)
    except (OSError, UnsafePathError):  # missing, or a symlink loop: the path alone
        return frozenset({str(path)})
    return frozenset({str(path), str(resolved.path), *(str(link) for link in resolved.links)})


def _is_task_file(path: str, directories: frozenset[str]) -> bool:
    """A task file of a drop-in directory (see config.source.task_files)."""
    name = os.path.basename(path)
    return (name.endswith(".yaml") and not name.startswith(".")
            and os.path.dirname(path) in directories)


class _Handler(FileSystemEventHandler):
    def __init__(self, targets: Callable[[], tuple[frozenset[str], frozenset[str]]],
                 poke: Callable[[bool], None]) -> None:
        self._targets = targets  # (paths watched, directories whose task files are)
        self._poke = poke

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _WRITE_EVENTS:
            return
        targets, directories = self._targets()
        src, dest = os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", ""))
        final = dest or src
        if (src in targets or dest in targets or _is_task_file(src, directories)
                or (dest and _is_task_file(dest, directories))):
            complete = event.event_type in _COMPLETE_EVENTS and (
                final in targets or _is_task_file(final, directories))
            self._poke(complete)


class FileWatcher:
    """Calls on_change (in the loop) once the file has settled (see the module doc)."""

    def __init__(self, path: Path, on_change: Callable[[], None]) -> None:
        self._path = path.absolute()
        self._on_change = on_change
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._targets: frozenset[str] = frozenset()
        self._directories: frozenset[str] = frozenset()  # of a drop-in directory
        self._watches: dict[str, ObservedWatch] = {}

    def start(self) -> None:
        observer = Observer()
        observer.daemon = True
        observer.start()
        self._observer = observer
        self.follow()

    def follow(self) -> None:
        """Watch the file's way as it is now (after a reload: a symlink may point
        elsewhere)."""
        if self._observer is None:
            return
        self._targets = watched_paths(self._path)
        self._directories = frozenset(target for target in self._targets
                                      if os.path.isdir(target))
        directories = {os.path.dirname(target) for target in self._targets} | self._directories
        for gone in set(self._watches) - directories:
            self._observer.unschedule(self._watches.pop(gone))
        for directory in directories - set(self._watches):
            self._watches[directory] = self._observer.schedule(
                _Handler(lambda: (self._targets, self._directories), self._poke_threadsafe),
                directory,
                recursive=False, event_filter=_SUBSCRIBED)

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
            self._watches.clear()

    def _poke_threadsafe(self, complete: bool) -> None:
        self._loop.call_soon_threadsafe(self._poke, complete)

    def _poke(self, complete: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(SETTLED if complete else DEBOUNCE,
                                            self._on_change)
