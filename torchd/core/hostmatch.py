"""Host filters: does a task's `hosts` list name this machine? Pure; no I/O."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_HOSTNAME_GLOB = re.compile(r"^[A-Za-z0-9*?\[\]!_.-]+$")


@dataclass(frozen=True, slots=True)
class HostIdentity:
    """Everything a host pattern can match on this machine."""

    hostnames: frozenset[str]  # lower-case short name and FQDN
    addresses: frozenset[IPAddress]


def check_pattern(pattern: str) -> str | None:
    """None if the pattern is usable, else what is wrong with it."""
    if not pattern:
        return "empty host pattern"
    if "/" in pattern:
        try:
            ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            return f"'{pattern}' is not a valid CIDR range"
        return None
    try:
        ipaddress.ip_address(pattern)
    except ValueError:
        pass
    else:
        return None
    if ":" in pattern or not _HOSTNAME_GLOB.match(pattern):
        return f"'{pattern}' is not an IP address, CIDR range, hostname or hostname glob"
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
