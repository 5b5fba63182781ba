"""What the engine keeps of each task, and of a fire on its way to a run."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from torchd.core.model import TaskSpec, Trigger
from torchd.core.workflow import Cause
from torchd.engine.keepalive import Keeper
from torchd.process.runner import LaunchRequest, Run

MISSED_AFTER = 5.0  # a fire more than this late is missed: its task's catchup decides


class Fire(NamedTuple):
    scheduled: float
    trigger: Trigger = Trigger.SCHEDULE
    run_id: str | None = None  # chosen in advance: a manual trigger reports it at once
    cause: Cause | None = None  # a downstream fire: the upstream run that completed it
    cascade: bool = True  # its run's final outcome may fire its downstreams


@dataclass(eq=False, slots=True)
class TaskState:
    spec: TaskSpec
    token: int
    next_fire: float | None = None
    last_scheduled: float | None = None
    last_run: Run | None = None
    last_start_error: str | None = None
    last_start_error_at: float | None = None
    keepers: list[Keeper] = field(default_factory=list)
    waiting: deque[Fire] | None = None  # fires waiting for a free slot (made when needed:
    #                                      100,000 empty deques would cost 60 MB)
    missed: tuple[float, float] | None = None  # at start: fires missed while torchd was down
    retry_timers: dict[object, asyncio.TimerHandle] | None = None
    # The environment every run starts from; built at the first fire, since a copy of the
    # daemon's environment per task would cost megabytes across 100,000 rare tasks.
    env: dict[str, str] | None = None
    argv: tuple[str, ...] = ()  # the command with its nice/limits/account wrappers
    last_claim: tuple[float, str | None] | None = None  # cluster: (fire, winning host)

    def queue(self) -> deque[Fire]:
        if self.waiting is None:
            self.waiting = deque()
        return self.waiting


@dataclass(slots=True)
class Prepared:
    """Fires settled to start, beside the launch request built for each in advance (None:
    built as it starts)."""

    batch: list[tuple[TaskState, Fire]] = field(default_factory=list)
    requests: list[LaunchRequest | None] = field(default_factory=list)


def due_start(request: LaunchRequest, started: float) -> float:
    """When a run was due to start: its fire's time for a first attempt on schedule; its
    start for a retry, a catch-up or a manual run (they start when they are meant to)."""
    if request.trigger is Trigger.SCHEDULE and request.attempt == 1:
        return request.scheduled
    return started
