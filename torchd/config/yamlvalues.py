"""YAML nodes into typed values, strictly: each converter takes one node and returns its
value or raises Invalid naming what was expected and what was found. YAML 1.1's implicit
types are refused where text is expected (`no`, `0700`, `12:30:00`)."""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any, TypeVar

import yaml

from torchd.core.durations import parse_duration
from torchd.core.envsubst import reference_problem
from torchd.core.errors import DurationError
from torchd.core.hostmatch import check_pattern
from torchd.core.model import (
    After,
    ClusterSettings,
    HistoryPolicy,
    HookAction,
    HookEvent,
    HttpCall,
    HttpSettings,
    On,
    RetryPolicy,
    Webhook,
    name_problem,
)
from torchd.core.schedule.cronexpr import DstPolicy, Repeated, Skipped
from torchd.core.schedule.zones import ZoneError, load_zone
from torchd.system.accounts import LIMITS

T = TypeVar("T")

TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL, TIMESTAMP = (
    TAG + kind for kind in ("str", "int", "float", "bool", "null", "timestamp"))
TAG_NAMES = {
    "str": "text", "int": "a number", "float": "a number", "bool": "a boolean",
    "null": "empty (null)", "timestamp": "a date", "seq": "a list", "map": "a mapping",
}
RETRY_KEYS = ("max", "delay", "backoff", "max_delay")
# Counts, sizes and limits end in SQLite, prlimit and the kernel: 64-bit signed at most.
INT_MAX = (1 << 63) - 1
SHOWN_CHARS = 40  # of a value quoted in a message


class Invalid(Exception):
    """A value is wrong: its node and what is wrong, or (`every`) the problems of every bad
    item of a list or mapping. The walker turns each into a ConfigProblem."""

    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.problems: tuple[tuple[yaml.Node, str], ...] = ((node, message),)

    @classmethod
    def every(cls, problems: list[tuple[yaml.Node, str]]) -> Invalid:
        exc = cls(*problems[0])
        exc.problems = tuple(problems)
        return exc


class _Items:
    """The problems of a list's or a mapping's items, kept while the other items are
    converted, so that every bad item is reported, not only the first; `check` raises them
    all."""

    def __init__(self) -> None:
        self.found: list[tuple[yaml.Node, str]] = []

    def refuse(self, node: yaml.Node, message: str) -> None:
        self.found.append((node, message))

    def take(self, convert: Callable[[yaml.Node], T], node: yaml.Node, fallback: T,
             label: str | None = None) -> T:
        """convert(node); or, keeping its problems (each after "label: "), `fallback`."""
        try:
            return convert(node)
        except Invalid as exc:
            prefix = f"{label}: " if label else ""
            self.found.extend((at, prefix + message) for at, message in exc.problems)
            return fallback

    def check(self) -> None:
        if self.found:  # in the file's order
            raise Invalid.every(sorted(self.found, key=lambda found: found[0].start_mark.index))


class _Fields(_Items):
    """A small mapping of known keys, read key by key: unknown and repeated keys, missing
    required ones and bad values are all kept as problems."""

    def __init__(self, node: yaml.MappingNode, known: tuple[str, ...], what: str, *,
                 suggest: bool = False) -> None:
        super().__init__()
        self.node = node
        self.nodes: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = self.take(as_text, key_node, "")
            if not key:
                continue
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1) if suggest else []
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.refuse(key_node, f"unknown {what} '{key}'{hint}; known: "
                                      f"{', '.join(known)}")
            elif key in self.nodes:
                self.refuse(key_node, f"duplicate {what} '{key}'")
            else:
                self.nodes[key] = value_node

    def require(self, key: str, message: str) -> None:
        if key not in self.nodes:
            self.refuse(self.node, message)

    def converted(self, converters: dict[str, Callable[[yaml.Node], object]]) -> dict[str, Any]:
        """The given keys' values, converted by `converters` (a bad value's problems under its
        key); Invalid with every problem found."""
        values = {key: self.take(converters[key], value_node, None, key)
                  for key, value_node in self.nodes.items()}
        self.check()
        return values


