"""Task file -> Config. Every problem is collected and reported at once, with its line.

YAML is composed into nodes and walked by hand instead of constructed into Python
objects: that keeps line numbers, lets us reject duplicate keys (PyYAML keeps the last),
and lets us refuse YAML 1.1 coercions (`no`, `0700`, `12:30:00`) where text is expected.
This module does no asyncio and starts nothing, so `torchd check` is instant.
"""

from __future__ import annotations

import difflib
import gc
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml

from torchd.config import yamlvalues as v
from torchd.config.lint import as_lint
from torchd.config.relpaths import against, file_dir
from torchd.config.yamlsyntax import yaml_problem
from torchd.core.errors import ConfigError, ConfigProblem, ScheduleError
from torchd.core.hostmatch import HostIdentity, hosts_match
from torchd.core.model import (
    Catchup,
    ClusterSettings,
    Config,
    DaemonSettings,
    HistoryPolicy,
    HookAction,
    HookEvent,
    HttpCall,
    HttpSettings,
    LogFormat,
    LogPolicy,
    Overlap,
    RunOn,
    TaskKind,
    TaskSpec,
    name_problem,
    new_task_spec,
)
from torchd.core.schedule.bounded import AtSchedule, WindowedSchedule
from torchd.core.schedule.cronexpr import CronSchedule, DstPolicy, Schedule, parse_schedule
from torchd.core.schedule.window import KeepWindow
from torchd.core.schedule.zones import ZoneError, host_zone_spec, load_zone, parse_instant
from torchd.core.workflow import graph_problems
from torchd.system.accounts import (
    account_exists,
    group_exists,
    missing_tools,
    running_as_root,
)
from torchd.system.safefile import Resolved, UnsafePathError, read_regular, resolve_trusted

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


