"""Host filters: does a task's `hosts` list name this machine? Pure; no I/O."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import partial

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
EXPECTED = ("expected an IP address (10.0.0.5), a CIDR network (10.0.0.0/24), a host name "
            "(web-1.example.com) or a glob (web-*)")
MAX_NAME, MAX_LABEL = 253, 63  # RFC 1035 and 1123
# RFC 1123 has no "_", but real host names (containers, Windows) carry one
_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9._-]")
_DIGITS_AND_DOTS = re.compile(r"[0-9.]+")  # an IPv4 address to resolvers, never a name
# A glob as fnmatch reads it, of what a host name holds: `*`, `?`, and `[...]` sets (`[!...]`
# is "none of"); `[` with no `]` after it fnmatch would take for itself, matching no host.
_GLOB = re.compile(r"(?:[A-Za-z0-9._-]|[*?]|\[!?[A-Za-z0-9._-]+\])+")


@dataclass(frozen=True, slots=True)
class HostIdentity:
    """Everything a host pattern can match on this machine."""

    hostnames: frozenset[str]  # lower-case short name and FQDN
    addresses: frozenset[IPAddress]


def check_pattern(pattern: str) -> str | None:
    """None if the pattern is usable, else what is wrong with it and what is expected."""
    if not pattern:
        return f"empty host pattern; {EXPECTED}"
    if "/" in pattern:
        network = ipaddress.IPv6Network if ":" in pattern else ipaddress.IPv4Network
        return _address_problem(pattern, partial(network, strict=False), "CIDR network")
    if ":" in pattern:
        return _address_problem(pattern, ipaddress.IPv6Address, "IPv6 address")
    if _DIGITS_AND_DOTS.fullmatch(pattern):
        return _address_problem(pattern, ipaddress.IPv4Address, "IPv4 address",
                                "; digits and dots alone make an address, not a host name")
    if any(c in pattern for c in "*?["):
        return _glob_problem(pattern)
    return _name_problem(pattern)


def _address_problem(pattern: str, parse: Callable[[str], object], what: str,
                     note: str = "") -> str | None:
    try:
        parse(pattern)
    except ValueError as exc:  # the library's reason: "Octet 999 (> 255) not permitted in ..."
        return f"'{pattern}' is not a valid {what}: {exc}{note}"
    return None


def _glob_problem(pattern: str) -> str | None:
    if _GLOB.fullmatch(pattern):
        return None
    opened = pattern.rfind("[")
    if opened >= 0 and "]" not in pattern[opened:]:
        return f"'{pattern}' is not a valid glob: its '[' has no closing ']'"
    return (f"'{pattern}' is not a valid glob: expected letters, digits, '-', '_' and '.' "
            "with '*', '?' and sets such as [0-9] or [!a]")


def _name_problem(name: str) -> str | None:
    """RFC 1123 (and '_'): labels of letters, digits, '-' and '_', no '-' at either end of
    a label."""
    if len(name) > MAX_NAME:
        return (f"'{name[:20]}...' is not a valid host name: it has {len(name)} characters; "
                f"at most {MAX_NAME}")
    if bad := _NOT_IN_NAMES.search(name):
        return (f"'{name}' is not a valid host name: {bad.group()!r} is not allowed; expected "
                "letters, digits, '-', '_' and '.'")
    for label in name.split("."):
        if not label:
            return (f"'{name}' is not a valid host name: it has an empty label (a '.' at "
                    "an end, or '..')")
        if len(label) > MAX_LABEL:
            return (f"'{name}' is not a valid host name: a label has {len(label)} characters; "
                    f"at most {MAX_LABEL}")
        if label.startswith("-") or label.endswith("-"):
            return f"'{name}' is not a valid host name: '{label}' starts or ends with '-'"
    return None


def pattern_matches(pattern: str, identity: HostIdentity) -> bool:
    if "/" in pattern:
        network = ipaddress.ip_network(pattern, strict=False)
        return any(addr.version == network.version and addr in network
                   for addr in identity.addresses)
    try:
        address = ipaddress.ip_address(pattern)
    except ValueError:
        lowered = pattern.lower()
        return any(fnmatchcase(name, lowered) for name in identity.hostnames)
    return address in identity.addresses


def hosts_match(patterns: tuple[str, ...], identity: HostIdentity) -> bool:
    """An empty list means every host."""
    return not patterns or any(pattern_matches(p, identity) for p in patterns)
