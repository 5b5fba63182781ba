"""Accounts, groups and tools of this host that a task file may name: looked up by the
config check and by the run-as wrappers (process/runas.py), so that loading a task file
needs no process code."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from collections.abc import Callable
from functools import cache

# task-file name -> prlimit option
LIMITS = {"nofile": "nofile", "cpu": "cpu", "memory": "as", "nproc": "nproc", "core": "core",
          "fsize": "fsize", "stack": "stack"}
TOOLS = ("nice", "prlimit", "setpriv")


def running_as_root() -> bool:
    return os.geteuid() == 0


@cache
def missing_tools() -> tuple[str, ...]:
    """Looked up once per process: a file may name these for thousands of tasks."""
    return tuple(tool for tool in TOOLS if shutil.which(tool) is None)


def account_exists(name: str) -> bool:
    return _known(pwd.getpwnam, name)


def group_exists(name: str) -> bool:
    return _known(grp.getgrnam, name)


def _known(lookup: Callable[[str], object], name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


def account_env(user: str) -> dict[str, str]:
    """HOME, USER, LOGNAME and SHELL of the account a run switches to, as cron sets them."""
    entry = pwd.getpwnam(user)
    return {"HOME": entry.pw_dir, "USER": user, "LOGNAME": user,
            "SHELL": entry.pw_shell or "/bin/sh"}
