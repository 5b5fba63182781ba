"""Durations, host matching, the reload diff, the control protocol and the timetable."""

from __future__ import annotations

import ipaddress

import pytest

from torchd.config.loader import parse_config
from torchd.control.protocol import ErrorCode, ProtocolError, decode_request
from torchd.control.verbs import VERBS
from torchd.core.durations import parse_duration
from torchd.core.errors import DurationError
from torchd.core.hostmatch import HostIdentity, check_pattern, hosts_match
from torchd.core.reloadplan import AFTER_FIRE, ReloadPlan, apply_delay, plan
from torchd.engine.timetable import (
    PRECISE_WINDOW,
    PREPARE_FROM,
    PREPARE_WINDOW,
    PREPARE_WINDOW_MAX,
    wake_window,
)


@pytest.mark.parametrize(("value", "seconds"), [
    (30, 30.0), (1.5, 1.5), ("90", 90.0), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0),
    ("2d", 172800.0), ("250ms", 0.25),
])
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "5x", "m5", "1h 30m", -1, True, None, "1.h"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(value)


IDENTITY = HostIdentity(
    hostnames=frozenset({"web-3", "web-3.example.internal"}),
    addresses=frozenset({ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"),
                         ipaddress.ip_address("10.1.2.3")}),
)


@pytest.mark.parametrize(("patterns", "expected"), [
    ((), True),
    (("127.0.0.1",), True),
    (("203.0.113.7",), False),
    (("10.1.0.0/16",), True),
    (("10.2.0.0/16",), False),
    (("::1",), True),
    (("::/0",), True),
    (("web-*",), True),
    (("WEB-3",), True),
    (("db-*",), False),
    (("db-*", "10.1.2.3"), True),
])
def test_hosts_match(patterns: tuple[str, ...], expected: bool) -> None:
    assert hosts_match(patterns, IDENTITY) is expected


@pytest.mark.parametrize(("pattern", "problem"), [
    pytest.param("10.0.0.0/33", "'10.0.0.0/33' is not a valid CIDR network: '33' is not a "
                 "valid netmask", id="prefix-33"),
    pytest.param("fe80::/129", "'fe80::/129' is not a valid CIDR network: '129' is not a valid "
                 "netmask", id="prefix-129"),
    pytest.param("fe80::zz", "'fe80::zz' is not a valid IPv6 address: Only hex digits "
                 "permitted in 'zz' in 'fe80::zz'", id="ipv6"),
    pytest.param("999.1.1.1", "'999.1.1.1' is not a valid IPv4 address: Octet 999 (> 255) not "
                 "permitted in '999.1.1.1'; digits and dots alone make an address, not a host "
                 "name", id="octet"),
    pytest.param("10.1.2", "'10.1.2' is not a valid IPv4 address: Expected 4 octets in "
                 "'10.1.2'; digits and dots alone make an address, not a host name",
                 id="three-octets"),
    pytest.param("web-[", "'web-[' is not a valid glob: its '[' has no closing ']'",
                 id="open-bracket"),
    pytest.param("web-*!", "'web-*!' is not a valid glob: expected letters, digits, '-', '_' "
                 "and '.' with '*', '?' and sets such as [0-9] or [!a]", id="glob-character"),
    pytest.param("web 1", "'web 1' is not a valid host name: ' ' is not allowed; expected "
                 "letters, digits, '-', '_' and '.'", id="space"),
    pytest.param("web-.example", "'web-.example' is not a valid host name: 'web-' starts or "
                 "ends with '-'", id="hyphen-end"),
    pytest.param("web..example", "'web..example' is not a valid host name: it has an empty "
                 "label (a '.' at an end, or '..')", id="empty-label"),
    pytest.param("a" * 64, f"'{'a' * 64}' is not a valid host name: a label has 64 "
                 "characters; at most 63", id="long-label"),
    pytest.param("a." * 127, f"'{'a.' * 10}...' is not a valid host name: it has 254 "
                 "characters; at most 253", id="long-name"),
    pytest.param("", "empty host pattern; expected an IP address (10.0.0.5), a CIDR network "
                 "(10.0.0.0/24), a host name (web-1.example.com) or a glob (web-*)", id="empty"),
])
def test_bad_host_patterns(pattern: str, problem: str) -> None:
    assert check_pattern(pattern) == problem


@pytest.mark.parametrize("pattern", [
    "10.0.0.5", "10.0.0.1/24", "::1", "fe80::/10", "web-1", "WEB-1.Example.com", "3com.example",
    "localhost", "web_1", "*_web-?", "web-*", "web-?", "web-[0-9]", "web-[!a-c]*", "*", "a" * 63,
])
def test_good_host_patterns(pattern: str) -> None:
    assert check_pattern(pattern) is None