_SEQUENCE_TAG = str(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG)
_MAPPING_TAG = str(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG)


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """The safe loader with implicit-tag answers remembered: task files repeat the same
    keys and values thousands of times, and PyYAML's resolver runs in Python even under
    the C parser, once for every node."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._plain_tags: dict[str, str] = {}

    def resolve(self, kind: type[yaml.Node], value: str | None,
                implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            if not implicit[0]:  # quoted: always text (the safe loader has no path rules)
                return v.STR
            tag = self._plain_tags.get(value)  # type: ignore[arg-type]
            if tag is None:
                tag = self._plain_tags[value] = str(  # type: ignore[index]
                    super().resolve(kind, value, implicit))
            return tag
        # The safe loader resolves collections by kind alone (it has no path resolvers).
        return _MAPPING_TAG if kind is yaml.MappingNode else _SEQUENCE_TAG

    # The safe loader has no path resolvers, and the composer calls these two around every
    # node (200,000 calls at 10,000 tasks); doing nothing here saves their checks.
    def descend_resolver(self, current_node: yaml.Node | None, current_index: object) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


# Known keys as dicts: ordered for messages, hashed for the lookup every key of every task
# makes (a tuple of 29 is compared entry by entry).
TOP_KEYS = dict.fromkeys(("daemon", "tasks"))
DAEMON_KEYS = dict.fromkeys((
    "state_dir", "timezone", "watch", "max_running", "overlap", "queue_limit", "log",
    "history", "hooks", "socket_group", "cluster", "http", "cgroups", "log_format",
))
TASK_KEYS = dict.fromkeys((
    "name", "schedule", "after", "command", "type", "hosts", "max_running", "env", "cwd", "enabled",
    "timezone", "catchup", "starting_deadline", "overlap", "queue_limit", "kill_grace",
    "timeout", "retries", "at", "start_at", "end_at", "jitter",
    "user", "group", "umask", "nice", "limits", "log", "hooks", "run_on", "http",
    "lint",
    "dst", "window",
))
T = TypeVar("T")


@dataclass
class _Walker:
    """Collects problems while turning nodes into values."""

    file: str
    problems: list[ConfigProblem] = field(default_factory=list)
    base: Path = field(init=False)  # where relative paths in the file lead

    def __post_init__(self) -> None:
        self.base = file_dir(self.file)

    def problem(self, node: yaml.Node, task: str | None, field_name: str | None,
                message: str) -> None:
        self.problems.append(ConfigProblem(self.file, v.line_of(node), task, field_name,
                                           message))

    def mapping(self, node: yaml.Node, task: str | None, what: str | None,
                known: dict[str, None]) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        """Yield (key, key_node, value_node), reporting duplicate and unknown keys."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, task, what, f"expected a mapping, got {v.kind_of(node)}")
            return
        seen: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            if not (isinstance(key_node, yaml.ScalarNode) and key_node.tag == v.STR):
                self.problem(key_node, task, what, f"key must be text, got {v.kind_of(key_node)}")
                continue
            key = str(key_node.value)
            if key in seen:
                self.problem(key_node, task, key,
                             f"duplicate key (first given at line {v.line_of(seen[key])})")
                continue
            seen[key] = key_node
            if key not in known:
                close = difflib.get_close_matches(key, list(known), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.problem(key_node, task, key,
                             f"unknown key{hint}; known keys: {', '.join(known)}")
                continue
            yield key, key_node, value_node

    def value(self, convert: Callable[[yaml.Node], T], node: yaml.Node, task: str | None,
              field_name: str) -> T | None:
        try:
            return convert(node)
        except v.Invalid as exc:
            for node_at, message in exc.problems:
                self.problem(node_at, task, field_name, message)
            return None


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Building a big node tree makes no garbage cycles, but triggers the cycle collector
    again and again over everything already built (seconds at 100,000 tasks)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# A reader error's position counts UTF-8 bytes under libyaml, characters under PyYAML's reader.
_POSITION_IN_BYTES = _BaseLoader is not yaml.SafeLoader


def _compose(text: str, file: str) -> yaml.Node | None:
    try:
        documents = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        raise ConfigError([yaml_problem(exc, text, file,
                                        position_in_bytes=_POSITION_IN_BYTES)]) from None
    if len(documents) > 1:
        raise ConfigError([ConfigProblem(file, v.line_of(documents[1]), None, None,
                                         "the file holds more than one YAML document")])
    return documents[0] if documents else None


def _host_zone(walker: _Walker, node: yaml.Node) -> str:
    """This host's zone, for a file that sets no daemon.timezone; a problem (at `node`) if
    it cannot be used: never a silent UTC."""
    spec = host_zone_spec()
    try:
        load_zone(spec)
    except ZoneError as exc:
        source = "TZ" if os.environ.get("TZ") else "/etc/localtime"
        walker.problem(node, None, "daemon.timezone", f"not set, and this host's time zone "
                       f"(from {source}) cannot be used ({exc}); set daemon.timezone, or "
                       f"fix {source}")
        return "UTC0"  # the file is refused in any case; a rule, which needs no zone data
    return spec


def _daemon_settings(walker: _Walker, node: yaml.Node | None,
                     root: yaml.Node) -> DaemonSettings:
    settings: dict[str, object] = {}
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == v.NULL):
        node = None
    if node is not None:
        for key, _key_node, value in walker.mapping(node, None, "daemon", DAEMON_KEYS):
            where = f"daemon.{key}"
            if key == "state_dir":
                state_dir = walker.value(v.as_text, value, None, where)
                settings[key] = state_dir and against(walker.base, state_dir)
            elif key == "timezone":
                settings[key] = walker.value(v.as_zone_name, value, None, where)
            elif key in ("watch", "cgroups"):
                settings[key] = walker.value(v.as_boolean, value, None, where)
            elif key == "max_running":
                settings[key] = walker.value(v.as_integer, value, None, where)
            elif key == "queue_limit":
                settings[key] = walker.value(v.as_count, value, None, where)
            elif key == "log_format":
                settings[key] = walker.value(v.one_of(LogFormat), value, None, where)
            elif key == "overlap":
                overlap = walker.value(v.one_of(Overlap), value, None, where)
                if overlap is Overlap.REPLACE:
                    walker.problem(value, None, where, "use skip or queue (replace is a "
                                   "per-task policy: which task's run would it stop?)")
                settings[key] = overlap
            elif key in _DAEMON_CONVERTERS:
                settings[key] = walker.value(_DAEMON_CONVERTERS[key], value, None, where)
                if key == "socket_group" and settings[key] and not group_exists(
                        str(settings[key])):
                    walker.problem(value, None, where, f"no such group '{settings[key]}' on "
                                   "this host")
    timezone = settings.get("timezone")
    if timezone is None:
        timezone = _host_zone(walker, node or root)
    watch = settings.get("watch")
    return DaemonSettings(
        state_dir=str(settings["state_dir"]) if settings.get("state_dir") else None,
        timezone=str(timezone),
        watch=True if watch is None else bool(watch),
        max_running=cast(int, settings.get("max_running") or 0),
        overlap=cast(Overlap, settings.get("overlap") or Overlap.SKIP),
        queue_limit=cast(int, settings.get("queue_limit") or 100),
        log=replace(LogPolicy(), **cast("dict[str, Any]", settings.get("log") or {})),
        history=cast(HistoryPolicy, settings.get("history") or HistoryPolicy()),
        hooks=cast("tuple[tuple[HookEvent, HookAction], ...]", settings.get("hooks") or ()),
        socket_group=cast("str | None", settings.get("socket_group")),
        cluster=cast("ClusterSettings | None", settings.get("cluster")),
        http=_http_paths(walker, cast("HttpSettings | None", settings.get("http"))),
        cgroups=settings.get("cgroups") is not False,
        log_format=cast(LogFormat, settings.get("log_format") or LogFormat.TEXT),
    )


