"""Frozen specs and the state enums. Value equality of specs is the reload diff's test."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, TypeVar

from torchd.core.fastinit import fast_constructor
from torchd.core.schedule.cronexpr import Schedule
from torchd.core.schedule.window import KeepWindow
from torchd.core.timefmt import iso_utc

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a task (or a cluster's keys), or None: the one rule."""
    if _NAME.fullmatch(name):
        return None
    return f"'{name}' may only use letters, digits, '_', '.' and '-'"


class TaskKind(StrEnum):
    CRON = "cron"  # fire on a schedule
    DAEMON = "daemon"  # keep max_running instances alive


class RunState(StrEnum):
    """Lifecycle of one run (one spawned process)."""

    RUNNING = "running"  # spawned, not yet exited
    STOPPING = "stopping"  # TERM sent to its group, waiting for it to exit
    EXITED = "exited"  # reaped; see RunOutcome


class RunOutcome(StrEnum):
    OK = "ok"  # exit code 0
    FAILED = "failed"  # non-zero exit code, or ended by a signal we did not send
    KILLED = "killed"  # ended because torchd stopped it (stop, overlap: replace, shutdown)
    TIMEOUT = "timeout"  # ran longer than the task's timeout and was stopped
    SKIPPED = "skipped"  # a fire not run because max_running was reached
    MISSED = "missed"  # a fire whose time passed while it could not run
    START_ERROR = "start-error"  # the command could not be started
    DROPPED = "dropped"  # a fire that waited in a full queue, or was dropped from one
    LOST = "lost"  # in flight when the daemon died (kill -9, power): its end is unknown


# A run that did not succeed: `history --failed`, the dashboard's "failing".
FAILED_OUTCOMES = frozenset({RunOutcome.FAILED, RunOutcome.TIMEOUT, RunOutcome.START_ERROR,
                             RunOutcome.LOST})


class Trigger(StrEnum):
    """Why a run started."""

    SCHEDULE = "schedule"  # its scheduled time came
    CATCHUP = "catchup"  # a missed fire run late by the task's catchup policy
    MANUAL = "manual"  # `torchd trigger`
    SUBMIT = "submit"  # a one-off task from `torchd submit`
    KEEP_ALIVE = "keep-alive"  # a daemon-type instance
    UPSTREAM = "upstream"  # the final outcome of its upstream runs (`after:`)


class Catchup(StrEnum):
    """What happens to fires missed while the daemon was down, the host asleep, or after
    the clock stepped forward."""

    NONE = "none"  # none of them run; they are logged as missed
    LAST = "last"  # the most recent one runs, once
    ALL = "all"  # each runs, oldest first (at most CATCHUP_LIMIT)


class LogFormat(StrEnum):
    """How the daemon's own log lines look (`daemon.log_format`, `--log-format`)."""

    TEXT = "text"  # time, level, logger: message (on the journal's stream, a <N> level)
    JSON = "json"  # one JSON object per line (system.logformat.JsonFormatter)


class Overlap(StrEnum):
    """What a fire does when its task already has max_running runs."""

    SKIP = "skip"  # the fire is not run (logged)
    QUEUE = "queue"  # it waits for a free slot (at most queue_limit wait; more are dropped)
    REPLACE = "replace"  # the oldest run is stopped (TERM, kill_grace, KILL), then it starts


CATCHUP_LIMIT = 100  # like Kubernetes: more missed fires than this are not all run


class KeeperState(StrEnum):
    """Lifecycle of one keep-alive (daemon-type) instance slot."""

    STARTING = "starting"  # spawned, has not yet stayed up long enough to count as healthy
    RUNNING = "running"  # up for at least the reset period
    BACKOFF = "backoff"  # exited; waiting before the next start
    STOPPED = "stopped"  # stopped by torchd (reload, shutdown)


RUN_MOVES: dict[RunState, frozenset[RunState]] = {
    RunState.RUNNING: frozenset({RunState.STOPPING, RunState.EXITED}),
    RunState.STOPPING: frozenset({RunState.EXITED}),
    RunState.EXITED: frozenset(),
}
KEEPER_MOVES: dict[KeeperState, frozenset[KeeperState]] = {
    KeeperState.STARTING: frozenset({KeeperState.RUNNING, KeeperState.BACKOFF,
                                     KeeperState.STOPPED}),
    KeeperState.RUNNING: frozenset({KeeperState.BACKOFF, KeeperState.STOPPED}),
    KeeperState.BACKOFF: frozenset({KeeperState.STARTING, KeeperState.STOPPED}),
    KeeperState.STOPPED: frozenset({KeeperState.STARTING}),
}


class StateMoveError(RuntimeError):
    """A state change the table of moves does not allow: a bug, never an input error."""

    def __init__(self, owner: str, current: StrEnum, to: StrEnum) -> None:
        super().__init__(f"{owner}: no move from {current} to {to}")


