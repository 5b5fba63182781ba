"""What the engine tells its subscribers (children registry, later history and metrics)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RunStarted:
    task: str
    run_id: str
    pid: int
    started: float


@dataclass(frozen=True, slots=True)
class RunEnded:
    task: str
    run_id: str
    pid: int
    outcome: str
    exit_code: int | None
    signal: int | None


@dataclass(frozen=True, slots=True)
class FireSettled:
    """The scheduler is done deciding about a fire (started, queued, skipped or dropped as
    missed): it is not due again, even after a restart."""

    task: str
    scheduled: float


@dataclass(frozen=True, slots=True)
class FireSkipped:
    task: str
    scheduled: float
    reason: str


@dataclass(frozen=True, slots=True)
class FireMissed:
    task: str
    first: float
    last: float
    count: int


Event = RunStarted | RunEnded | FireSettled | FireSkipped | FireMissed