_DAEMON_CONVERTERS: dict[str, Callable[[yaml.Node], object]] = {
    "log": v.as_log_overrides, "history": v.as_history, "hooks": v.as_hooks,
    "socket_group": v.as_text, "cluster": v.as_cluster, "http": v.as_http,
}


def _http_paths(walker: _Walker, http: HttpSettings | None) -> HttpSettings | None:
    """Relative token files, like every path in the file, against the file's directory."""
    if http is None:
        return None
    token, viewer = http.token_file, http.viewer_token_file
    return replace(http, token_file=token and against(walker.base, token),
                   viewer_token_file=viewer and against(walker.base, viewer))


def _schedule_key(text: str, timezone: str, dst: DstPolicy | None = None) -> str:
    """Tasks share a Schedule when expression, zone and DST policy are all the same."""
    policy = "" if dst is None else dst.text
    return f"{text.strip()}\0{timezone}\0{policy}"


def _dst_of(schedule: Schedule) -> DstPolicy | None:
    inner = schedule.inner if isinstance(schedule, WindowedSchedule) else schedule
    return inner.dst if isinstance(inner, CronSchedule) else None


@dataclass
class ParseCache:
    """What a parse may reuse from the previous parse of the task file.

    `schedules`: expression and zone -> Schedule, shared by every task that uses them.
    `tasks`: a task's exact source text -> its TaskSpec, valid only while the daemon
    settings, host identity and privileges it was checked against (`context`) are the
    same, so a reload that edits a few tasks of a big file validates only those. Both are
    pruned to what the latest file uses.
    """

    schedules: dict[str, Schedule] = field(default_factory=dict)
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    context: tuple[object, ...] | None = None
    files: dict[str, ParseCache] = field(default_factory=dict)  # a drop-in dir's, by file

    def copy(self) -> ParseCache:
        return ParseCache(dict(self.schedules), dict(self.tasks), self.context,
                          {name: cache.copy() for name, cache in self.files.items()})


# A task's text means the same thing in another file unless an alias in it points at an
# anchor elsewhere, or a directive changes what its tags mean. Both are rare; a file that
# may hold either is validated in full. An anchor starts a node, so its `&` follows only a
# line's indentation, an indicator (`:`, `-`, `?`, `[`, `{`, `,`) or a tag, then blanks;
# the `&` of `a && b` in a command follows text and is no anchor. The test stays loose the
# safe way: `echo - &x` counts.
_MAY_REFER_OUTSIDE = re.compile(r"(?:^|[:?\[{,-]|![^\s]*[ \t])[ \t]*&|^%", re.MULTILINE)