def kind_of(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node.tag.removeprefix(TAG)
    described = TAG_NAMES.get(tag, tag)
    return f"{described} ({shown(node.value)})" if tag not in ("str", "null") else described


def shown(text: str) -> str:
    """A value as a message quotes it: cut short if long (a 5,000-digit number helps no one)."""
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[:SHOWN_CHARS - 3]}... ({len(text)} characters)"


def detached(text: str) -> str:
    """A copy of `text` in memory of its own.

    The parser allocates each scalar's text between its node and marks; a kept original
    pins that memory after the node tree is freed (about 27 MB more resident at 10,000
    tasks). A copy made after composing sits with the rest of the kept config instead.
    """
    return text[:1] + text[1:]


def as_text(node: yaml.Node, *, allow_empty: bool = False) -> str:
    if isinstance(node, yaml.ScalarNode) and node.tag == STR:
        if not allow_empty and not node.value.strip():
            raise Invalid(node, "must not be empty")
        if "\0" in node.value:  # no argument, variable, path or name can carry one
            raise Invalid(node, "must not contain a NUL character (\\0)")
        return detached(node.value)
    hint = ""
    if isinstance(node, yaml.ScalarNode) and node.tag != NULL:
        hint = f"; quote it if you mean the text: '{node.value}'"
    raise Invalid(node, f"expected text, got {kind_of(node)}{hint}")


def as_integer(node: yaml.Node, *, minimum: int = 0) -> int:
    if (isinstance(node, yaml.ScalarNode) and node.tag == INT
            and re.fullmatch(r"[0-9]|[1-9][0-9]*", node.value)):
        # Bounded before int(): Python refuses to convert more than 4,300 digits.
        if len(node.value) > len(str(INT_MAX)) or int(node.value) > INT_MAX:
            raise Invalid(node, f"must be at most {INT_MAX}, got {shown(node.value)}")
        value = int(node.value)
        if value < minimum:
            raise Invalid(node, f"must be at least {minimum}, got {value}")
        return value
    if (isinstance(node, yaml.ScalarNode) and node.tag == INT
            and re.fullmatch(r"-[0-9]+", node.value)):
        least = "0 or more" if minimum == 0 else f"at least {minimum}"
        raise Invalid(node, f"must be {least}, got {node.value}")
    raise Invalid(node, f"expected a whole number written in decimal, got {kind_of(node)}")


def as_boolean(node: yaml.Node) -> bool:
    if isinstance(node, yaml.ScalarNode) and node.tag == BOOL:
        lowered = str(node.value).lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        raise Invalid(node, f"write true or false, not '{node.value}'")
    raise Invalid(node, f"expected true or false, got {kind_of(node)}")


def _each_item(node: yaml.Node, convert: Callable[[yaml.Node], T], fallback: T) -> tuple[T, ...]:
    """A list's items, converted; Invalid naming every bad item by its number."""
    if not isinstance(node, yaml.SequenceNode):
        raise Invalid(node, f"expected a list, got {kind_of(node)}")
    try:  # every item good, as nearly always: without the bookkeeping (10,000 tasks' lists)
        return tuple([convert(item) for item in node.value])
    except Invalid:
        pass
    items = _Items()
    values = tuple(items.take(convert, item, fallback, f"item {number}")
                   for number, item in enumerate(node.value, 1))
    items.check()
    return values


def line_of(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def as_command(node: yaml.Node) -> tuple[str, ...]:
    if isinstance(node, yaml.SequenceNode):
        argv = _each_item(node, as_text, "")
        if not argv:
            raise Invalid(node, "must not be an empty list")
        return argv
    return ("/bin/sh", "-c", as_text(node))


def _texts_by_name(node: yaml.Node, name_of: Callable[[yaml.Node], str], noun: str,
                   shape: str) -> dict[str, str]:
    """A mapping of names (`name_of` checks each) to text, maybe empty; Invalid naming every
    bad name, repeated name and bad value. `shape` shows the mapping in a message."""
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, f"expected a mapping of {shape}, got {kind_of(node)}")
    try:  # every name and text good, as nearly always: without the bookkeeping
        texts = {name_of(key): as_text(value, allow_empty=True) for key, value in node.value}
    except Invalid:
        texts = {}
    if len(texts) == len(node.value):  # and no name repeated
        return texts
    items = _Items()
    texts = {}
    for key_node, value_node in node.value:
        name = items.take(name_of, key_node, "")
        text = items.take(partial(as_text, allow_empty=True), value_node, "", name)
        if name in texts:
            items.refuse(key_node, f"duplicate {noun} '{name}'")
        elif name:
            texts[name] = text
    items.check()
    return texts


