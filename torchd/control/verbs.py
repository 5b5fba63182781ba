"""Every control verb, defined once: its request as a typed, validated dataclass and what
its reply holds. Pure. Transports (the Unix socket today) decode a JSON object into the
verb's request with `parse_request` and send back what `control.api` returns.

A request is `{"cmd": VERB, ...fields}`; a field left out or null takes its default.
Every time in a reply is ISO 8601 in UTC to the millisecond (`core.timefmt.iso_utc`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, ClassVar, NotRequired, TypedDict

from torchd.control.protocol import ErrorCode, ProtocolError
from torchd.core.durations import parse_duration
from torchd.core.errors import DurationError
from torchd.core.timefmt import iso_utc


# ----- replies ---------------------------------------------------------------------------
class ReloadRecord(TypedDict):
    """A reload attempt: `reload`'s reply, `last_reload`, and `status`'s last_reload."""

    seq: int  # the number of reload attempts since start, this one included
    source: str  # request | signal | file change | start
    time: str
    ok: bool
    config_hash: str | None  # of the config applied; None if rejected
    changes: dict[str, Any] | None  # added, changed (with keys), removed, unchanged
    errors: list[str]  # each "FILE:LINE: task 'NAME': FIELD: message"


class PingReply(TypedDict):
    pid: int
    version: str
    config_file: str
    config_hash: str
    generation: int
    last_reload: dict[str, Any] | None  # a ReloadRecord, its changes as counts
    http: str | None  # the dashboard's address (http://HOST:PORT/) while it listens
    http_token_file: str | None  # where its admin token is (`torchd web` reads it)
    timezone: str  # daemon.timezone


class StatusReply(TypedDict):
    pid: int
    version: str
    started: str
    uptime: float
    state_dir: str
    config_file: str
    config_hash: str
    timezone: str  # daemon.timezone: the zone of the daemon's own times in text
    generation: int
    last_reload: ReloadRecord | None
    runs_running: int
    problems: list[dict[str, Any]]
    containment: dict[str, Any]
    tasks: list[dict[str, object]]  # one snapshot per task: see the README


class GlanceReply(TypedDict):
    tasks: int  # how many there are
    next: list[str]  # the soonest to fire first
    failing: list[str]
    never_ran: list[str]


class IndexReply(TypedDict):
    tasks: list[dict[str, object]]


class LastRun(TypedDict):
    at: str  # when it started, or failed to start
    outcome: str  # a run's outcome; `running` for one going on; `start-error`
    exit_code: int | None
    signal: int | None
    error: str | None  # why it could not start


class ListRow(TypedDict):
    name: str
    next_fire: str | None
    idle: str | None  # why next_fire is None: see control.listing.idle_reason
    last: LastRun | None
    schedule: str | None
    timezone: str


class ListReply(TypedDict):
    tasks: list[ListRow]


class PlanReply(TypedDict):
    config_file: str
    config_hash: str  # of the file as it is now
    changes: dict[str, Any]  # from the running config to the file
    next_fires: dict[str, list[str]]
    timezones: dict[str, str]  # the zone of each task in next_fires
    timezone: str  # the running config's daemon.timezone
    running_hash: str  # of the config the daemon runs
    generation: int  # reload attempts since start
    watching: bool  # the daemon applies edits of the file itself
    last_reload: ReloadRecord | None  # what applied the running config, with its changes


class StopReply(TypedDict):
    pid: int
    stopping: bool
    already: bool  # a stop had begun; this request changed nothing


class TriggerReply(TypedDict):
    task: str
    run_id: str
    status: str  # started | queued | skipped: WHY | dropped: WHY | start-error: WHY
    outcome: NotRequired[str]  # with wait: how the run ended
    exit_code: NotRequired[int | None]
    signal: NotRequired[int | None]
    duration: NotRequired[float]
    error: NotRequired[str]


class KilledRun(TypedDict):
    run_id: str
    pid: int | None  # None: an HTTP run
    ended: bool
    outcome: str | None
    result: str | None  # exit=N or signal=NAME


class KillReply(TypedDict):
    task: str
    runs: list[KilledRun]


class PauseReply(TypedDict):
    changed: list[str]  # the tasks this request paused
    paused: list[str]  # every task paused now, by name
    paused_all: bool


class ResumeReply(TypedDict):
    changed: list[str]  # the tasks this request resumed
    resumed: list[str]  # the same (the name the reply has always had)
    paused_all: bool
    paused: list[str]


class LogsReply(TypedDict):
    text: str
    offset: int  # where to ask from with follow_offset
    run_id: NotRequired[str]  # not with follow_offset
    outcome: NotRequired[str | None]


class HistoryReply(TypedDict):
    enabled: bool
    runs: list[dict[str, Any]]  # rows as `history --json`: see run_row


class RecentRun(TypedDict):
    run_id: str
    outcome: str | None  # None while it runs
    at: str
    duration: float | None


class TaskRecent(TypedDict):
    runs: list[RecentRun]  # newest first
    typical_duration: float | None  # the median of its recent ok runs' durations


class RecentReply(TypedDict):
    since: str
    counts: dict[str, int]  # outcome (`running` for runs going on) -> records since `since`
    tasks: dict[str, TaskRecent]


class TaskReply(TypedDict):
    task: dict[str, object]  # the task's entry in `status`
    file: str  # the file it was loaded from
    line: int  # where it starts there
    source: str | None  # its text in the file (None if the daemon no longer has it)
    next_fires: list[str]
    timezone: str


class FiresReply(TypedDict):
    start: str
    end: str
    fires: dict[str, list[str]]  # task -> its fire times in the window
    timezones: dict[str, str]
    truncated: list[str]  # tasks with more fires than `limit` (or past MAX_FIRES in all)


class TimelineRow(TypedDict):
    """One task of the daily plan; every slot is a number as TimelineReply says."""

    name: str
    schedule: str | None
    timezone: str
    active: bool  # fires on this host (enabled, and its hosts match)
    next_fire: str | None  # the first fire in the window
    fires: list[list[int]]  # [slot, fires counted there], in slot order
    full: list[int]  # slots with more fires than were counted (core.timeline.SLOT_CAP)
    overlaps: list[int]  # slots with a fire due while the one before would still run
    runs: list[list[Any]]  # [slot, outcome, count]: the past window's runs (`running`)
    longest: float | None  # seconds: the task's longest run in the past window


class TimelineReply(TypedDict):
    now: str
    origin: str  # where slot 0 (the one holding now) starts
    slot: int  # seconds per slot
    hours: float  # the window on each side of now
    first: int  # the first past slot (negative), and the last future slot
    last: int
    timezone: str  # daemon.timezone
    total: int  # tasks whose name holds `match`
    offset: int
    tasks: list[TimelineRow]  # at most `count` of them, in file order
    history: bool  # false when daemon.history is off: no past runs then


class AuditEntry(TypedDict):
    at: str
    transport: str  # socket | http
    peer: str  # uid=N, or admin@ADDRESS / viewer@ADDRESS
    action: str  # the verb
    target: str | None
    result: str  # ok (with what it did), or the error code and message


class AuditReply(TypedDict):
    enabled: bool  # false when daemon.history is off: actions are then only in the log
    actions: list[AuditEntry]


class SubmitReply(TypedDict):
    task: str  # submit:NAME
    at: str
    timezone: str  # the submission's zone: daemon.timezone


RUN_TIMES = ("scheduled", "at", "started", "ended", "missed_from")  # columns holding a time


def run_row(row: dict[str, Any], timezone: str | None) -> dict[str, Any]:
    """A row of the run history as replies and `history --json` give it: its columns, the
    times in the JSON form, and `timezone`, its task's zone (None when the history is read
    without a daemon, which alone knows the zones)."""
    shown = {**row, "timezone": timezone}
    for column in RUN_TIMES:
        if shown.get(column) is not None:
            shown[column] = iso_utc(shown[column])
    return shown


# ----- requests ------------------------------------------------------------------------
def at_problem(text: str) -> str | None:
    """Why `text` cannot be a submission's `at` (an ISO 8601 time, or a duration from
    now), or None: checked by the CLI before it asks, and by the daemon."""
    try:
        datetime.fromisoformat(text)
    except ValueError:
        try:
            parse_duration(text)
        except DurationError:
            return (f"at: '{text}' is not an ISO 8601 time such as "
                    "2026-12-01T10:00:00+01:00, nor a duration such as 10m")
    return None


_REQUIRED: dict[str, bool] = {"required": True}
MAX_ROWS = 10_000  # history, audit and recent rows one reply holds at most
MAX_NEXT = 1_000  # next fires of one task one reply holds at most
_NOT_NEGATIVE: dict[str, bool] = {"not_negative": True}


def _up_to(maximum: int) -> dict[str, object]:
    """A count that is 0 or more and at most `maximum` (what one reply may cost)."""
    return {"not_negative": True, "maximum": maximum}


@dataclass(frozen=True, slots=True)
class Peer:
    """Who sent a request: its transport and, for the audit, who it was."""

    transport: str  # socket | http
    who: str  # uid=N for the socket; admin@ADDRESS or viewer@ADDRESS for HTTP


@dataclass(frozen=True, slots=True)
class Ping:
    """Small and cheap whatever the number of tasks. Reply: PingReply."""

    verb: ClassVar[str] = "ping"


@dataclass(frozen=True, slots=True)
class LastReload:
    """Reply: the last ReloadRecord (an empty object before any)."""

    verb: ClassVar[str] = "last_reload"


@dataclass(frozen=True, slots=True)
class Status:
    """Reply: StatusReply, documented in the README as `status --json`; with `tasks`, the
    snapshots of those tasks alone (names that are not tasks are left out; an empty list
    gives none)."""

    verb: ClassVar[str] = "status"
    tasks: list[str] | None = None


@dataclass(frozen=True, slots=True)
class Glance:
    """What an overview shows of every task, at little cost with 10,000 of them: the
    `count` tasks that fire soonest, those whose last run failed, and the active cron
    tasks that never ran and have no fire to come. Reply: GlanceReply."""

    verb: ClassVar[str] = "glance"
    count: int = field(default=10, metadata=_up_to(MAX_NEXT))


@dataclass(frozen=True, slots=True)
class TaskIndex:
    """Every task in a few fields (name, schedule, type, enabled, for_this_host, paused,
    running: a count, next_fire, last_outcome, after: whether upstreams fire it), by name:
    cheap at 10,000 tasks, for a client that filters before it asks `status` for a page.
    Reply: IndexReply."""

    verb: ClassVar[str] = "index"


@dataclass(frozen=True, slots=True)
class ListTasks:
    """Reply: ListReply, every task with its next fire (or why none), its last run and
    schedule, soonest first (see control.listing)."""

    verb: ClassVar[str] = "list"


@dataclass(frozen=True, slots=True)
class Plan:
    """Parse the task file and diff it against the running config without applying it.
    Reply: PlanReply (next_fires of the added and changed cron tasks). A file with
    errors: a `config` error."""

    verb: ClassVar[str] = "plan"


@dataclass(frozen=True, slots=True)
class Reload:
    """Parse the task file and apply it, through the same path as SIGHUP and the file
    watcher. Reply: this reload's ReloadRecord (source "request"); with errors, ok is
    false and the running config is kept. A stopping daemon answers `stopping`."""

    verb: ClassVar[str] = "reload"
    action: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the daemon: runs get `grace` seconds after SIGTERM, then SIGKILL. A second
    request while a stop is going on changes nothing (a second SIGTERM to the daemon is
    what kills every run at once). Reply: StopReply."""

    verb: ClassVar[str] = "stop"
    action: ClassVar[bool] = True
    grace: float | None = field(default=None, metadata=_NOT_NEGATIVE)


