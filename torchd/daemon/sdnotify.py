"""systemd's notify protocol (sd_notify(3)): readiness, reloads, a status line and the
watchdog, each one datagram to $NOTIFY_SOCKET; nothing is sent where it is not set."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping, MutableMapping

PROTOCOL_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds within which systemd wants WATCHDOG=1, read as sd_watchdog_enabled(3) reads
    them: WATCHDOG_USEC a positive number of µs and WATCHDOG_PID, where set, this process
    (a child that inherited both is not the process watched). None: no watchdog."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
        watched = int(environ.get("WATCHDOG_PID", str(pid)))
    except ValueError:
        return None
    if usec <= 0 or watched != pid:
        return None
    return usec / 1_000_000


class Notifier:
    """What the daemon tells systemd. Made once at start; see from_environment."""

    def __init__(self, address: str | None, watchdog: float | None) -> None:
        self.address = address
        self.watchdog = watchdog

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str]) -> Notifier:
        """The protocol's variables, taken out of `environ` (sd_notify's
        unset_environment), so that the runs and hooks the daemon starts do not inherit
        them: they would notify the unit in torchd's name."""
        address = environ.get("NOTIFY_SOCKET") or None
        watchdog = watchdog_interval(environ, os.getpid()) if address else None
        for name in PROTOCOL_VARIABLES:
            environ.pop(name, None)
        return cls(address, watchdog)

    def send(self, *assignments: str) -> bool:
        """One datagram of NAME=VALUE lines; False if there is no socket or it refused."""
        if self.address is None:
            return False
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        try:  # out of descriptors too: the watchdog's next ping tries again
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(assignments).encode(), address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> None:
        """Serving: after the start, and after each reload whatever its outcome."""
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        """A reload begins. The time tells systemd (Type=notify-reload) that this reload
        began after the signal it sent, not before."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    async def keep_watchdog(self) -> None:
        """WATCHDOG=1 at half systemd's interval, until cancelled. Sent from the event
        loop, so that a loop that hangs stops the pings and systemd ends the daemon."""
        if self.watchdog is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog / 2)