def _as_variable_name(node: yaml.Node) -> str:
    name = as_text(node)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise Invalid(node, f"'{name}' is not a valid environment variable name")
    return name


def as_env(node: yaml.Node) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(_texts_by_name(node, _as_variable_name, "variable",
                                       "NAME: text").items()))


def _as_host_pattern(node: yaml.Node) -> str:
    pattern = as_text(node, allow_empty=True)  # check_pattern says what an empty one lacks
    if problem := check_pattern(pattern):
        raise Invalid(node, problem)
    return pattern


def as_hosts(node: yaml.Node) -> tuple[str, ...]:
    if isinstance(node, yaml.ScalarNode) and node.tag == NULL:
        return ()
    return _each_item(node, _as_host_pattern, "")


def as_zone_name(node: yaml.Node) -> str:
    """A zone as TZ names one (see zones.load_zone): an IANA name such as 'Europe/London',
    a TZif file's absolute path, or a POSIX TZ rule."""
    name = as_text(node)
    try:
        load_zone(name)
    except ZoneError as exc:
        raise Invalid(node, f"unknown time zone '{shown(name)}': {exc.why}") from None
    return name


# YAML 1.1 numbers, told apart as PyYAML's resolver tells them (plain scalars), checked
# again here because an explicit `!!int` or `!!float` tag puts any text under those tags.
_INFINITY = re.compile(r"[-+]?\.(?:inf|Inf|INF)")
_NAN = re.compile(r"\.(?:nan|NaN|NAN)")
_BASE_60 = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
_BASED = (  # pattern, prefix, base, what YAML 1.1 calls it
    (re.compile(r"[-+]?0b[01_]+"), "0b", 2, "a binary"),
    (re.compile(r"[-+]?0x[0-9a-fA-F_]+"), "0x", 16, "a hexadecimal"),
    (re.compile(r"[-+]?0[0-7_]+"), "0", 8, "an octal"),
)
_DECIMAL = re.compile(
    r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?")
_SHOWN_DIGITS = 15  # what YAML reads from a longer number is not worth a message's room


def _number(node: yaml.Node, noun: str, *, duration: bool = False) -> float | None:
    """The value of a YAML number written in decimal (`1_000` is 1000, as YAML reads it),
    or None when the node is no number (text, a list...). Besides decimal, YAML 1.1 reads
    base-60 (`1:30` is 90), hexadecimal, octal (`017` is 15) and binary numbers, infinity
    and NaN: refused, saying what YAML made of them. `noun` names the value in messages
    ("a duration"); `duration` suggests units instead of plain decimal."""
    if not (isinstance(node, yaml.ScalarNode) and node.tag in (INT, FLOAT)):
        return None
    text = str(node.value)
    if _INFINITY.fullmatch(text):
        raise Invalid(node, f"{noun} must be finite, got {text}")
    if _NAN.fullmatch(text):
        raise Invalid(node, f"{noun} must be a finite number, got {text} (YAML 1.1 reads it "
                            "as not-a-number)")
    if _BASE_60.fullmatch(text):
        raise Invalid(node, _base_60_problem(text, noun, duration=duration))
    for pattern, prefix, base, name in _BASED:
        if pattern.fullmatch(text):
            digits = text.lstrip("+-").removeprefix(prefix).replace("_", "")
            read = (f" ({'-' if text.startswith('-') else ''}{int(digits, base)})"
                    if digits and len(digits) <= _SHOWN_DIGITS else "")
            raise Invalid(node, f"YAML 1.1 reads {shown(text)} as {name} number{read}; write "
                                "it in decimal")
    if not _DECIMAL.fullmatch(text):  # only an explicit tag gets here: `!!int x`
        raise Invalid(node, f"'{shown(text)}' is tagged {node.tag.replace(TAG, '!!')} but is "
                            "not a number")
    value = float(text.replace("_", ""))  # float() takes any number of digits
    if not math.isfinite(value):
        raise Invalid(node, f"{noun} must be finite, got {shown(text)} (too large)")
    return value + 0.0  # -0 is 0


def _base_60_problem(text: str, noun: str, *, duration: bool) -> str:
    """What to say about `1:30` or `12:30:00`, which YAML 1.1 reads as base-60 numbers."""
    value: float | None = None
    if len(text) > _SHOWN_DIGITS:
        read = f"YAML 1.1 reads {shown(text)} as a base-60 number"
    else:
        value = 0.0
        for part in text.lstrip("+-").replace("_", "").split(":"):
            value = value * 60 + float(part)
        value = -value if text.startswith("-") else value
        read = f"YAML 1.1 reads {text} as a base-60 number ({_plain(value)})"
    if not duration:
        return f"{read}; write {noun} in decimal"
    if value is not None and value < 0:
        return f"{read}; {noun} cannot be negative"
    example = _duration_text(value) if value is not None else "1h30m"
    return f"{read}; write {noun} such as {example}"


def _plain(value: float) -> str:
    """45000.0 as 45000, 90.5 as 90.5 (to the microsecond, as durations are read)."""
    return str(int(value)) if value.is_integer() else f"{value:.6f}".rstrip("0")


def _duration_text(seconds: float) -> str:
    """Seconds as the task file writes a duration: 45000 -> '12h30m', 90.5 -> '1m30.5s'."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{int(count)}{unit}")
    if seconds or not parts:
        parts.append(f"{_plain(seconds)}s")
    return "".join(parts)


def as_duration(node: yaml.Node) -> float:
    """Seconds: a number, or text such as '30s', '5m', '1h30m'."""
    seconds = _number(node, "a duration", duration=True)
    if seconds is not None:
        if seconds < 0:
            raise Invalid(node, f"a duration cannot be negative, got {shown(node.value)}")
        return seconds
    if not (isinstance(node, yaml.ScalarNode) and node.tag == STR):
        raise Invalid(node, f"expected a duration such as 30s or 5m, got {kind_of(node)}")
    try:
        seconds = parse_duration(node.value)
    except DurationError:
        raise Invalid(node, str(DurationError(shown(node.value)))) from None
    if not math.isfinite(seconds):  # '1000...0d': each part is a float
        raise Invalid(node, f"a duration must be finite, got '{shown(node.value)}' (too large)")
    return seconds


def one_of(enum: type[StrEnum]) -> Callable[[yaml.Node], StrEnum]:
    def convert(node: yaml.Node) -> StrEnum:
        text = as_text(node)
        try:
            return enum(text)
        except ValueError:
            raise Invalid(node, f"'{text}' is not one of: "
                                 f"{', '.join(m.value for m in enum)}") from None
    return convert


def as_count(node: yaml.Node) -> int:
    return as_integer(node, minimum=1)


def as_positive_duration(node: yaml.Node) -> float:
    value = as_duration(node)
    if value <= 0:
        raise Invalid(node, "must be more than 0")
    return value


def as_retries(node: yaml.Node) -> RetryPolicy:
    """`retries: 3`, or a mapping of max, delay, backoff, max_delay."""
    if isinstance(node, yaml.ScalarNode):
        return RetryPolicy(max=as_integer(node))
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, f"expected a number of retries or a mapping of "
                             f"{', '.join(RETRY_KEYS)}, got {kind_of(node)}")
    fields = _Fields(node, RETRY_KEYS, "key")
    fields.require("max", "'max' (how many retries) is required")
    return RetryPolicy(**fields.converted({"max": as_integer, "delay": as_duration,
                                           "backoff": as_growth, "max_delay": as_duration}))


AFTER_KEYS = ("tasks", "on", "within")


def _as_task_name(node: yaml.Node) -> str:
    name = as_text(node)
    if (problem := name_problem(name)) is not None:
        raise Invalid(node, problem)
    return name


def _as_upstreams(node: yaml.Node) -> tuple[str, ...]:
    """One task's name, or a list of them (at least one, each once)."""
    if isinstance(node, yaml.ScalarNode):
        return (_as_task_name(node),)
    names = _each_item(node, _as_task_name, "")
    if not names:
        raise Invalid(node, "expected at least one task name")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise Invalid(node, f"names {', '.join(twice)} more than once")
    return names


def as_after(node: yaml.Node) -> After:
    """`after: extract`, `after: [transform, load]`, or a mapping of tasks, on (success,
    failure, always) and within (a duration)."""
    line = line_of(node)
    if not isinstance(node, yaml.MappingNode):
        return After(tasks=_as_upstreams(node), line=line)
    # YAML 1.1 reads a plain `on` as a boolean: as a key here it is the word.
    node = yaml.MappingNode(node.tag, [
        (yaml.ScalarNode(STR, key.value, key.start_mark, key.end_mark)
         if isinstance(key, yaml.ScalarNode) and key.tag == BOOL and key.value == "on"
         else key, value) for key, value in node.value], node.start_mark, node.end_mark)
    fields = _Fields(node, AFTER_KEYS, "key")
    fields.require("tasks", "'tasks' (the upstream task or tasks) is required")
    values = fields.converted({"tasks": _as_upstreams, "on": one_of(On),
                               "within": as_positive_duration})
    return After(tasks=values["tasks"], on=values.get("on") or On.SUCCESS,
                 within=values.get("within"), line=line)


def as_time_text(node: yaml.Node) -> str:
    """An ISO 8601 time, quoted or not (YAML reads an unquoted one as a timestamp)."""
    if isinstance(node, yaml.ScalarNode) and node.tag in (STR, TIMESTAMP):
        text = str(node.value).strip()
        try:
            datetime.fromisoformat(text)
        except ValueError:
            raise Invalid(node, f"'{text}' is not an ISO 8601 time such as "
                                 "2026-12-01T10:00:00+08:00") from None
        return text
    raise Invalid(node, f"expected an ISO 8601 time such as 2026-12-01T10:00:00+08:00, "
                         f"got {kind_of(node)}")


def as_umask(node: yaml.Node) -> int:
    """Octal with a leading 0: `umask: "0027"`, or unquoted 0027 (YAML's octal)."""
    text = str(node.value) if isinstance(node, yaml.ScalarNode) else ""
    if (isinstance(node, yaml.ScalarNode) and node.tag in (STR, INT)
            and re.fullmatch(r"0[0-7]{1,3}", text)):
        return int(text, 8)
    raise Invalid(node, f"expected an octal mask with a leading 0 such as '0027', got "
                         f"{kind_of(node)}")


def as_nice(node: yaml.Node) -> int:
    if (isinstance(node, yaml.ScalarNode) and node.tag == INT
            and re.fullmatch(r"[-+]?(0|[1-9][0-9]?)", node.value)
            and -20 <= int(node.value) <= 19):
        return int(node.value)
    raise Invalid(node, f"expected a nice level from -20 to 19, got {kind_of(node)}")


def as_limits(node: yaml.Node) -> tuple[tuple[str, int | None], ...]:
    """A mapping of limit name to a whole number or 'unlimited'."""
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, f"expected a mapping such as {{nofile: 1024, cpu: 60}}, got "
                             f"{kind_of(node)}")
    fields = _Fields(node, tuple(LIMITS), "limit")
    return tuple(sorted(fields.converted(dict.fromkeys(LIMITS, _as_limit)).items()))