@dataclass(frozen=True, slots=True)
class Trigger:
    """Run a task now (`force` even past max_running; `wait` for the run to end;
    `cascade`: its final outcome fires its downstream tasks). Reply: TriggerReply."""

    verb: ClassVar[str] = "trigger"
    action: ClassVar[bool] = True
    task: str = field(default="", metadata=_REQUIRED)
    force: bool = False
    wait: bool = False
    cascade: bool = True


@dataclass(frozen=True, slots=True)
class Kill:
    """End a task's runs (or the one `run`) with TERM, kill_grace, KILL, and wait for them.
    Reply: KillReply."""

    verb: ClassVar[str] = "kill"
    action: ClassVar[bool] = True
    task: str = field(default="", metadata=_REQUIRED)
    run: str | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    """Hold a task's fires (or every task's with `all`), kept across restarts.
    Reply: PauseReply."""

    verb: ClassVar[str] = "pause"
    action: ClassVar[bool] = True
    task: str | None = None
    all: bool = False


@dataclass(frozen=True, slots=True)
class Resume:
    """Undo a pause. Reply: ResumeReply."""

    verb: ClassVar[str] = "resume"
    action: ClassVar[bool] = True
    task: str | None = None
    all: bool = False


@dataclass(frozen=True, slots=True)
class Logs:
    """A run's output (default the latest run of `task`), its last `lines`; or with
    `follow_offset`, what the task's log has gained since that offset. Reply: LogsReply."""

    verb: ClassVar[str] = "logs"
    task: str = field(default="", metadata=_REQUIRED)
    run: str | None = None
    lines: int | None = field(default=None, metadata=_NOT_NEGATIVE)
    stderr: bool = False
    follow_offset: int | None = field(default=None, metadata=_NOT_NEGATIVE)


