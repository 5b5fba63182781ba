"""Keep-alive windows: a watcher per windowed daemon-type task that sleeps until its window
opens or closes and tells the scheduler (which starts or stops the instances). The window
arithmetic is core.schedule.window."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from torchd.core.clock import Clock
from torchd.core.schedule.window import KeepWindow
from torchd.core.timefmt import iso_utc

log = logging.getLogger("torchd.scheduler")


class Windows:
    """`opened(name)` and `closed(name)` are called on the loop at each change."""

    def __init__(self, *, clock: Clock, opened: Callable[[str], None],
                 closed: Callable[[str], None]) -> None:
        self._clock = clock
        self._opened = opened
        self._closed = closed
        self._watchers: dict[str, asyncio.Task[None]] = {}

    def watch(self, name: str, window: KeepWindow, was_open: bool) -> None:
        """Watch a task's window; `was_open`: what the caller found (and acted on) now."""
        self.forget(name)
        self._watchers[name] = asyncio.get_running_loop().create_task(
            self._watch(name, window, was_open), name=f"window {name}")

    def forget(self, name: str) -> None:
        watcher = self._watchers.pop(name, None)
        if watcher is not None:
            watcher.cancel()

    def cancel_all(self) -> None:
        for name in list(self._watchers):
            self.forget(name)

    async def _watch(self, name: str, window: KeepWindow, was_open: bool) -> None:
        while True:
            state = window.state_at(self._clock.time())
            if state.open != was_open:
                was_open = state.open
                log.info("task %s: window %s%s", name, "opened" if state.open else "closed",
                         f" until {iso_utc(state.closes_at)}" if state.closes_at else "")
                try:
                    (self._opened if state.open else self._closed)(name)
                except Exception:  # a watcher must outlive one failed start or stop
                    log.exception("task %s: window change failed", name)
            until = state.closes_at if state.open else state.next_opening
            if until is None:
                return
            await asyncio.sleep(max(until - self._clock.time(), 0.0))