def _may_refer_outside(text: str) -> bool:
    # `in` scans in C; the pattern, tried at every offset, takes 30 ms at 10,000 tasks.
    return ("&" in text or "%" in text) and _MAY_REFER_OUTSIDE.search(text) is not None


def _source_of(text: str, node: yaml.Node) -> str:
    return text[node.start_mark.index:node.end_mark.index]


def _reusable(spec: TaskSpec) -> bool:
    # An account's existence is checked at parse time and may change between parses.
    return spec.user is None and spec.group is None


def _declared_name(node: yaml.Node) -> str | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if (key_node.value == "name" and isinstance(value_node, yaml.ScalarNode)
                    and value_node.value):
                return str(value_node.value)
    return None


_ACCOUNT_KEYS = ("user", "group", "nice", "limits")  # what wraps the command in a tool


def _account_problems(task: _TaskInput, as_root: bool) -> list[tuple[yaml.Node, str, str]]:
    """Who a task may run as depends on who the daemon is: (node, field, message)."""
    if task.nodes.keys().isdisjoint(_ACCOUNT_KEYS):
        return []  # most tasks: nothing to check
    found = []
    for key, exists in (("user", account_exists), ("group", group_exists)):
        name = task.values.get(key)
        if not isinstance(name, str):
            continue
        if not as_root:
            found.append((task.nodes[key], key, f"running tasks as another {key} needs torchd "
                          f"to run as root (it runs as uid {os.geteuid()})"))
        elif not exists(name):
            found.append((task.nodes[key], key, f"no such {key} '{name}' on this host"))
    nice = task.values.get("nice")
    if isinstance(nice, int) and nice < 0 and not as_root:
        found.append((task.nodes["nice"], "nice", "a negative nice level needs torchd to run "
                      "as root"))
    wrapped = [key for key in _ACCOUNT_KEYS if key in task.nodes]
    missing = missing_tools() if wrapped else ()
    if missing:
        found.append((task.nodes[wrapped[0]], wrapped[0], f"needs {', '.join(missing)} "
                      "(util-linux, coreutils) on PATH"))
    return found


_TASK_CONVERTERS: dict[str, Callable[[yaml.Node], object]] = {
    "name": v.as_text, "schedule": v.as_text, "command": v.as_command, "type": v.as_text,
    "hosts": v.as_hosts, "max_running": v.as_integer, "env": v.as_env, "cwd": v.as_text,
    "enabled": v.as_boolean, "timezone": v.as_zone_name, "catchup": v.one_of(Catchup),
    "starting_deadline": v.as_duration, "overlap": v.one_of(Overlap),
    "queue_limit": v.as_count, "kill_grace": v.as_duration,
    "timeout": v.as_positive_duration, "retries": v.as_retries,
    "at": v.as_time_text, "start_at": v.as_time_text, "end_at": v.as_time_text,
    "jitter": v.as_duration, "user": v.as_text, "group": v.as_text, "umask": v.as_umask,
    "nice": v.as_nice, "limits": v.as_limits, "log": v.as_log_overrides, "hooks": v.as_hooks,
    "run_on": v.one_of(RunOn), "after": v.as_after, "http": v.as_http_call,
    "lint": as_lint,
    "dst": v.as_dst, "window": v.as_window,
}


# Task keys whose converted value is the TaskSpec field of the same name; `_task` sets the
# others (`schedule` is text here, a Schedule there) itself.
_SAME_NAME_FIELDS = (frozenset(TASK_KEYS) & {f.name for f in fields(TaskSpec)}) - {
    "name", "command", "schedule", "timezone", "log", "http", "dst", "window"}


