"""Read this machine's host identity: every interface address (loopback too) and names."""

from __future__ import annotations

import ipaddress
import os
import socket

import psutil

from torchd.core.hostmatch import HostIdentity, IPAddress


def local_identity() -> HostIdentity:
    addresses: set[IPAddress] = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            text = entry.address.split("%", 1)[0]  # drop an IPv6 zone such as %eth0
            try:
                addresses.add(ipaddress.ip_address(text))
            except ValueError:
                continue
    short = socket.gethostname().lower()
    names = {short, short.split(".", 1)[0]}
    return HostIdentity(hostnames=frozenset(names), addresses=frozenset(addresses))


def host_id(configured: str | None = None) -> str:
    """How this host names itself in history, hooks and the cluster: `daemon.cluster.host_id`,
    else $TORCHD_HOST_ID, else the host name."""
    return configured or os.environ.get("TORCHD_HOST_ID") or socket.gethostname()


def reachable_host(bind: str, addresses: frozenset[IPAddress] | None = None) -> str:
    """The host part by which others reach a listener bound to `bind`: `bind` itself,
    unless it is a wildcard (0.0.0.0, ::, empty), then one of this host's addresses
    (`addresses`, default every interface's): global before private before loopback,
    IPv4 first for 0.0.0.0; the host name if it has none at all."""
    if bind not in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 - recognised, not bound
        return bind
    found = local_identity().addresses if addresses is None else addresses
    wanted = [a for a in found if a.version == 4 or bind != "0.0.0.0"  # noqa: S104
              if not a.is_link_local]

    def rank(address: IPAddress) -> tuple[int, int, str]:
        place = 2 if address.is_loopback else 1 if address.is_private else 0
        return (place, address.version, str(address))

    if not wanted:
        return socket.gethostname()
    return str(min(wanted, key=rank))


def http_url(host: str, port: int) -> str:
    """http://HOST:PORT/ (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
