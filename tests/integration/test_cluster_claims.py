"""Claims and leases against a real redis-server, in-process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time

import pytest
import redis

from tests.helpers import RedisServer, wait_for
from torchd.cluster import coordinator
from torchd.cluster.coordinator import Cluster
from torchd.core.model import ClusterSettings


def _cluster(redis: RedisServer, host: str) -> Cluster:
    cluster = Cluster(ClusterSettings(redis=redis.url, name="it", lease_ttl=3.0), host_id=host,
                      describe=lambda: {"config_hash": "x"})
    cluster.load = 0.0  # no claim delay: the claims themselves are tested
    return cluster


def test_one_winner_per_fire_and_no_claim_behind_the_latest(redis_server: RedisServer) -> None:
    async def body() -> None:
        a, b = _cluster(redis_server, "a"), _cluster(redis_server, "b")
        first = await asyncio.gather(a.claim("job", 100.0), b.claim("job", 100.0))
        assert sorted(c.won for c in first) == [False, True]
        winner = next(c.holder for c in first if c.won)
        assert {c.holder for c in first} == {winner}
        again = await a.claim("job", 100.0)
        assert (again.won, again.holder) == (False, winner)
        assert (await b.claim("job", 101.0)).won
        # a host catching up an older fire that nobody claimed: a later one ran already
        late = await a.claim("job", 99.0)
        assert (late.won, late.holder, late.error) == (False, None, None)
        assert (await a.claim("other", 99.0)).won  # per task
        for cluster in (a, b):
            await cluster.close()

    asyncio.run(body())


class HangUpListener:
    """Where Redis was: accepts each connection and closes it at once, counting them, so a
    test sees whether a claim tried to reach Redis."""

    def __init__(self, port: int) -> None:
        self.accepted = 0
        self._server = socket.create_server(("127.0.0.1", port))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:  # closed
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        # close() alone does not wake a thread blocked in accept(): the socket would stay
        # listening on Redis's port until the next connection, and Redis could not bind it.
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self._thread.join(timeout=5)
        assert not self._thread.is_alive(), "the listener still holds the port"


def test_claims_fail_fast_while_redis_is_down(redis_server: RedisServer) -> None:
    """Redis gone: a claim fails with the reason, and the claims right after it fail at once,
    without trying Redis again, until the back-off has passed; once Redis answers and the
    back-off is over, claims win again."""
    async def body() -> None:
        cluster = _cluster(redis_server, "a")
        redis_server.stop()
        listener = HangUpListener(redis_server.port)
        try:
            down = await cluster.claim("job", 200.0)
            tried = listener.accepted
            assert tried >= 1
            assert not down.won
            assert down.error is not None
            assert down.error.startswith("Redis unavailable")
            assert (await cluster.claim("job", 201.0)).error == down.error  # backing off
            assert listener.accepted == tried  # not tried (the first back-off is 0.5 s)
        finally:
            listener.close()
        redis_server.start()
        deadline = asyncio.get_running_loop().time() + 10
        while not (await cluster.claim("job", 202.0)).won:  # once the back-off is over
            assert asyncio.get_running_loop().time() < deadline, "no claim won in 10 s"
            await asyncio.sleep(0.05)
        await cluster.close()

    asyncio.run(body())


# Holds the (single-threaded) server busy for ARGV[1] microseconds of its own clock.
BUSY_SCRIPT = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > tonumber(ARGV[1])
return 1
"""


def test_a_claim_whose_answer_came_too_late_is_still_run(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis busy for 4 s: the claim is made but its answer misses the timeout (2.5 s here,
    so that a loaded machine has 1.5 s to send it once Redis is busy; a script may not run
    past Redis's 5 s busy threshold, after which it answers BUSY). The host asks again,
    finds its own claim and runs the fire; without that, the fire would be held by a host
    that does not run it, and nobody would."""
    monkeypatch.setattr(coordinator, "REDIS_TIMEOUT", 2.5)
    blocker = redis.Redis.from_url(redis_server.url)
    probe = redis.Redis.from_url(redis_server.url, socket_timeout=0.05)

    def server_busy() -> bool:
        try:
            probe.ping()
        except redis.exceptions.TimeoutError:
            return True
        return False

    async def body() -> None:
        a, b = _cluster(redis_server, "a"), _cluster(redis_server, "b")
        busy = threading.Thread(target=blocker.eval, args=(BUSY_SCRIPT, 0, 4_000_000))
        busy.start()
        wait_for(server_busy, timeout=5, interval=0.01, message="the busy script")
        claim = await a.claim("job", 300.0)
        busy.join()
        assert (claim.won, claim.holder, claim.error) == (True, "a", None)
        # the first answer was lost: Redis was unavailable, then answered again
        assert any(m.startswith("no longer: cluster: Redis unavailable") for m in caplog.messages)
        other = await b.claim("job", 300.0)
        assert (other.won, other.holder) == (False, "a")
        for cluster in (a, b):
            await cluster.close()

    caplog.set_level(logging.WARNING, logger="torchd.core.health")
    asyncio.run(body())
    blocker.close()
    probe.close()


def _host(redis: RedisServer, host: str, ledger: dict[str, float]) -> Cluster:
    cluster = Cluster(ClusterSettings(redis=redis.url, name="hold", lease_ttl=3.0),
                      host_id=host, describe=lambda: {"config_hash": "x"},
                      settled=lambda: ledger)
    cluster.load = 0.0
    return cluster


def test_fires_due_during_a_new_epochs_hold_are_claimed_once_it_ends(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new Redis: the first claim writes back the host's settled fires, then waits out
    the hold. The ledger is settled ahead (a fire is settled when due, before its claim):
    written back as it is, the fires still waiting would come out `later` (lost, though no
    host ran them). Past the epoch's making plus the host's clock lead and a margin, this
    host cannot have run a fire before, so the write-back stops there and the fires are
    claimed."""
    monkeypatch.setattr(coordinator, "EPOCH_HOLD", 0.5)
    soon = time.time() + 5  # well past the margin (0.5 s) after the epoch is made
    ledger = {"job": soon + 1}

    async def body() -> None:
        host = _host(redis_server, "a", ledger)
        host.skew = 0.0  # its clock measured (the heartbeat's job), in step with Redis's
        first, second = await asyncio.gather(host.claim("job", soon), host.claim("job", soon + 1))
        assert (first.won, first.error, second.won, second.error) == (True, None, True, None)
        await host.close()

    asyncio.run(body())


def test_a_fire_run_before_redis_emptied_is_not_run_again(
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Host b ran a fire; Redis loses its data; host a, which had settled that fire but not
    yet claimed it (an overloaded host claims late), writes it back and is answered
    `later`: the fire is not run twice."""
    monkeypatch.setattr(coordinator, "EPOCH_HOLD", 0.5)
    fire = time.time() - 0.5
    flusher = redis.Redis.from_url(redis_server.url)

    async def body() -> None:
        b = _host(redis_server, "b", {})
        assert (await b.claim("job", fire)).won  # in the first epoch
        flusher.flushall()
        a = _host(redis_server, "a", {"job": fire})
        late = await a.claim("job", fire)
        assert (late.won, late.holder, late.error) == (False, None, None)
        for cluster in (a, b):
            await cluster.close()

    asyncio.run(body())
    flusher.close()