def _as_limit(node: yaml.Node) -> int | None:
    if isinstance(node, yaml.ScalarNode) and node.value == "unlimited":
        return None
    if isinstance(node, yaml.ScalarNode) and node.tag == INT:
        return as_integer(node)
    raise Invalid(node, f"expected a whole number or 'unlimited', got {kind_of(node)}")


def as_growth(node: yaml.Node) -> float:
    value = _number(node, "a backoff")
    if value is not None and value >= 1:
        return value
    raise Invalid(node, f"expected a number of at least 1, got {kind_of(node)}")


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
               "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}
LOG_KEYS = ("max_bytes", "keep", "split", "max_run_bytes", "stdout", "stdout_rate", "timestamps")
HISTORY_KEYS = ("enabled", "keep_days", "keep_runs_per_task")
HOOK_KEYS = ("command", "webhook", "timeout")
WEBHOOK_KEYS = ("url", "headers", "timeout")


def as_size(node: yaml.Node) -> int:
    """Bytes: a whole number, or text such as '512KB', '10MB', '1GB' (powers of 1024)."""
    if isinstance(node, yaml.ScalarNode) and node.tag in (INT, STR):
        match = re.fullmatch(r"\s*([0-9]+)\s*([A-Za-z]*)\s*", str(node.value))
        if match and match.group(2).lower() in _SIZE_UNITS:
            digits, unit = match.group(1).lstrip("0"), _SIZE_UNITS[match.group(2).lower()]
            # Bounded before int(): Python refuses to convert more than 4,300 digits.
            size = int(digits or "0") * unit if len(digits) <= len(str(INT_MAX)) else INT_MAX + 1
            if size > INT_MAX:
                raise Invalid(node, f"must be at most {INT_MAX} bytes, got "
                                    f"{shown(node.value)}")
            if size > 0:
                return size
    raise Invalid(node, f"expected a size above 0 such as 10MB, 512KB or 1048576, got "
                         f"{kind_of(node)}")