@dataclass(frozen=True, slots=True)
class History:
    """Recorded runs, newest first: `limit` of them after `offset`, of `task`, with
    `outcome` (`running`: not ended), `trigger` and `host`, recorded from `since` to before
    `until` (epoch seconds); `failed` for the failures of every kind. Reply: HistoryReply."""

    verb: ClassVar[str] = "history"
    task: str | None = None
    limit: int = field(default=20, metadata=_up_to(MAX_ROWS))
    failed: bool = False
    since: float | None = None
    until: float | None = None
    outcome: str | None = None
    trigger: str | None = None
    host: str | None = None
    offset: int = field(default=0, metadata=_NOT_NEGATIVE)


@dataclass(frozen=True, slots=True)
class Recent:
    """How many records of each outcome since `hours` ago, and the last `count` records of
    each of `tasks` (at most 200) with its typical duration (the median of its recent ok
    runs). Reply: RecentReply."""

    verb: ClassVar[str] = "recent"
    tasks: list[str] = field(default_factory=list)
    count: int = field(default=20, metadata=_up_to(MAX_ROWS))
    hours: float = field(default=24.0, metadata=_NOT_NEGATIVE)


@dataclass(frozen=True, slots=True)
class Submit:
    """A one-off task: `command` (argv) at `at` (ISO 8601, or a duration from now; default
    now) on this host if it matches `hosts`. Reply: SubmitReply."""

    verb: ClassVar[str] = "submit"
    action: ClassVar[bool] = True
    command: list[str] = field(default_factory=list, metadata=_REQUIRED)
    name: str | None = None
    at: str | None = None
    hosts: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """One task as loaded: its snapshot (as in `status`), its source text with file and
    line, and its next `count` fires. Reply: TaskReply; bad-argument for no such task."""

    verb: ClassVar[str] = "task"
    task: str = field(default="", metadata=_REQUIRED)
    count: int = field(default=10, metadata=_up_to(MAX_NEXT))


