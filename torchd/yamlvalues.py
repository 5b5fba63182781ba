"""YAML nodes into typed values, strictly: each converter takes one node and returns its
value or raises Invalid naming what was expected and what was found. YAML 1.1's implicit
types are refused where text is expected (`no`, `0700`, `12:30:00`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from torchd.durations import parse_duration
from torchd.errors import DurationError
from torchd.hostmatch import check_pattern
from torchd.model import RetryPolicy
from torchd.runas import LIMITS

T = TypeVar("T")

TAG = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL, TIMESTAMP = (
    TAG + kind for kind in ("str", "int", "float", "bool", "null", "timestamp"))
TAG_NAMES = {
    "str": "text", "int": "a number", "float": "a number", "bool": "a boolean",
    "null": "empty (null)", "timestamp": "a date", "seq": "a list", "map": "a mapping",
}
RETRY_KEYS = ("max", "delay", "backoff", "max_delay")


class Invalid(Exception):
    """One field's value is wrong; caught by the walker and turned into a ConfigProblem."""

    def __init__(self, node: yaml.Node, message: str) -> None:
        super().__init__(message)
        self.node = node


def kind_of(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node.tag.removeprefix(TAG)
    described = TAG_NAMES.get(tag, tag)
    return f"{described} ({node.value})" if tag not in ("str", "null") else described


def as_text(node: yaml.Node, *, allow_empty: bool = False) -> str:
    if isinstance(node, yaml.ScalarNode) and node.tag == STR:
        if not allow_empty and not node.value.strip():
            raise Invalid(node, "must not be empty")
        return str(node.value)
    hint = ""
    if isinstance(node, yaml.ScalarNode) and node.tag != NULL:
        hint = f"; quote it if you mean the text: '{node.value}'"
    raise Invalid(node, f"expected text, got {kind_of(node)}{hint}")


def as_integer(node: yaml.Node, *, minimum: int = 0) -> int:
    if (isinstance(node, yaml.ScalarNode) and node.tag == INT
            and re.fullmatch(r"[0-9]|[1-9][0-9]*", node.value)):
        value = int(node.value)
        if value < minimum:
            raise Invalid(node, f"must be at least {minimum}, got {value}")
        return value
    raise Invalid(node, f"expected a whole number written in decimal, got {kind_of(node)}")


def as_boolean(node: yaml.Node) -> bool:
    if isinstance(node, yaml.ScalarNode) and node.tag == BOOL:
        lowered = str(node.value).lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        raise Invalid(node, f"write true or false, not '{node.value}'")
    raise Invalid(node, f"expected true or false, got {kind_of(node)}")


def as_text_list(node: yaml.Node) -> tuple[str, ...]:
    if not isinstance(node, yaml.SequenceNode):
        raise Invalid(node, f"expected a list, got {kind_of(node)}")
    return tuple(as_text(item) for item in node.value)


def line_of(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def as_command(node: yaml.Node) -> tuple[str, ...]:
    if isinstance(node, yaml.SequenceNode):
        argv = as_text_list(node)
        if not argv:
            raise Invalid(node, "must not be an empty list")
        return argv
    return ("/bin/sh", "-c", as_text(node))


def as_env(node: yaml.Node) -> tuple[tuple[str, str], ...]:
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, f"expected a mapping of NAME: text, got {kind_of(node)}")
    pairs: dict[str, str] = {}
    for key_node, value_node in node.value:
        key = as_text(key_node)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise Invalid(key_node, f"'{key}' is not a valid environment variable name")
        if key in pairs:
            raise Invalid(key_node, f"duplicate variable '{key}'")
        pairs[key] = as_text(value_node, allow_empty=True)
    return tuple(sorted(pairs.items()))


def as_hosts(node: yaml.Node) -> tuple[str, ...]:
    if isinstance(node, yaml.ScalarNode) and node.tag == NULL:
        return ()
    if not isinstance(node, yaml.SequenceNode):
        raise Invalid(node, f"expected a list, got {kind_of(node)}")
    patterns = []
    for item in node.value:
        pattern = as_text(item)
        problem = check_pattern(pattern)
        if problem is not None:
            raise Invalid(item, problem)
        patterns.append(pattern)
    return tuple(patterns)


def as_zone_name(node: yaml.Node) -> str:
    name = as_text(node)
    if zone(name) is None:
        raise Invalid(node, f"unknown time zone '{name}' (use an IANA name such as "
                             "'Europe/London' or 'UTC')")
    return name


def as_duration(node: yaml.Node) -> float:
    """Seconds: a number, or text such as '30s', '5m', '1h30m'."""
    if isinstance(node, yaml.ScalarNode) and node.tag in (INT, FLOAT):
        raw: object = float(node.value)
    elif isinstance(node, yaml.ScalarNode) and node.tag == STR:
        raw = node.value
    else:
        raise Invalid(node, f"expected a duration such as 30s or 5m, got {kind_of(node)}")
    try:
        return parse_duration(raw)
    except DurationError as exc:
        raise Invalid(node, str(exc)) from None


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
    fields = _keyed(node, RETRY_KEYS, "key")
    if "max" not in fields:
        raise Invalid(node, "'max' (how many retries) is required")

    def field_value(key: str, convert: Callable[[yaml.Node], T], default: T) -> T:
        if key not in fields:
            return default
        try:
            return convert(fields[key])
        except Invalid as exc:
            raise Invalid(exc.node, f"{key}: {exc}") from None

    return RetryPolicy(
        max=field_value("max", as_integer, 0),
        delay=field_value("delay", as_duration, 10.0),
        backoff=field_value("backoff", as_growth, 2.0),
        max_delay=field_value("max_delay", as_duration, 600.0),
    )


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


def instant(text: str, zone_name: str) -> float:
    """Epoch seconds of an ISO 8601 time; one without an offset is read in the zone."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone_name))
    return moment.timestamp()


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
    limits: dict[str, int | None] = {}
    for name, value_node in _keyed(node, tuple(LIMITS), "limit").items():
        if isinstance(value_node, yaml.ScalarNode) and value_node.value == "unlimited":
            limits[name] = None
            continue
        try:
            limits[name] = as_integer(value_node)
        except Invalid as exc:
            raise Invalid(value_node, f"{name}: {exc} or 'unlimited'") from None
    return tuple(sorted(limits.items()))


def _keyed(node: yaml.MappingNode, known: tuple[str, ...], what: str) -> dict[str, yaml.Node]:
    """A small mapping's value nodes by key, refusing unknown and repeated keys."""
    found: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        key = as_text(key_node)
        if key not in known:
            raise Invalid(key_node, f"unknown {what} '{key}'; known: {', '.join(known)}")
        if key in found:
            raise Invalid(key_node, f"duplicate {what} '{key}'")
        found[key] = value_node
    return found


def as_growth(node: yaml.Node) -> float:
    if (isinstance(node, yaml.ScalarNode) and node.tag in (INT, FLOAT)
            and float(node.value) >= 1):
        return float(node.value)
    raise Invalid(node, f"expected a number of at least 1, got {kind_of(node)}")
