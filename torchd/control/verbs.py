"""Every control verb, defined once: its request as a typed, validated dataclass and what
its reply holds. Pure. Transports (the Unix socket today) decode a JSON object into the
verb's request with `parse_request` and send back what `control.api` returns.

A request is `{"cmd": VERB, ...fields}`; a field left out or null takes its default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torchd.control.protocol import ErrorCode, ProtocolError

_REQUIRED: dict[str, bool] = {"required": True}
_NOT_NEGATIVE: dict[str, bool] = {"not_negative": True}


@dataclass(frozen=True, slots=True)
class Ping:
    """Small and cheap whatever the number of tasks. Reply: pid, version, config_file,
    config_hash, generation (the number of reload attempts) and last_reload with its
    changes as counts."""

    verb: ClassVar[str] = "ping"


@dataclass(frozen=True, slots=True)
class LastReload:
    """Reply: the last reload attempt as `reload` returned it (see Reload)."""

    verb: ClassVar[str] = "last_reload"


@dataclass(frozen=True, slots=True)
class Status:
    """Reply: the daemon (pid, version, started, uptime, state_dir, config_file,
    config_hash, generation, last_reload, runs_running, problems, containment) and
    `tasks`, one snapshot per task. Documented in the README as `status --json`."""

    verb: ClassVar[str] = "status"


@dataclass(frozen=True, slots=True)
class Plan:
    """Parse the task file and diff it against the running config without applying it.
    Reply: config_hash, changes {added, changed, removed, unchanged} and next_fires of
    the added and changed cron tasks. A file with errors: a `config` error."""

    verb: ClassVar[str] = "plan"


@dataclass(frozen=True, slots=True)
class Reload:
    """Parse the task file and apply it, through the same path as SIGHUP and the file
    watcher. Reply: seq, source ("request"), time, ok, config_hash, changes (the names)
    and errors (each with file and line; ok is false and the running config is kept)."""

    verb: ClassVar[str] = "reload"


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the daemon: runs get `grace` seconds after SIGTERM, then SIGKILL. A second
    request while a stop is going on changes nothing (a second SIGTERM to the daemon is
    what kills every run at once). Reply: pid, stopping, and already (true if a stop had
    begun)."""

    verb: ClassVar[str] = "stop"
    grace: float | None = field(default=None, metadata=_NOT_NEGATIVE)


@dataclass(frozen=True, slots=True)
class Trigger:
    """Run a task now (`force` even past max_running; `wait` for the run to end).
    Reply: task, run_id, status (started, queued or skipped) and, with wait, outcome,
    exit_code, signal, duration or error."""

    verb: ClassVar[str] = "trigger"
    task: str = field(default="", metadata=_REQUIRED)
    force: bool = False
    wait: bool = False


@dataclass(frozen=True, slots=True)
class Kill:
    """End a task's runs (or the one `run`) with TERM, kill_grace, KILL, and wait for them.
    Reply: task and runs [{run_id, pid, ended, outcome, result}]."""

    verb: ClassVar[str] = "kill"
    task: str = field(default="", metadata=_REQUIRED)
    run: str | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    """Hold a task's fires (or every task's with `all`), kept across restarts.
    Reply: paused (the names it changed), paused_all and the paused names."""

    verb: ClassVar[str] = "pause"
    task: str | None = None
    all: bool = False


@dataclass(frozen=True, slots=True)
class Resume:
    """Undo a pause. Reply: resumed (the names it changed), paused_all and paused."""

    verb: ClassVar[str] = "resume"
    task: str | None = None
    all: bool = False


@dataclass(frozen=True, slots=True)
class Logs:
    """A run's output (default the latest run of `task`), its last `lines`; or with
    `follow_offset`, what the task's log has gained since that offset. Reply: run_id,
    outcome, text, offset (follow: text and offset)."""

    verb: ClassVar[str] = "logs"
    task: str = field(default="", metadata=_REQUIRED)
    run: str | None = None
    lines: int | None = field(default=None, metadata=_NOT_NEGATIVE)
    stderr: bool = False
    follow_offset: int | None = field(default=None, metadata=_NOT_NEGATIVE)


@dataclass(frozen=True, slots=True)
class History:
    """Recorded runs, newest first. Reply: enabled and runs (rows as `history --json`)."""

    verb: ClassVar[str] = "history"
    task: str | None = None
    limit: int = field(default=20, metadata=_NOT_NEGATIVE)
    failed: bool = False
    since: float | None = None


@dataclass(frozen=True, slots=True)
class Submit:
    """A one-off task: `command` (argv) at `at` (ISO 8601, or a duration from now; default
    now) on this host if it matches `hosts`. Reply: task (named "submit:NAME") and at."""

    verb: ClassVar[str] = "submit"
    command: list[str] = field(default_factory=list, metadata=_REQUIRED)
    name: str | None = None
    at: str | None = None
    hosts: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """Reply: the cluster's name, the hosts with their heartbeats and clock skew, and the
    fires and leases held. A daemon not in cluster mode answers bad-argument."""

    verb: ClassVar[str] = "cluster"


Request = (Ping | LastReload | Status | Plan | Reload | Stop | Trigger | Kill | Pause | Resume
           | Logs | History | Submit | ClusterView)
VERBS: dict[str, type[Request]] = {cls.verb: cls for cls in (
    Ping, LastReload, Status, Plan, Reload, Stop, Trigger, Kill, Pause, Resume, Logs, History,
    Submit, ClusterView)}

_KINDS: dict[str, tuple[type, ...]] = {
    "str": (str,), "bool": (bool,), "int": (int,), "float": (int, float),
    "list[str]": (list,),
}


def parse_request(message: dict[str, Any]) -> Request:
    """The typed request of a decoded message (`cmd` is known: see protocol)."""
    cls = VERBS[message["cmd"]]
    values = {spec.name: _field_value(message, spec) for spec in dataclasses.fields(cls)}
    return cls(**values)


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
    return checked