@dataclass(frozen=True, slots=True)
class Fires:
    """The fires due in the next `hours` (at most 168) of the given `tasks` (default every
    task), at most `limit` per task and MAX_FIRES in all, each time listed (the daily plan
    counts them per slot: `timeline`). Reply: FiresReply; a task whose fires were cut
    short is in `truncated`."""

    verb: ClassVar[str] = "fires"
    tasks: list[str] = field(default_factory=list)
    hours: float = field(default=24.0, metadata=_NOT_NEGATIVE)
    limit: int = field(default=1440, metadata=_NOT_NEGATIVE)


@dataclass(frozen=True, slots=True)
class Timeline:
    """The daily plan: the tasks whose name holds `match` (case ignored), `count` (at most
    500) from `offset` in file order, each with its fires in the next `hours` (at most
    168) and its runs in the past `hours`, counted per `slot` seconds (60 or more, at most
    2016 slots a side). Reply: TimelineReply."""

    verb: ClassVar[str] = "timeline"
    match: str = ""
    offset: int = field(default=0, metadata=_NOT_NEGATIVE)
    count: int = field(default=50, metadata=_NOT_NEGATIVE)
    hours: float = field(default=24.0, metadata=_NOT_NEGATIVE)
    slot: int = field(default=300, metadata=_NOT_NEGATIVE)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run by its id, whatever its task: the row as `history` gives it, or
    bad-argument if the history has no such run."""

    verb: ClassVar[str] = "run"
    run_id: str = field(default="", metadata=_REQUIRED)


@dataclass(frozen=True, slots=True)
class Audit:
    """The operators' actions (trigger, kill, pause, resume, submit, reload, stop) through
    any transport, newest first. Reply: AuditReply."""

    verb: ClassVar[str] = "audit"
    limit: int = field(default=50, metadata=_up_to(MAX_ROWS))


@dataclass(frozen=True, slots=True)
class ClusterView:
    """Reply: the cluster's name, the hosts with their heartbeats and clock skew, and the
    fires and leases held. A daemon not in cluster mode answers bad-argument."""

    verb: ClassVar[str] = "cluster"


Request = (Ping | LastReload | Status | Glance | TaskIndex | ListTasks | Plan | Reload | Stop
           | Trigger | Kill | Pause | Resume | Logs | History | Recent | RunInfo | TaskInfo
           | Fires | Submit | Audit | ClusterView | Timeline)
VERBS: dict[str, type[Request]] = {cls.verb: cls for cls in (
    Ping, LastReload, Status, Glance, TaskIndex, ListTasks, Plan, Reload, Stop, Trigger, Kill,
    Pause, Resume, Logs, History, Recent, RunInfo, TaskInfo, Fires, Submit, Audit,
    ClusterView, Timeline)}


def is_action(request: Request) -> bool:
    """Whether the request changes something (and so is audited, and refused to a viewer
    or a read-only listener)."""
    return getattr(request, "action", False)


def action_target(request: Request) -> str | None:
    """What an action acts on, as the audit shows it."""
    if isinstance(request, Kill) and request.run:
        return f"{request.task} run {request.run}"
    if isinstance(request, Pause | Resume):
        return "all" if request.all else request.task
    if isinstance(request, Submit):
        return f"{request.name or '-'}: {' '.join(request.command)}"[:500]
    return getattr(request, "task", None)

_KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,), "bool": (bool,), "int": (int,), "float": (int, float),
    "list[str]": (list,),
}


def parse_request(message: dict[str, Any]) -> Request:
    """The typed request of a decoded message (`cmd` is known: see protocol)."""
    cls = VERBS[message["cmd"]]
    values = {spec.name: _field_value(message, spec) for spec in dataclasses.fields(cls)}
    return cls(**values)


_TRUE, _FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})


def from_query(verb: str, query: Mapping[str, str], repeated: Callable[[str], list[str]],
               ) -> dict[str, Any]:
    """A request message from a URL's query (`?task=x&lines=20&force=true`), each value
    converted to its field's kind as the JSON form would give it; `repeated(name)` gives
    every value of a list field (`?command=a&command=b`). Unknown names are refused."""
    cls = VERBS[verb]
    fields = {spec.name: str(spec.type).removesuffix(" | None")
              for spec in dataclasses.fields(cls)}
    message: dict[str, Any] = {"cmd": verb}
    for name, text in query.items():
        kind = fields.get(name)
        if kind is None:
            known = ", ".join(fields) or "none"
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"'{name}' is not an argument of "
                                f"{verb} (its arguments: {known})")
        try:
            message[name] = _from_text(kind, text, partial(repeated, name))
        except ValueError:
            raise ProtocolError(ErrorCode.BAD_ARGUMENT,
                                f"'{name}' must be {_KIND_WORDS[kind]}, got '{text}'") from None
    return message


_KIND_WORDS = {"str": "text", "bool": "true or false", "int": "a whole number",
               "float": "a number", "list[str]": "text"}


def _from_text(kind: str, text: str, every: Callable[[], list[str]]) -> object:
    if kind == "bool":
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValueError(text)
    if kind == "int":
        return int(text)
    if kind == "float":
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value
    if kind == "list[str]":
        return every()
    return text


def describe_verbs() -> list[dict[str, Any]]:
    """Every verb with its arguments (name, kind, default, required) and what it does: the
    HTTP API's index (`GET /api/v1`), from the same definitions as the requests."""
    described = []
    for verb, cls in VERBS.items():
        arguments = []
        for spec in dataclasses.fields(cls):
            default = (spec.default_factory() if spec.default_factory is not dataclasses.MISSING
                       else spec.default)
            arguments.append({"name": spec.name, "kind": str(spec.type),
                              "required": bool(spec.metadata.get("required")),
                              "default": None if spec.metadata.get("required") else default})
        described.append({"verb": verb, "action": bool(getattr(cls, "action", False)),
                          "doc": " ".join((cls.__doc__ or "").split()),
                          "arguments": arguments})
    return described


def _field_value(message: dict[str, Any], spec: dataclasses.Field[Any]) -> Any:
    value = message.get(spec.name)
    if value is None:
        if spec.metadata.get("required"):
            raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"'{spec.name}' is required")
        if spec.default_factory is not dataclasses.MISSING:
            return spec.default_factory()
        return spec.default
    kind = str(spec.type).removesuffix(" | None")
    allowed = _KINDS[kind]
    if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"'{spec.name}' has the wrong type")
    checked: Any = value  # of one of the kinds in _KINDS
    if kind == "list[str]" and not all(isinstance(item, str) for item in checked):
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"'{spec.name}' must be a list of text")
    if spec.metadata.get("not_negative") and checked < 0:
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"'{spec.name}' must be 0 or more")
    maximum = spec.metadata.get("maximum")
    if maximum is not None and checked > maximum:
        raise ProtocolError(ErrorCode.BAD_ARGUMENT, f"'{spec.name}' must be at most {maximum}")
    return checked
