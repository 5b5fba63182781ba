"""What the engine tells its subscribers (children journal, fire ledger, history, hooks)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted:
    task: str
    run_id: str
    pid: int
    started: float
    scheduled: float
    fire_id: str
    attempt: int
    trigger: str
    log_file: str
    log_start: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEnded:
    task: str
    run_id: str
    pid: int
    outcome: str
    exit_code: int | None
    signal: int | None
    started: float
    ended: float
    duration: float
    scheduled: float
    fire_id: str
    attempt: int
    log_file: str
    log_end: int | None
    err_start: int | None
    err_end: int | None
    cpu_seconds: float | None = None  # of the run and its descendants (see runner)
    memory_peak: int | None = None  # bytes: the largest resident size among them


@dataclass(frozen=True, slots=True, kw_only=True)
class RunNotStarted:
    """The command could not be started (outcome start-error)."""

    task: str
    run_id: str
    scheduled: float
    fire_id: str
    attempt: int
    trigger: str
    error: str
    time: float


@dataclass(frozen=True, slots=True)
class FireSettled:
    """The scheduler is done deciding about a fire (started, queued, skipped or dropped as
    missed): it is not due again, even after a restart."""

    task: str
    scheduled: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FireSkipped:
    """A fire that will not run: skipped by a limit or a pause, or dropped from a queue."""

    task: str
    scheduled: float
    reason: str
    dropped: bool = False
    run_id: str | None = None  # the id a manual trigger announced for it


@dataclass(frozen=True, slots=True)
class FireMissed:
    task: str
    first: float
    last: float
    count: int
    reason: str = ""  # why, when not the usual lateness (e.g. the cluster was unavailable)


Event = RunStarted | RunEnded | RunNotStarted | FireSettled | FireSkipped | FireMissed
