"""The one order of reasons a task has no next fire (core.nofire), shared by `list`,
`next`, `why` and the dashboard."""

from __future__ import annotations

from typing import Any

import pytest

from torchd.core.nofire import NoFire, no_fire

PLAIN: dict[str, bool] = {"enabled": True, "for_this_host": True, "paused": False,
                          "daemon": False, "at_start": False, "after": False,
                          "has_next": True}

# Each row: the facts that differ from a plain scheduled task, and the one reason given.
# Where several hold, the first in the order wins: disabled, not for this host, paused,
# daemon, @reboot, after upstreams, no more fires.
CASES = [
    ({}, None),
    ({"has_next": False}, NoFire.ENDED),
    ({"after": True, "has_next": False}, NoFire.AFTER),
    ({"at_start": True, "after": True, "has_next": False}, NoFire.AT_START),
    ({"daemon": True, "has_next": False}, NoFire.DAEMON),
    ({"paused": True, "daemon": True}, NoFire.PAUSED),
    ({"for_this_host": False, "paused": True}, NoFire.NOT_HERE),
    ({"enabled": False, "for_this_host": False, "paused": True}, NoFire.DISABLED),
]


@pytest.mark.parametrize(("given", "reason"), CASES,
                         ids=[str(r.value if r else "next") for _, r in CASES])
def test_the_first_reason_in_the_order_wins(given: dict[str, Any],
                                            reason: NoFire | None) -> None:
    assert no_fire(**{**PLAIN, **given}) is reason
