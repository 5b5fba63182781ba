"""Reads run in a pool of their own: at most READERS at once, the rest waiting, and the
default pool (the daemon's own work) free meanwhile."""

from __future__ import annotations

import asyncio
import threading

import pytest

from torchd.control.readpool import READERS, THREAD_NAME, in_read_pool

pytestmark = pytest.mark.asyncio


async def test_a_full_read_pool_queues_reads_and_leaves_the_default_pool_free() -> None:
    gate = threading.Event()
    lock = threading.Lock()
    running: list[str] = []  # the threads of the reads going on now
    most = 0

    def read(value: int) -> int:
        nonlocal most
        with lock:
            running.append(threading.current_thread().name)
            most = max(most, len(running))
        gate.wait(10)
        with lock:
            running.remove(threading.current_thread().name)
        return value

    reads = [asyncio.ensure_future(in_read_pool(read, i)) for i in range(3 * READERS)]
    async with asyncio.timeout(10):
        while len(running) < READERS:
            await asyncio.sleep(0.01)
    assert await asyncio.to_thread(lambda: "free") == "free"  # the daemon's own pool
    assert len(running) == READERS
    assert all(name.startswith(THREAD_NAME) for name in running)
    gate.set()
    assert await asyncio.gather(*reads) == list(range(3 * READERS))
    assert most == READERS
