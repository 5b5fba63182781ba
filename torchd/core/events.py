"""What the engine tells its subscribers (child journal, fire ledger, history, hooks,
the control API), and the bus they subscribe on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from torchd.core.model import RunOutcome, Trigger, fire_id


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted:
    task: str
    run_id: str
    pid: int | None  # None: an HTTP run
    started: float
    scheduled: float
    fire_id: str
    attempt: int
    trigger: Trigger
    log_file: str
    log_start: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEnded:
    task: str
    run_id: str
    pid: int | None  # None: an HTTP run
    outcome: RunOutcome
    exit_code: int | None
    signal: int | None
    started: float
    ended: float
    duration: float
    scheduled: float
    fire_id: str
    attempt: int
    trigger: Trigger
    log_file: str
    log_end: int | None
    err_start: int | None
    err_end: int | None
    cpu_seconds: float | None = None  # of the run and its descendants (see runner)
    memory_peak: int | None = None  # bytes: the largest resident size among them
    reason: str | None = None  # why an HTTP run failed: status, body, connection, TLS


@dataclass(frozen=True, slots=True, kw_only=True)
class RunNotStarted:
    """The command could not be started (outcome start-error)."""

    task: str
    run_id: str
    scheduled: float
    fire_id: str
    attempt: int
    trigger: Trigger
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
    named: str | None = None  # a downstream fire's id (core.workflow.chain_fire_id)
    trigger: Trigger = Trigger.SCHEDULE  # what the fire was for

    @property
    def fire_id(self) -> str:
        return self.named or fire_id(self.task, self.scheduled)


@dataclass(frozen=True, slots=True)
class FireMissed:
    task: str
    first: float
    last: float
    count: int
    reason: str = ""  # why, when not the usual lateness (e.g. the cluster was unavailable)

    @property
    def fire_id(self) -> str:
        """The last fire that did not run names the row."""
        return fire_id(self.task, self.last)


@dataclass(frozen=True, slots=True)
class FireClaimedElsewhere:
    """A `run_on: one` fire this host did not run: another host claimed it (`holder`), or
    the cluster had run a later fire of the task already (`holder` None)."""

    task: str
    scheduled: float
    holder: str | None

    @property
    def fire_id(self) -> str:
        return fire_id(self.task, self.scheduled)


Event = (RunStarted | RunEnded | RunNotStarted | FireSettled | FireSkipped | FireMissed
         | FireClaimedElsewhere)

E = TypeVar("E", RunStarted, RunEnded, RunNotStarted, FireSettled, FireSkipped, FireMissed,
            FireClaimedElsewhere)
EVENT_TYPES: tuple[type[Event], ...] = (RunStarted, RunEnded, RunNotStarted, FireSettled,
                                        FireSkipped, FireMissed, FireClaimedElsewhere)


class EventBus:
    """Subscribers by event type, called in the order they subscribed. Publishing looks
    up the event's type once: every fire passes here several times."""

    def __init__(self) -> None:
        self._subscribers: dict[type, list[Callable[[Event], None]]] = {
            kind: [] for kind in EVENT_TYPES}

    def subscribe(self, kind: type[E], callback: Callable[[E], None]) -> None:
        self._subscribers[kind].append(callback)  # type: ignore[arg-type]

    def subscribe_all(self, callback: Callable[[Event], None]) -> None:
        for subscribers in self._subscribers.values():
            subscribers.append(callback)

    def publish(self, event: Event) -> None:
        for callback in self._subscribers[type(event)]:
            callback(event)