def as_log_overrides(node: yaml.Node) -> dict[str, object]:
    """The keys a `log:` mapping gives (the rest come from the daemon's defaults)."""
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, f"expected a mapping of {', '.join(LOG_KEYS)}, got {kind_of(node)}")
    return _Fields(node, LOG_KEYS, "key").converted({
        "max_bytes": as_size, "keep": as_integer, "split": as_boolean, "max_run_bytes": as_size,
        "stdout": as_boolean, "stdout_rate": as_count, "timestamps": as_boolean})


def as_history(node: yaml.Node) -> HistoryPolicy:
    if isinstance(node, yaml.ScalarNode) and node.tag == BOOL:
        return HistoryPolicy(enabled=as_boolean(node))
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, f"expected true, false or a mapping of {', '.join(HISTORY_KEYS)}, "
                             f"got {kind_of(node)}")
    return HistoryPolicy(**_Fields(node, HISTORY_KEYS, "key").converted({
        "enabled": as_boolean, "keep_days": as_positive_duration_days,
        "keep_runs_per_task": as_count}))


def as_positive_duration_days(node: yaml.Node) -> float:
    value = _number(node, "a number of days")
    if value is not None and value > 0:
        return value
    raise Invalid(node, f"expected a number of days above 0, got {kind_of(node)}")