_State = TypeVar("_State", RunState, KeeperState)


def check_move(moves: dict[_State, frozenset[_State]], current: _State, to: _State,
               owner: str) -> None:
    """Raise StateMoveError unless `moves` allows current -> to."""
    if to not in moves[current]:
        raise StateMoveError(owner, current, to)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Attempts after a run fails (non-zero exit, signal) or times out."""

    max: int  # retries after the first attempt
    delay: float = 10.0  # seconds before the first retry
    backoff: float = 2.0  # each later delay is the previous times this
    max_delay: float = 600.0

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (2 = the first retry)."""
        try:
            return min(self.delay * self.backoff ** (attempt - 2), self.max_delay)
        except OverflowError:  # a growth that passes any float long before max_delay
            return self.max_delay


MIB = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class LogPolicy:
    """How a task's output is kept: `logs/TASK.log` (and `TASK.err.log` when split)."""

    max_bytes: int = 10 * MIB  # rotate the file before it grows past this
    keep: int = 5  # rotated files kept: TASK.log.1 (newest) .. TASK.log.KEEP
    split: bool = False  # stderr to its own file
    max_run_bytes: int | None = None  # output kept per run; None: max_bytes for cron
    #                                   runs, no cap for keep-alive instances
    stdout: bool | None = None  # output lines also on the daemon's stdout; None: under
    #                             `torchd run` yes (a detached daemon has no stdout)
    stdout_rate: int = 100  # lines a second per task on stdout, bursts of ten seconds' worth
    timestamps: bool = False  # each line in the log file starts with its arrival time

    def run_cap(self, kind: TaskKind) -> int | None:
        if self.max_run_bytes is not None:
            return self.max_run_bytes
        return self.max_bytes if kind is TaskKind.CRON else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0


KIB = 1 << 10


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpCall:
    """`http:` of a task: each run makes this request from the daemon's own event loop (no
    process). `${NAME}` in the URL, headers and body is replaced at run time (see
    core.envsubst); the text here is the template, which is what logs show."""

    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None
    timeout: float = 30.0  # seconds from the run's start; then outcome timeout
    expect_status: tuple[tuple[int, int], ...] = ((200, 299),)  # inclusive ranges
    expect_body: re.Pattern[str] | None = None  # searched in the response's text
    tls_verify: bool = True
    max_log_bytes: int = 64 * KIB  # of the response body kept in the task log

    def status_text(self) -> str:
        """expect_status as the file writes it: `200-299, 304`."""
        return ", ".join(str(low) if low == high else f"{low}-{high}"
                         for low, high in self.expect_status)


@dataclass(frozen=True, slots=True, kw_only=True)
class HookAction:
    """What one hook does: a command, a webhook, or both."""

    command: tuple[str, ...] | None = None
    webhook: Webhook | None = None
    timeout: float = 60.0  # for the command


class HookEvent(StrEnum):
    ON_START = "on_start"
    ON_SUCCESS = "on_success"
    ON_FAILURE = "on_failure"  # failed, timeout, start-error
    ON_MISSED = "on_missed"