def _config(body: str) -> object:
    return parse_config(body.encode(), "t.yaml", identity=None)


def test_reload_plan_by_name() -> None:
    old = parse_config(b"""tasks:
  - {name: same, schedule: "@hourly", command: "true"}
  - {name: edited, schedule: "@hourly", command: "true"}
  - {name: gone, schedule: "@hourly", command: "true"}
""", "t.yaml", identity=None)
    new = parse_config(b"""tasks:
  - {name: new, schedule: "@daily", command: "true"}
  # a comment moves lines; the line is not part of a task's identity
  - {name: same, schedule: "@hourly", command: "true"}
  - {name: edited, schedule: "@daily", command: "false"}
""", "t.yaml", identity=None)
    diff = plan(old, new)
    assert diff.added == ("new",)
    assert diff.changed == ("edited",)
    assert diff.removed == ("gone",)
    assert diff.unchanged == ("same",)
    assert diff.changed_fields == {"edited": ("schedule", "command")}
    assert diff.as_dict() == {"added": ["new"], "changed": {"edited": ["schedule", "command"]},
                              "removed": ["gone"], "unchanged": 1}


def test_first_load_is_all_added() -> None:
    config = parse_config(b'tasks: [{name: a, schedule: "@hourly", command: "true"}]\n',
                          "t.yaml", identity=None)
    assert plan(None, config).added == ("a",)


def _edited(count: int) -> ReloadPlan:
    return ReloadPlan(added=(), changed=tuple(f"t{i}" for i in range(count)), removed=(),
                      unchanged=(), changed_fields={})


@pytest.mark.parametrize(("changed", "next_due", "delay"), [
    (10, 100.01, 0.0),  # a small apply never waits
    (10_000, None, 0.0),  # nothing due
    (10_000, 100.5, 0.0),  # 10,000 changed: about 0.1 s, and the fire is 0.5 s away
    (10_000, 100.05, 0.05 + AFTER_FIRE),  # the fire would fall in the apply: after it
    (10_000, 99.9, AFTER_FIRE),  # due and not yet started: just after it
])
def test_a_big_apply_waits_for_a_fire_due_within_it(changed: int, next_due: float | None,
                                                    delay: float) -> None:
    assert apply_delay(_edited(changed), next_due, now=100.0) == pytest.approx(delay)


@pytest.mark.parametrize(("line", "code"), [
    (b"not json\n", ErrorCode.BAD_REQUEST),
    (b"[1,2]\n", ErrorCode.BAD_REQUEST),
    (b'{"cmd": "format-disk"}\n', ErrorCode.BAD_REQUEST),
    (b'{"nocmd": 1}\n', ErrorCode.BAD_REQUEST),
    (b"\xff\xfe\n", ErrorCode.BAD_REQUEST),
])
def test_malformed_requests(line: bytes, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_request(line, VERBS)
    assert caught.value.code is code


def test_good_request() -> None:
    assert decode_request(b'{"cmd": "status"}\n', VERBS) == {"cmd": "status"}


def test_fast_constructor_makes_the_frozen_class_itself() -> None:
    from dataclasses import FrozenInstanceError, replace

    from torchd.core.model import TaskKind, TaskSpec, new_task_spec

    fast = new_task_spec(name="a", kind=TaskKind.CRON, schedule=None, command=("x",), line=3)
    usual = TaskSpec(name="a", kind=TaskKind.CRON, schedule=None, command=("x",), line=9)
    assert type(fast) is TaskSpec
    assert fast == usual  # `line` is not compared
    assert hash(fast) == hash(usual)
    assert (fast.max_running, fast.line) == (1, 3)  # defaults filled, values kept
    assert replace(fast, name="b").name == "b"
    with pytest.raises(FrozenInstanceError):
        fast.name = "b"  # type: ignore[misc]


def test_fast_constructor_refuses_what_its_twin_cannot_stand_for() -> None:
    from dataclasses import dataclass

    from torchd.core.fastinit import fast_constructor

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Checked:
        value: int

        def __post_init__(self) -> None:
            assert self.value > 0

    @dataclass(frozen=True, slots=True)
    class Positional:
        value: int

    for cls in (Checked, Positional):
        with pytest.raises(TypeError, match="needs slots"):
            fast_constructor(cls)


def test_the_loop_wakes_earlier_for_bigger_batches_within_bounds() -> None:
    assert wake_window(1) == PRECISE_WINDOW
    assert wake_window(PREPARE_FROM) == PREPARE_WINDOW
    windows = [wake_window(count) for count in range(PREPARE_FROM, 5000, 50)]
    assert windows == sorted(windows)
    assert wake_window(1000) > PREPARE_WINDOW
    assert max(windows) == PREPARE_WINDOW_MAX