def _as_webhook(node: yaml.Node) -> Webhook:
    if isinstance(node, yaml.ScalarNode):
        return Webhook(url=_as_url(node))
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, f"expected a URL or a mapping of {', '.join(WEBHOOK_KEYS)}, got "
                             f"{kind_of(node)}")
    fields = _Fields(node, WEBHOOK_KEYS, "key")
    fields.require("url", "'url' is required")
    return Webhook(**fields.converted({"url": _as_url, "headers": as_headers,
                                       "timeout": as_positive_duration}))


def _as_url(node: yaml.Node) -> str:
    url = as_text(node)
    if not re.match(r"https?://[^/\s]+", url):
        raise Invalid(node, f"'{url}' is not an http:// or https:// URL")
    return url


def as_headers(node: yaml.Node) -> tuple[tuple[str, str], ...]:
    """HTTP headers: a mapping of text to text, in the file's order."""
    return tuple(_texts_by_name(node, as_text, "header", "Name: value").items())


def _as_hook(node: yaml.Node) -> HookAction:
    """A command (text or list), or a mapping of command, webhook and timeout."""
    if not isinstance(node, yaml.MappingNode):
        return HookAction(command=as_command(node))
    fields = _Fields(node, HOOK_KEYS, "key")
    if "command" not in fields.nodes and "webhook" not in fields.nodes:
        fields.refuse(node, "give a command, a webhook, or both")
    return HookAction(**fields.converted({"command": as_command, "webhook": _as_webhook,
                                          "timeout": as_positive_duration}))


def as_hooks(node: yaml.Node) -> tuple[tuple[HookEvent, HookAction], ...]:
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, f"expected a mapping of {', '.join(e.value for e in HookEvent)}, "
                             f"got {kind_of(node)}")
    events = tuple(e.value for e in HookEvent)
    actions = _Fields(node, events, "hook").converted(dict.fromkeys(events, _as_hook))
    return tuple((HookEvent(key), action) for key, action in actions.items())


CLUSTER_KEYS = ("redis", "name", "host_id", "max_load", "lease_ttl")