def _task(walker: _Walker, node: yaml.Node, label: str, line: int, *, daemon: DaemonSettings,
          identity: HostIdentity | None, as_root: bool,
          schedules: dict[str, Schedule], used: set[str]) -> TaskSpec | None:
    before = len(walker.problems)
    values: dict[str, object] = {}
    nodes: dict[str, yaml.Node] = {}
    for key, _key_node, value in walker.mapping(node, label, None, TASK_KEYS):
        nodes[key] = value
        values[key] = walker.value(_TASK_CONVERTERS[key], value, label, key)
    if isinstance(cwd := values.get("cwd"), str):
        values["cwd"] = against(walker.base, cwd)
    if not isinstance(node, yaml.MappingNode):
        return None
    name = values.get("name")
    if "name" not in nodes:
        walker.problem(node, label, "name", "is required")
    elif isinstance(name, str) and (problem := name_problem(name)):
        walker.problem(nodes["name"], label, "name", problem)
    kind = TaskKind.CRON
    kind_text = values.get("type")
    if isinstance(kind_text, str):
        try:
            kind = TaskKind(kind_text)
        except ValueError:
            walker.problem(nodes["type"], label, "type",
                           f"'{kind_text}' is not a task type; use cron or daemon")
    _check_command_or_http(walker, node, label, nodes, kind)
    zone_name = str(values.get("timezone") or daemon.timezone)
    task_input = _TaskInput(node, label, values, nodes)
    schedule = _task_schedule(walker, task_input, kind=kind, zone_name=zone_name,
                              schedules=schedules, used=used)
    for problem_node, key, message in _account_problems(task_input, as_root):
        walker.problem(problem_node, label, key, message)
    if len(walker.problems) != before:
        return None
    # Every value passed its converter (the casts only restate their types), and each key
    # in `given` names the TaskSpec field it sets; a key not given keeps the default.
    given: dict[str, Any] = {key: value for key, value in values.items()
                             if key in _SAME_NAME_FIELDS}
    if "at" in nodes:  # a one-time task whose instant passed while the daemon was down runs
        given.setdefault("catchup", Catchup.LAST)
    window = _keep_window(walker, task_input, kind=kind, zone_name=zone_name)
    if len(walker.problems) != before:
        return None
    return new_task_spec(
        name=str(name),
        kind=kind,
        schedule=schedule,
        window=window,
        command=cast("tuple[str, ...]", values.get("command", ())),
        http=cast("HttpCall | None", values.get("http")),
        timezone=zone_name,
        log=(replace(daemon.log, **cast("dict[str, Any]", values["log"])) if "log" in values
             else daemon.log),
        for_this_host=identity is None or hosts_match(given.get("hosts", ()), identity),
        line=line,
        file=walker.file,
        key_lines=tuple((key, n.start_mark.line + 1) for key, n in nodes.items()),
        **given,
    )


# What an HTTP task has no use for: it runs no process (its timeout is http.timeout).
_PROCESS_KEYS = ("cwd", "user", "group", "umask", "nice", "limits", "timeout")


def _check_command_or_http(walker: _Walker, node: yaml.Node, label: str,
                           nodes: dict[str, yaml.Node], kind: TaskKind) -> None:
    """A task runs a command or makes an HTTP request: exactly one of the two."""
    if "http" not in nodes:
        if "command" not in nodes:
            walker.problem(node, label, "command", "is required")
        return
    if "command" in nodes:
        walker.problem(nodes["http"], label, "http", "give either command or http, not both")
    if kind is TaskKind.DAEMON:
        walker.problem(nodes["http"], label, "http", "a daemon task keeps a process running; "
                       "an HTTP task takes a schedule (type: cron)")
    for key in _PROCESS_KEYS:
        if key in nodes:
            hint = "; use http.timeout" if key == "timeout" else ""
            walker.problem(nodes[key], label, key, f"an HTTP task runs no process{hint}")


@dataclass(slots=True)  # not frozen: made once per task at load, and frozen costs 4x
class _TaskInput:
    node: yaml.Node
    label: str
    values: dict[str, object]  # converted values of the keys that passed
    nodes: dict[str, yaml.Node]  # every key given, to its value node