class RunOn(StrEnum):
    """Where a task runs among the hosts it matches (cluster mode)."""

    ALL = "all"  # every matching host runs it
    ONE = "one"  # one host per fire (cron) or one holder of a lease (daemon)


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to "may this host run this fire?" in cluster mode."""

    won: bool
    holder: str | None  # the winning host, when known
    error: str | None = None  # set when the cluster could not be asked: the fire is missed


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSettings:
    redis: str  # redis://host:6379/0
    name: str = "default"  # keys are prefixed torchd:NAME:, so clusters can share a Redis
    host_id: str | None = None  # default: $TORCHD_HOST_ID, else the host name
    max_load: float = 0.9  # above this a host lets others claim first
    lease_ttl: float = 15.0  # seconds a daemon task's lease lasts without renewal


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpSettings:
    """`daemon.http`: the HTTP API, dashboard and metrics listener."""

    host: str = "127.0.0.1"
    port: int = 8427
    read_only: bool = False  # refuse every action (trigger, kill, pause, ...)
    metrics_auth: bool = True  # /metrics needs a token too
    token_file: str | None = None  # the admin token; default STATE_DIR/http.token
    viewer_token_file: str | None = None  # a read-only token, if given

    @property
    def loopback(self) -> bool:
        """Whether only this host can reach the listener."""
        return self.host in ("localhost", "::1") or self.host.startswith("127.")

    @property
    def listen(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryPolicy:
    enabled: bool = True
    keep_days: float = 30.0
    keep_runs_per_task: int = 1000


class On(StrEnum):
    """Which final outcome of an upstream run satisfies an edge."""

    SUCCESS = "success"  # every upstream succeeded (fan-in)
    FAILURE = "failure"  # any upstream failed: each failure fires the downstream
    ALWAYS = "always"  # every upstream finished, whatever its outcome (fan-in)


@dataclass(frozen=True, slots=True, kw_only=True)
class After:
    """A task's `after:`: its upstreams, the outcome that counts, and how recent each
    upstream run must be when the last one completes the set (`within`, seconds)."""

    tasks: tuple[str, ...]
    on: On = On.SUCCESS
    within: float | None = None
    line: int = field(default=0, compare=False)  # where `after:` is in its file


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    name: str
    kind: TaskKind
    schedule: Schedule | None  # None for kind=daemon, and for a task with `after`
    command: tuple[str, ...]  # argv; a string command becomes ("/bin/sh", "-c", text);
    #                           () for an HTTP task
    hosts: tuple[str, ...] = ()
    max_running: int = 1  # 0 = unlimited
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    enabled: bool = True
    timezone: str = "UTC"
    catchup: Catchup = Catchup.NONE
    starting_deadline: float | None = None  # seconds; missed fires older than this are dropped
    overlap: Overlap = Overlap.SKIP
    queue_limit: int = 10
    kill_grace: float = 10.0  # seconds between TERM and KILL when torchd stops a run
    timeout: float | None = None  # seconds a run may take before it is stopped
    jitter: float = 0.0  # each fire starts up to this many seconds after its time (random)
    user: str | None = None  # run as this account (torchd must run as root)
    group: str | None = None
    umask: int | None = None
    nice: int | None = None
    limits: tuple[tuple[str, int | None], ...] = ()  # (name, value; None = unlimited)
    retries: RetryPolicy | None = None
    log: LogPolicy = LogPolicy()  # the daemon's defaults with the task's own keys over them
    hooks: tuple[tuple[HookEvent, HookAction], ...] = ()  # the task's own (daemon's apart)
    run_on: RunOn = RunOn.ALL
    after: After | None = None  # fired by its upstreams' runs (core.workflow), not a clock
    http: HttpCall | None = None  # an HTTP task: a request instead of a command
    window: KeepWindow | None = None  # a daemon task kept alive only inside this window
    for_this_host: bool = True
    line: int = field(default=0, compare=False)  # where the task starts in its file
    file: str = field(default="", compare=False)  # its file, in a drop-in directory
    # `torchd check`'s lint (config.lint): the warnings silenced (`lint: {ignore: [...]}`)
    # and the line of each key the task gives, so a warning names the field's line.
    lint: frozenset[str] = field(default=frozenset(), compare=False)
    key_lines: tuple[tuple[str, int], ...] = field(default=(), compare=False)

    @property
    def schedule_text(self) -> str | None:
        return None if self.schedule is None else self.schedule.text

    @property
    def active(self) -> bool:
        """True when this host should fire or keep alive this task."""
        return self.enabled and self.for_this_host


new_task_spec = fast_constructor(TaskSpec)  # what the parser builds each task with


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonSettings:
    state_dir: str | None = None
    timezone: str = "UTC"
    watch: bool = True
    max_running: int = 0  # cron runs across all tasks; 0 = unlimited
    overlap: Overlap = Overlap.SKIP  # skip or queue, when max_running is reached
    queue_limit: int = 100  # fires waiting for the daemon-wide limit
    log: LogPolicy = LogPolicy()
    history: HistoryPolicy = HistoryPolicy()
    hooks: tuple[tuple[HookEvent, HookAction], ...] = ()  # for every task
    socket_group: str | None = None  # this group may use the control socket too
    cluster: ClusterSettings | None = None
    http: HttpSettings | None = None  # no HTTP listener unless given
    cgroups: bool = True  # a cgroup per run where cgroup v2 is writable
    log_format: LogFormat = LogFormat.TEXT  # the daemon's own log; --log-format wins


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    path: str
    digest: str  # sha256 of the file bytes, first 12 hex digits
    daemon: DaemonSettings
    tasks: tuple[TaskSpec, ...]

    def by_name(self) -> dict[str, TaskSpec]:
        return {task.name: task for task in self.tasks}


class TaskGauges(NamedTuple):
    """What `/metrics` reads of a task at each scrape (Scheduler.gauges): its gauges are
    computed then, never kept up to date on every fire."""

    name: str
    schedule: str  # its text; "" for a daemon-type task
    kind: TaskKind
    paused: bool
    running: int  # runs going on
    next_fire: float | None  # epoch seconds; None when none is planned or it is inactive


def fire_id(task: str, scheduled: float) -> str:
    """A fire's name, the same on every host: `TASK@TIME` (UTC, milliseconds if any)."""
    stamp = iso_utc(scheduled)
    if stamp.endswith(".000Z"):
        stamp = stamp[:-5] + "Z"
    return f"{task}@{stamp}"
