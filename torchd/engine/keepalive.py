"""Keep-alive supervision of daemon-type tasks, as Supervisor models it: each instance slot
is a Keeper that starts its process, counts it healthy once it has stayed up
BACKOFF_RESET_AFTER, and after an exit waits a growing delay before the next start.

A keeper's state changes only through `Keeper.change`, checked against
core.model.KEEPER_MOVES."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from torchd.core.model import KEEPER_MOVES, KeeperState, check_move
from torchd.process.runner import RunControl, StartError

log = logging.getLogger("torchd.scheduler")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 30.0  # a keep-alive instance up this long counts as healthy

@dataclass(eq=False)
class Keeper:
    """One keep-alive slot of a daemon-type task."""

    task: str
    slot: int
    state: KeeperState = KeeperState.STARTING
    backoff: float = BACKOFF_FIRST
    restarts: int = 0
    last_error: str | None = None
    handle: RunControl | None = None
    runner: asyncio.Task[None] | None = None

    def change(self, to: KeeperState) -> None:
        """The one way a keeper's state changes; a move to the state it is in is none."""
        if to is self.state:
            return
        check_move(KEEPER_MOVES, self.state, to, f"task {self.task} instance {self.slot}")
        self.state = to

    def halt(self) -> None:
        """Stop supervising (the process, if any, is left to the caller)."""
        self.change(KeeperState.STOPPED)  # * -> stopped
        if self.runner is not None:
            self.runner.cancel()

    def view(self) -> dict[str, object]:
        handle = self.handle
        return {
            "slot": self.slot,
            "state": str(self.state),
            "pid": handle.run.pid if handle is not None and handle.run.ended is None else None,
            "restarts": self.restarts,
            "backoff": self.backoff,
            "last_error": self.last_error,
        }


class KeepAlive:
    """Runs each keeper's loop. `launch` starts one instance; `may_keep` says whether this
    host keeps the task running now (active, not paused, holding its lease);
    `lease_expiry` is the task's lease expiry for the instance's guard (None without)."""

    def __init__(self, *, launch: Callable[[str], RunControl], may_keep: Callable[[str], bool],
                 lease_expiry: Callable[[str], float | None],
                 stopping: Callable[[], bool]) -> None:
        self._launch = launch
        self._may_keep = may_keep
        self._lease_expiry = lease_expiry
        self._stopping = stopping

    def start(self, keeper: Keeper, waiting_for: list[asyncio.Future[None]]) -> None:
        """Start the keeper's loop once the processes in `waiting_for` have ended."""
        keeper.runner = asyncio.get_running_loop().create_task(
            self._keep_alive(keeper, waiting_for), name=f"keep-alive {keeper.task}")

    @staticmethod
    def stop(keeper: Keeper, grace: float) -> None:
        keeper.halt()
        if keeper.handle is not None:
            keeper.handle.stop(grace)

    async def _keep_alive(self, keeper: Keeper, waiting_for: list[asyncio.Future[None]]) -> None:
        if waiting_for:  # a changed daemon task: the old instances go first
            await asyncio.wait(waiting_for)
        while not self._stopping():
            if not self._may_keep(keeper.task):  # its lease lapsed meanwhile, say
                keeper.change(KeeperState.STOPPED)  # starting|backoff -> stopped
                return
            keeper.change(KeeperState.STARTING)  # backoff|stopped -> starting
            try:
                keeper.handle = self._launch(keeper.task)
                expiry = self._lease_expiry(keeper.task)
                if expiry is not None:
                    keeper.handle.lease_renewed(expiry)
            except StartError as exc:
                keeper.last_error = str(exc)
            except Exception as exc:  # one instance's failure must never end its supervision
                log.exception("task %s: instance %d failed unexpectedly", keeper.task,
                              keeper.slot)
                keeper.last_error = f"internal error: {exc}"
            else:
                keeper.last_error = None
                run = keeper.handle.run
                # asyncio.wait never cancels what it waits for; the run's end is shared.
                done, _ = await asyncio.wait({run.done}, timeout=BACKOFF_RESET_AFTER)
                if not done:
                    keeper.change(KeeperState.RUNNING)  # starting -> running: it stayed up
                    keeper.backoff = BACKOFF_FIRST
                    await asyncio.wait({run.done})
                keeper.last_error = f"exited with {run.result_text()}"
            keeper.change(KeeperState.BACKOFF)  # starting|running -> backoff
            keeper.restarts += 1
            log.warning("task %s: instance %d %s; restarting in %.0fs", keeper.task,
                        keeper.slot, keeper.last_error, keeper.backoff)
            await asyncio.sleep(keeper.backoff)
            keeper.backoff = min(keeper.backoff * 2, BACKOFF_MAX)
