"""The environment systemd's notify protocol is read from (sd_watchdog_enabled's rules)."""

from __future__ import annotations

import os

import pytest

from torchd.daemon.sdnotify import Notifier, watchdog_interval

ME = 4242


@pytest.mark.parametrize(("environ", "seconds"), [
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(ME)}, 30.0),
    ({"WATCHDOG_USEC": "500000"}, 0.5),  # no WATCHDOG_PID: whoever reads it is watched
    ({}, None),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # inherited from a parent
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "30s"}, None),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"}, None),
], ids=["own-pid", "no-pid", "absent", "other-pid", "zero", "negative", "not-a-number",
        "pid-not-a-number"])
def test_watchdog_interval(environ: dict[str, str], seconds: float | None) -> None:
    assert watchdog_interval(environ, ME) == seconds


def test_the_notify_variables_are_taken_out_of_the_environment() -> None:
    """So that the runs and hooks, which inherit the environment, do not get them."""
    environ = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "2000000",
               "WATCHDOG_PID": str(os.getpid()), "PATH": "/usr/bin"}
    notifier = Notifier.from_environment(environ)
    assert (notifier.address, notifier.watchdog) == ("/run/systemd/notify", 2.0)
    assert environ == {"PATH": "/usr/bin"}


def test_no_watchdog_without_a_socket_to_ping() -> None:
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "2000000"})
    assert (notifier.address, notifier.watchdog) == (None, None)
    assert notifier.send("READY=1") is False