def _as_redis_url(node: yaml.Node) -> str:
    url = as_text(node)
    if not re.match(r"(rediss?|unix)://", url):
        raise Invalid(node, f"'{url}' is not a Redis URL such as redis://10.0.0.5:6379/0")
    return url


def _as_key_part(node: yaml.Node) -> str:
    text = as_text(node)
    if problem := name_problem(text):
        raise Invalid(node, problem)
    return text


def _as_load(node: yaml.Node) -> float:
    value = _number(node, "a load")
    if value is not None and value >= 0:
        return value
    raise Invalid(node, f"expected a load of 0 or more (1.0 = every core busy), got "
                         f"{kind_of(node)}")


def _as_lease_ttl(node: yaml.Node) -> float:
    value = as_duration(node)
    if value < 3:
        raise Invalid(node, "must be at least 3s (the lease is renewed every third of it, "
                            "and a renewal may take 1 s)")
    return value


def as_cluster(node: yaml.Node) -> ClusterSettings:
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, f"expected a mapping of {', '.join(CLUSTER_KEYS)}, got "
                             f"{kind_of(node)}")
    fields = _Fields(node, CLUSTER_KEYS, "key")
    fields.require("redis", "'redis' (the Redis URL) is required")
    return ClusterSettings(**fields.converted({
        "redis": _as_redis_url, "name": _as_key_part, "host_id": _as_key_part,
        "max_load": _as_load, "lease_ttl": _as_lease_ttl}))


HTTP_KEYS = ("listen", "read_only", "metrics_auth", "token_file", "viewer_token_file")


def _as_listen(node: yaml.Node) -> dict[str, Any]:
    """`HOST:PORT` (`[::1]:8427` for IPv6), or a port alone for 127.0.0.1; port 0 takes
    any free port (`torchd status` and the cluster heartbeat tell which)."""
    text = str(node.value) if isinstance(node, yaml.ScalarNode) else ""
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise Invalid(node, "expected HOST:PORT such as 127.0.0.1:8427 (a port from 1 to "
                            f"65535, or 0 for any free one), got '{shown(text)}'")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise Invalid(node, f"'{host}' is not an IP address (or localhost): the listener "
                                "binds to an address, not a name") from None
    return {"host": host, "port": int(port)}


def as_http(node: yaml.Node) -> HttpSettings:
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, f"expected a mapping of {', '.join(HTTP_KEYS)}, got "
                             f"{kind_of(node)}")
    fields = _Fields(node, HTTP_KEYS, "key")
    fields.require("listen", "'listen' (HOST:PORT, such as 127.0.0.1:8427) is required")
    values = fields.converted({
        "listen": _as_listen, "read_only": as_boolean, "metrics_auth": as_boolean,
        "token_file": as_text, "viewer_token_file": as_text})
    listen = values.pop("listen", None) or {}
    return HttpSettings(**listen, **values)


HTTP_CALL_KEYS = ("url", "method", "headers", "body", "timeout", "expect_status",
                  "expect_body", "tls_verify", "max_log_bytes")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)


def _substitutable(node: yaml.Node, *, allow_empty: bool = False) -> str:
    """Text that may hold `${NAME}` references (replaced at run time)."""
    text = as_text(node, allow_empty=allow_empty)
    if problem := reference_problem(text):
        raise Invalid(node, problem)
    return text


def _as_request_url(node: yaml.Node) -> str:
    url = _substitutable(node)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or not url.startswith(
            f"{parts.scheme}://"):
        raise Invalid(node, f"'{shown(url)}' is not an http:// or https:// URL")
    if any(c.isspace() for c in url):
        raise Invalid(node, "a URL must not contain spaces (write them as %20)")
    return url


def _as_method(node: yaml.Node) -> str:
    method = as_text(node)
    if method not in HTTP_METHODS:
        hint = f" (did you mean {method.upper()}?)" if method.upper() in HTTP_METHODS else ""
        raise Invalid(node, f"'{shown(method)}' is not one of: {', '.join(HTTP_METHODS)}{hint}")
    return method


