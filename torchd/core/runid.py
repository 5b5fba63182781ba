"""Run ids (also of history rows for fires that did not run, and of hook runs): 12 hex
digits, 48 random bits, unique in practice, not secrets."""

from __future__ import annotations

import os
import random

# Seeded from os.urandom once. A run id only has to be unique, and drawing it without a
# getrandom() system call keeps it off the cost of every fire. A forked child seeds its
# own, as the random module does for its shared instance: parent and child never draw the
# same ids (today only the detaching child draws any).
_ids = random.Random()  # noqa: S311 - uniqueness, not secrecy
os.register_at_fork(after_in_child=_ids.seed)


def new_run_id() -> str:
    return f"{_ids.getrandbits(48):012x}"
