"""The threads that serve what operators read (history, logs, plans, fires, metrics).

A pool of its own rather than asyncio's default one: a burst of reads over HTTP or the
socket (a dashboard left open by many, a script polling history) then queues behind
itself, and never delays the daemon's own work in the default pool (a reload's parse,
the cluster's host figures, the history's stop)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

READERS = 4  # reads at once; more wait their turn
THREAD_NAME = "torchd-reads"

_P = ParamSpec("_P")
_T = TypeVar("_T")
_pool: ThreadPoolExecutor | None = None


async def in_read_pool(read: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """`read(*args, **kwargs)` in one of the READERS threads."""
    global _pool  # noqa: PLW0603 - one pool per process, made at the first read
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix=THREAD_NAME)
    return await asyncio.get_running_loop().run_in_executor(
        _pool, functools.partial(read, *args, **kwargs))
