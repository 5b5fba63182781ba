"""Running a task as another account, with a umask, a nice level and resource limits.

Applied by exec wrappers from util-linux and coreutils (`nice`, `prlimit`, `setpriv`) in
that order, so that the privileged steps happen before the account is switched. A
pre-exec hook in Python is not safe in a daemon with threads; these tools are on every
Debian-like system (util-linux and coreutils are essential packages).
"""

from __future__ import annotations

import pwd

from torchd.system.accounts import LIMITS


def wrap_command(command: tuple[str, ...], *, user: str | None, group: str | None,
                 nice: int | None, limits: tuple[tuple[str, int | None], ...],
                 parent_death: bool = False) -> tuple[str, ...]:
    """The argv that applies nice, then limits, then the account switch, then execs.
    `parent_death`: the command gets SIGTERM if the daemon dies (set last, since a change
    of account clears it)."""
    argv = ("setpriv", "--pdeathsig", "TERM", "--", *command) if parent_death else command
    if user is not None or group is not None:
        switch = ["setpriv"]
        if user is not None:
            switch += [f"--reuid={user}", "--init-groups"]
            primary = group or str(pwd.getpwnam(user).pw_gid)  # numeric: may have no name
            switch.append(f"--regid={primary}")
        else:
            switch += [f"--regid={group}", "--clear-groups"]
        argv = (*switch, "--", *argv)
    if limits:
        options = [f"--{LIMITS[name]}={_limit(value)}:{_limit(value)}" for name, value in limits]
        argv = ("prlimit", *options, "--", *argv)
    if nice is not None:
        argv = ("nice", "-n", str(nice), *argv)
    return argv


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)