def _task_schedule(walker: _Walker, task: _TaskInput, *, kind: TaskKind, zone_name: str,
                   schedules: dict[str, Schedule], used: set[str]) -> Schedule | None:
    """The task's schedule from `schedule` or `at`, inside its start_at/end_at window."""
    node, label, values, nodes = task.node, task.label, task.values, task.nodes
    if kind is TaskKind.DAEMON:
        for key in ("schedule", "at", "start_at", "end_at", "jitter", "dst"):
            if key in nodes:
                walker.problem(nodes[key], label, key,
                               "a daemon task is kept running and takes no schedule")
        if "after" in nodes:
            walker.problem(nodes["after"], label, "after", "a daemon task is kept running "
                           "and is started by no other task")
        return None
    if "after" in nodes:  # fired by its upstreams' runs (core.workflow), not by a clock
        for key in ("schedule", "at", "start_at", "end_at", "jitter", "catchup",
                    "starting_deadline", "dst"):
            if key in nodes:
                walker.problem(nodes[key], label, key, "a task with 'after' is started by "
                               "its upstream tasks' runs and takes no schedule")
        return None
    if "schedule" in nodes and "at" in nodes:
        walker.problem(nodes["at"], label, "at",
                       "give either schedule (repeating) or at (once), not both")
        return None
    if "schedule" not in nodes and "at" not in nodes:
        walker.problem(node, label, "schedule",
                       "is required for a cron task (or 'at' for a one-time task)")
        return None
    schedule: Schedule | None = None
    at_text, schedule_text = values.get("at"), values.get("schedule")
    dst = cast("DstPolicy | None", values.get("dst"))
    if isinstance(at_text, str):
        schedule = AtSchedule(text=f"at {at_text}", instant=parse_instant(at_text, zone_name))
    elif isinstance(schedule_text, str) and schedule_text.strip().lower().startswith("@random"):
        schedule = _parse_or_report(walker, nodes["schedule"], label, schedule_text, zone_name)
    elif isinstance(schedule_text, str):  # shared by every task with the same expression
        cache_key = _schedule_key(schedule_text, zone_name, dst)
        used.add(cache_key)
        schedule = schedules.get(cache_key)
        if schedule is None:
            schedule = _parse_or_report(walker, nodes["schedule"], label, schedule_text,
                                        zone_name, dst=dst)
            if schedule is not None:
                schedules[cache_key] = schedule
    if dst is not None and schedule is not None and not isinstance(schedule, CronSchedule):
        walker.problem(nodes["dst"], label, "dst", f"applies to a cron expression; "
                       f"'{schedule.text}' does not follow the wall clock")
        return None
    bounds = [values.get(key) for key in ("start_at", "end_at")]
    if schedule is None or bounds == [None, None]:
        return schedule
    start, end = (parse_instant(b, zone_name) if isinstance(b, str) else None for b in bounds)
    if start is not None and end is not None and end <= start:
        walker.problem(nodes["end_at"], label, "end_at", "must be after start_at")
        return None
    return WindowedSchedule(inner=schedule, start=start, end=end)


def _keep_window(walker: _Walker, task: _TaskInput, *, kind: TaskKind,
                 zone_name: str) -> KeepWindow | None:
    """A daemon task's keep-alive window: its schedule read in the task's zone."""
    given = task.values.get("window")
    if "window" not in task.nodes or not isinstance(given, tuple):
        return None
    node = task.nodes["window"]
    if kind is not TaskKind.DAEMON:
        walker.problem(node, task.label, "window", "only a daemon task (type: daemon) is kept "
                       "alive inside a window; a cron task has its schedule")
        return None
    text, duration = cast("tuple[str, float]", given)
    try:
        schedule = parse_schedule(text, load_zone(zone_name))
    except ScheduleError as exc:
        walker.problem(node, task.label, "window", f"schedule: {exc}")
        return None
    if not isinstance(schedule, CronSchedule):
        walker.problem(node, task.label, "window", f"schedule: a window opens on a cron "
                       f"expression; '{schedule.text}' is not one")
        return None
    return KeepWindow(schedule=schedule, duration=duration)


def _parse_or_report(walker: _Walker, node: yaml.Node, label: str, text: str,
                     zone_name: str, *, dst: DstPolicy | None = None) -> Schedule | None:
    try:
        return parse_schedule(text, load_zone(zone_name), dst)
    except ScheduleError as exc:
        walker.problem(node, label, "schedule", str(exc))
        return None


def digest_of(data: bytes) -> str:
    """The config hash shown in status and log headers: sha256 of the file, 12 hex digits."""
    return hashlib.sha256(data).hexdigest()[:12]


