"""The daily plan's arithmetic (core.timeline) and the cluster rules the Hosts screen
shows: the majority config, and the address a host advertises."""

from __future__ import annotations

import ipaddress
from zoneinfo import ZoneInfo

import pytest

from torchd.cluster.coordinator import majority
from torchd.core.schedule.cronexpr import EverySchedule, parse_schedule
from torchd.core.timeline import SLOT_CAP, Slots, count_fires
from torchd.system.hostinfo import http_url, reachable_host

DAY = 86400.0
START = 1_800_000_000.0  # a whole multiple of 300 s: slot 0 starts here


def test_slots_count_from_their_origin() -> None:
    slots = Slots(START, 300)
    assert [slots.index(START + d) for d in (-0.5, 0, 299.9, 300)] == [-1, 0, 0, 1]
    assert slots.start(2) == START + 600


def test_fires_are_counted_in_their_slots() -> None:
    """Every 10 minutes over a day: one fire in every other 5-minute slot."""
    schedule = parse_schedule("0 */10 * * * *", ZoneInfo("UTC"))
    found = count_fires(schedule, START, START + DAY, Slots(START, 300))
    assert found.counts == {slot: 1 for slot in range(0, 288, 2)}
    assert found.full == set()
    assert found.first == START


def test_a_dense_slot_stops_counting_at_the_cap() -> None:
    """A per-second task costs the cap per slot, not one step per second."""
    schedule = parse_schedule("* * * * * *", ZoneInfo("UTC"))
    found = count_fires(schedule, START, START + 3600, Slots(START, 300))
    assert found.counts == {slot: SLOT_CAP for slot in range(12)}
    assert found.full == set(range(12))


def test_fires_closer_than_the_longest_run_are_overlaps() -> None:
    schedule = EverySchedule(text="@every 2m", interval=120.0)
    slots = Slots(START, 300)
    assert count_fires(schedule, START, START + 900, slots, longest=60).overlaps == set()
    late = count_fires(schedule, START, START + 900, slots, longest=150)
    assert late.overlaps == {slots.index(t) for t in late_fires(START, 900, 120)[1:]}


def late_fires(start: float, window: float, every: float) -> list[float]:
    return [start + every * k for k in range(1, int(window // every) + 1)
            if start + every * k < start + window]


@pytest.mark.parametrize(("hashes", "own", "common"), [
    pytest.param(["a", "a", "b"], "b", "a", id="most"),
    pytest.param(["a", "b"], "b", "b", id="tie-to-own"),
    pytest.param(["a", "b", "c", "c", "b"], "a", "b", id="tie-smallest"),
    pytest.param([], "a", "a", id="none"),
])
def test_the_majority_config(hashes: list[str | None], own: str, common: str) -> None:
    assert majority(hashes, own) == common


ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "127.0.0.1", "::1", "10.1.2.3", "fe80::1", "2a00:1450:4001::5", "93.184.216.34"))


@pytest.mark.parametrize(("bind", "advertised"), [
    pytest.param("10.1.2.3", "10.1.2.3", id="given"),
    pytest.param("0.0.0.0", "93.184.216.34", id="any-ipv4-global-first"),  # noqa: S104
    pytest.param("::", "93.184.216.34", id="any-ipv4-before-ipv6"),
])
def test_the_address_a_host_advertises(bind: str, advertised: str) -> None:
    assert reachable_host(bind, ADDRESSES) == advertised


def test_an_ipv6_url_has_brackets() -> None:
    assert http_url("2001:db8::5", 8427) == "http://[2001:db8::5]:8427/"
    assert http_url("10.1.2.3", 8427) == "http://10.1.2.3:8427/"
