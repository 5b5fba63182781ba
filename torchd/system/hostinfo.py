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