def parse_config(data: bytes, file: str, *, identity: HostIdentity | None,
                 cache: ParseCache | None = None, as_root: bool | None = None,
                 daemon: DaemonSettings | None = None, graph: bool = True) -> Config:
    """Parse task-file bytes; raise ConfigError listing every problem.

    `cache` lets a reload reuse what the previous parse built (see ParseCache); it is
    updated only when the parse succeeds. `daemon`: the settings another file gave (a
    drop-in directory has one `daemon:`); then a `daemon:` section here is a problem.
    `graph`: check the workflow graph (`after:`); a drop-in directory checks it across
    its files instead.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigProblem(
            file, line, None, None,
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})")]) from None
    with _collector_paused():
        return _parse_text(text, data, file, identity=identity, cache=cache,
                           as_root=running_as_root() if as_root is None else as_root,
                           given_daemon=daemon, graph=graph)


def _moved(spec: TaskSpec, line: int) -> TaskSpec:
    """A task reused from the parse cache, at the line it has moved to."""
    after = spec.after
    if after is not None:
        after = replace(after, line=after.line + line - spec.line)
    return replace(spec, line=line, after=after)


def after_problems(tasks: list[TaskSpec]) -> list[ConfigProblem]:
    """The workflow graph's problems (core.workflow.graph_problems), each at its task's
    `after:` line."""
    found = graph_problems(tasks)
    if not found:
        return []
    specs = {task.name: task for task in tasks}
    problems = []
    for problem in found:
        spec = specs[problem.task]
        line = spec.after.line if spec.after is not None and spec.after.line else spec.line
        problems.append(ConfigProblem(spec.file, line, spec.name, "after", problem.message))
    return sorted(problems, key=lambda p: (p.file, p.line or 0))


def _parse_text(text: str, data: bytes, file: str, *, identity: HostIdentity | None,
                cache: ParseCache | None, as_root: bool,
                given_daemon: DaemonSettings | None, graph: bool) -> Config:
    root = _compose(text, file)
    if root is None:
        raise ConfigError([ConfigProblem(file, 1, None, None,
                                         "the file is empty; expected a 'tasks:' list")])
    walker = _Walker(file)
    sections = {key: value for key, _k, value in walker.mapping(root, None, None, TOP_KEYS)}
    if isinstance(root, yaml.MappingNode) and "tasks" not in sections:
        walker.problem(root, None, "tasks", "is required (a list of tasks)")
    if given_daemon is None:
        daemon = _daemon_settings(walker, sections.get("daemon"), root)
    else:
        daemon = given_daemon
        if "daemon" in sections:
            walker.problem(sections["daemon"], None, "daemon", "only one file of a drop-in "
                           "directory may have daemon settings (see README, Drop-in "
                           "directory)")
    context = (daemon, identity, as_root, walker.base)
    known: dict[str, TaskSpec] = {}
    if (cache is not None and cache.context == context
            and not _may_refer_outside(text)):
        known = cache.tasks
    tasks: list[TaskSpec] = []
    sources: dict[str, TaskSpec] = {}
    first_line: dict[str, int] = {}
    schedules: dict[str, Schedule] = dict(cache.schedules) if cache else {}
    used: set[str] = set()
    tasks_node = sections.get("tasks")
    if tasks_node is not None and not isinstance(tasks_node, yaml.SequenceNode):
        walker.problem(tasks_node, None, "tasks", f"expected a list, got {v.kind_of(tasks_node)}")
    elif tasks_node is not None:
        items = tasks_node.value
        for index, item in enumerate(items):
            name = _declared_name(item)
            line = v.line_of(item)
            if name is not None and name in first_line:
                walker.problem(item, name, "name",
                               f"duplicate task name (first defined at line {first_line[name]})")
            elif name is not None:
                first_line[name] = line
            source = _source_of(text, item) if cache is not None else ""
            spec = known.get(source)
            if spec is None:
                spec = _task(walker, item, name or f"#{index + 1}", line, daemon=daemon,
                             identity=identity, as_root=as_root, schedules=schedules,
                             used=used)
            else:
                if spec.line != line:
                    spec = _moved(spec, line)
                if spec.schedule is not None:
                    used.add(_schedule_key(spec.schedule.text, spec.timezone,
                                           _dst_of(spec.schedule)))
            if spec is not None:
                tasks.append(spec)
                if cache is not None and _reusable(spec):
                    sources[source] = spec
        _free_in_slices(items)
    if walker.problems:
        raise ConfigError(sorted(walker.problems, key=lambda p: p.line or 0))
    if graph and (problems := after_problems(tasks)):
        raise ConfigError(problems)
    if cache is not None:
        cache.schedules = {key: schedules[key] for key in used if key in schedules}
        cache.tasks = sources
        cache.context = context
    return Config(
        path=file,
        digest=digest_of(data),
        daemon=daemon,
        tasks=tuple(tasks),
    )


FREE_SLICE = 500  # task nodes freed in one step, without a chance for other threads to run


def _free_in_slices(items: list[object]) -> None:
    """Free the task nodes a slice at a time. Freed in one step at the end, 10,000 tasks'
    nodes hold the GIL about 17 ms (no bytecode runs while they are freed, so no other
    thread can take it), taken from the loop on a reload; between two slices, it can. They
    are freed after the walk, not each as it is walked: freed amid the walk, their memory
    is mixed with the new specs' and is not given back (77 MB resident at 10,000 tasks,
    against 51)."""
    for start in range(0, len(items), FREE_SLICE):
        items[start:start + FREE_SLICE] = [None] * min(FREE_SLICE, len(items) - start)


MAX_FILE_BYTES = 32 << 20  # about three times the 100,000-task benchmark file
LOOKUP_ATTEMPTS, LOOKUP_PAUSE = 3, 0.005
ROOT_ONLY = frozenset({0})


def _unsafe_for_root(path: Path, info: os.stat_result) -> str | None:
    """As cron does: a root daemon runs only a file that only root can change."""
    if info.st_mode & 0o022:
        return (f"torchd runs as root and the file is writable by group or others (mode "
                f"{info.st_mode & 0o777:04o}); refusing it: chmod go-w {path}")
    if info.st_uid != 0:
        return (f"torchd runs as root and the file is owned by uid {info.st_uid}, not root; "
                f"refusing it: chown root {path}")
    return None


def read_task_file(path: Path) -> tuple[bytes, Resolved]:
    """The task file's bytes, read once from a checked descriptor, and where its symlinks
    led. As root, every directory on the way to it must be root's and not writable by
    others, and the file too (see safefile); as any user, it must be a regular file of at
    most MAX_FILE_BYTES."""
    as_root = running_as_root()
    attempt = 1
    while True:
        try:
            resolved = resolve_trusted(path, ROOT_ONLY) if as_root else Resolved(path, ())
            data = read_regular(resolved.path, limit=MAX_FILE_BYTES, what="a task file",
                                check=partial(_unsafe_for_root, path) if as_root else None)
        except FileNotFoundError:
            # A lookup that races a rename over the path can miss it (Linux does not make
            # lookups atomic with rename): a file saved by rename is there a moment later.
            if attempt == LOOKUP_ATTEMPTS:
                raise
            attempt += 1
            time.sleep(LOOKUP_PAUSE)
        else:
            return data, resolved


def read_or_report(path: Path) -> bytes:
    """The task file's bytes (see read_task_file); ConfigError (never OSError) when it
    cannot be read."""
    try:
        return read_task_file(path)[0]
    except UnsafePathError as exc:
        raise ConfigError([ConfigProblem(str(path), None, None, None, str(exc))]) from None
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), None, None, None,
                                         f"cannot read: {exc.strerror}")]) from None


def load_file(path: str | Path, *, identity: HostIdentity | None,
              cache: ParseCache | None = None,
              daemon: DaemonSettings | None = None) -> Config:
    """Read and parse one task file; raise ConfigError (never OSError) when it cannot be
    used. See config.source for a drop-in directory."""
    return parse_config(read_or_report(Path(path)), str(path), identity=identity,
                        cache=cache, daemon=daemon)
