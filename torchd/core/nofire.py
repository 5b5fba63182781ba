"""Why a task has no next fire: the one order of reasons that `list`, `next`, `why` and
the dashboard share (each writes the reason in its own words). Pure."""

from __future__ import annotations

from enum import Enum


class NoFire(Enum):
    """A reason a task has no next fire, most telling first."""

    DISABLED = "disabled"
    NOT_HERE = "not for this host"
    PAUSED = "paused"
    DAEMON = "daemon task"  # kept running, not scheduled
    AT_START = "at start only"  # @reboot
    AFTER = "after"  # fired by its upstreams
    ENDED = "no more fires"  # `at` done, `end_at` passed, or no instant left


def inactive(*, enabled: bool, for_this_host: bool) -> NoFire | None:
    """Why the task does not run here at all; None when it does."""
    if not enabled:
        return NoFire.DISABLED
    return None if for_this_host else NoFire.NOT_HERE


def unscheduled(*, daemon: bool, at_start: bool, after: bool) -> NoFire | None:
    """Why the task has no schedule of instants; None when it has one."""
    if daemon:
        return NoFire.DAEMON
    if at_start:
        return NoFire.AT_START
    return NoFire.AFTER if after else None


def no_fire(*, enabled: bool, for_this_host: bool, paused: bool, daemon: bool,
            at_start: bool, after: bool, has_next: bool) -> NoFire | None:
    """Why the task has no next fire; None when it has one."""
    return (inactive(enabled=enabled, for_this_host=for_this_host)
            or (NoFire.PAUSED if paused else None)
            or unscheduled(daemon=daemon, at_start=at_start, after=after)
            or (None if has_next else NoFire.ENDED))