def _as_header_name(node: yaml.Node) -> str:
    name = as_text(node)
    if not _HEADER_NAME.fullmatch(name):
        raise Invalid(node, f"'{shown(name)}' is not a header name (letters, digits and "
                            "!#$%&'*+.^_`|~-)")
    return name


def _as_request_headers(node: yaml.Node) -> tuple[tuple[str, str], ...]:
    headers = tuple(_texts_by_name(node, _as_header_name, "header", "Name: value").items())
    items = _Items()
    for key_node, value_node in node.value if isinstance(node, yaml.MappingNode) else ():
        value = str(value_node.value)
        if "\r" in value or "\n" in value:
            items.refuse(value_node, f"{key_node.value}: a header value must be one line")
        elif problem := reference_problem(value):
            items.refuse(value_node, f"{key_node.value}: {problem}")
    items.check()
    return headers


def _as_status(node: yaml.Node) -> tuple[int, int]:
    """A status code (`204`) or an inclusive range (`200-299`), from 100 to 599."""
    text = str(node.value) if isinstance(node, yaml.ScalarNode) else ""
    match = re.fullmatch(r"\s*([0-9]{3})\s*(?:-\s*([0-9]{3})\s*)?", text)
    if not (isinstance(node, yaml.ScalarNode) and node.tag in (INT, STR) and match):
        raise Invalid(node, f"expected a status code such as 200 or a range such as "
                            f"200-299, got {kind_of(node)}")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if not 100 <= low <= high <= 599:
        raise Invalid(node, f"'{text}' is not a status code or a rising range from 100 to 599")
    return low, high


def _as_statuses(node: yaml.Node) -> tuple[tuple[int, int], ...]:
    if isinstance(node, yaml.ScalarNode):
        return (_as_status(node),)
    statuses = _each_item(node, _as_status, (0, 0))
    if not statuses:
        raise Invalid(node, "must not be an empty list")
    return statuses


def _as_regex(node: yaml.Node) -> re.Pattern[str]:
    text = as_text(node)
    try:
        return re.compile(text)
    except re.error as exc:
        raise Invalid(node, f"not a valid regular expression: {exc}") from None


def as_http_call(node: yaml.Node) -> HttpCall:
    """A task's `http:`: a URL alone, or a mapping of HTTP_CALL_KEYS."""
    if isinstance(node, yaml.ScalarNode) and node.tag == STR:
        url = _Items()
        call = HttpCall(url=url.take(_as_request_url, node, "", "url"))
        url.check()
        return call
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, f"expected a URL or a mapping of {', '.join(HTTP_CALL_KEYS)}, "
                             f"got {kind_of(node)}")
    fields = _Fields(node, HTTP_CALL_KEYS, "key", suggest=True)
    fields.require("url", "'url' is required")
    return HttpCall(**fields.converted({
        "url": _as_request_url, "method": _as_method, "headers": _as_request_headers,
        "body": partial(_substitutable, allow_empty=True), "timeout": as_positive_duration,
        "expect_status": _as_statuses, "expect_body": _as_regex, "tls_verify": as_boolean,
        "max_log_bytes": as_size}))


DST_KEYS = ("skipped", "repeated")


def as_dst(node: yaml.Node) -> DstPolicy:
    """`dst: {skipped: run-after|skip, repeated: first|both}`; a key not given keeps
    today's rule for it (run-after, first)."""
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, f"expected a mapping of {', '.join(DST_KEYS)}, got {kind_of(node)}")
    fields = _Fields(node, DST_KEYS, "key", suggest=True)
    return DstPolicy(**fields.converted({"skipped": one_of(Skipped),
                                         "repeated": one_of(Repeated)}))


WINDOW_KEYS = ("schedule", "for")


def as_window(node: yaml.Node) -> tuple[str, float]:
    """`window: {schedule: CRON, for: DURATION}`: (the schedule's text, seconds); the
    loader reads the schedule in the task's zone."""
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, f"expected a mapping of {', '.join(WINDOW_KEYS)}, got "
                            f"{kind_of(node)}")
    fields = _Fields(node, WINDOW_KEYS, "key", suggest=True)
    fields.require("schedule", "'schedule' (when the window opens) is required")
    fields.require("for", "'for' (how long the window stays open) is required")
    values = fields.converted({"schedule": as_text, "for": as_positive_duration})
    return values["schedule"], values["for"]
