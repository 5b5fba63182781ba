"""Cluster mode on Redis: one run per fire across hosts, leases for keep-alive tasks, a
registry of live hosts. Redis is the only coordination engine; torchd adds no consensus.

Keys, all under `torchd:NAME:` (NAME is `daemon.cluster.name`):
- `fire:TASK:EPOCH_MS`: the claim of one fire, made by every eligible host at the fire's
  time; the value names the winner ("HOST_ID NONCE", the nonce telling one daemon from
  the next on the same host). Kept 10 minutes. A host whose claim got no answer in time
  claims once more: the script answers the same for a repeated claim, so a claim made
  with only its answer lost is still run by its winner.
- `last:TASK`: the latest fire of the task claimed in the cluster. A fire at or before it
  is not claimed again: a host catching up fires it missed while down does not run what
  the others ran meanwhile, however long ago.
- `lease:TASK`: the holder of a `run_on: one` daemon-type task; renewed every third of
  its TTL by compare-and-expire, released by compare-and-delete. Taking it increases
  `fence:TASK`, the fencing token its instances get in TORCHD_FENCING_TOKEN.
- `edges:TASK`: the satisfied edges of a `run_on: one` downstream task (`after:`), a
  hash from upstream task to the run that satisfied it (JSON). A host that hears an
  upstream run's final outcome sets its field and, when every upstream's is there (each
  within `within`), deletes the hash in the same script and runs the downstream: one
  host completes a set, so the downstream runs once per triggering upstream run.
- `host:HOST_ID`: a heartbeat (JSON) with a TTL of three heartbeats.
- `epoch`: "ID CREATED_MS", made by the first host to find Redis empty (a restart without
  persistence, a new Redis). A host that sees an epoch it does not know (at a claim or a
  heartbeat) first writes back the latest fire it settled of each task into `last:TASK`
  (only where that is later, and, once it has measured its clock against Redis's, no
  further past the epoch's making than its clock runs ahead plus RESTORE_MARGIN: a fire
  due after that cannot have been run by this host before), and no fire is claimed for
  EPOCH_HOLD after the epoch was made, so that every live host has written back what it
  knows before a host whose clock lags can claim a fire another host already ran. The fencing tokens
  it has seen are written back the same way, so a token never goes back.

When Redis does not answer, the client backs off (0.5 s doubling to 8 s) and every claim
fails at once until the next probe succeeds: such fires are missed, never run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

import psutil
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from torchd.core.health import Health
from torchd.core.model import After, Claim, ClusterSettings
from torchd.core.timefmt import iso_utc
from torchd.core.workflow import EdgeAnswer, EdgeRun

log = logging.getLogger("torchd.cluster")
T = TypeVar("T")

HEARTBEAT = 2.0  # seconds between a host's heartbeats
CLAIM_TTL_MS = 600_000
CLAIM_SPREAD = 0.02  # seconds of claim delay per unit of load (load 1.0 waits 20 ms)
OVERLOADED_DELAY = 1.0  # a host above max_load claims only after this, if nobody has
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 8.0
REDIS_TIMEOUT = 1.0
# Seconds after a new epoch before claims: every live host has looked at the epoch by
# then (its heartbeat looks first thing, every HEARTBEAT, and a call takes at most
# REDIS_TIMEOUT); a host whose calls time out meanwhile claims nothing either.
EPOCH_HOLD = HEARTBEAT + 2 * REDIS_TIMEOUT
SKEW_WARNING = 1.0  # seconds between a host's clock and Redis's that `status` warns of
# How far past a new epoch's making, beyond how far its clock runs ahead of Redis's, a
# host's written-back fire may reach (the error of that measure, with room to spare).
RESTORE_MARGIN = 0.5


def _epoch_check(epoch_key: str, known: str, hold: str) -> str:
    """Lua that answers {'restore', EPOCH} unless the epoch in Redis is the one the host
    knows, and {'wait', MS} while that epoch is younger than the hold (all in ms)."""
    return f"""
local epoch = redis.call('get', {epoch_key})
if not epoch or epoch ~= {known} then return {{'restore', epoch or ''}} end
local t = redis.call('time')
local age = t[1] * 1000 + math.floor(t[2] / 1000) - tonumber(string.match(epoch, '(%d+)$'))
if age < tonumber({hold}) then return {{'wait', tostring(tonumber({hold}) - age)}} end
"""


# A claim: {'restore', EPOCH} when the host must write back its fires first (an epoch it
# does not know, or none), {'wait', MS} during the hold after a new epoch, {'won'},
# {'held', HOLDER}, or {'later'} (a later fire of the task was claimed already).
CLAIM = _epoch_check("KEYS[3]", "ARGV[4]", "ARGV[5]") + """
local holder = redis.call('get', KEYS[1])
if holder then return {'held', holder} end
local last = tonumber(redis.call('get', KEYS[2]) or '-1')
if tonumber(ARGV[2]) <= last then return {'later'} end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('set', KEYS[2], ARGV[2])
return {'won'}
"""
# KEYS: epoch, then N last:TASK keys and the fence:TASK keys; ARGV: a new epoch's id, N,
# the reach (ms, or '' for none), then the value this host knows for each key (a fire in
# ms, a fencing token), written where it is higher. A fire is written back at most up to
# the epoch's making plus the reach (the host's clock lead plus RESTORE_MARGIN): a fire
# this host claimed in the Redis that was lost was due before that. The fire ledger is
# settled when a fire is due, before its claim, so a write-back without the cap turns the
# fires still waiting out the hold into `later` on every host: lost, though no host ran
# them. A host that has not measured its clock yet writes back without the cap.
RESTORE = """
local epoch = redis.call('get', KEYS[1])
if not epoch then
  local t = redis.call('time')
  epoch = ARGV[1] .. ' ' .. (t[1] * 1000 + math.floor(t[2] / 1000))
  redis.call('set', KEYS[1], epoch)
end
local cap = nil
if ARGV[3] ~= '' then cap = tonumber(string.match(epoch, '(%d+)$')) + tonumber(ARGV[3]) end
local fires = tonumber(ARGV[2])
for i = 2, #KEYS do
  local value = ARGV[i + 2]
  if cap and i <= fires + 1 and tonumber(value) > cap then
    value = string.format('%d', cap)
  end
  if tonumber(value) > tonumber(redis.call('get', KEYS[i]) or '-1') then
    redis.call('set', KEYS[i], value)
  end
end
return epoch
"""
# Taking a lease: KEYS lease, fence, epoch; ARGV holder, ttl (ms), the epoch the host
# knows, the hold (ms). Answers as CLAIM does: {'restore', E}, {'wait', MS}, {'taken',
# TOKEN} or {'held'}. After Redis came back empty, the lease waits out a whole TTL: the
# holder from before may not have noticed yet.
TAKE = _epoch_check("KEYS[3]", "ARGV[3]", "ARGV[4]") + """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {'taken', tostring(redis.call('incr', KEYS[2]))}
end
return {'held'}
"""
RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


# An upstream run offered to a downstream's edges. KEYS: edges:TASK; ARGV: the upstream,
# the run (JSON), now (s), within (s, or ''), the edge kind, then every upstream named.
# Answers {'fire'} (the set was complete: cleared) or {'wait'}.
EDGE = """
redis.call('hset', KEYS[1], ARGV[1], ARGV[2])
local now, within, on = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local complete = true
for i = 6, #ARGV do
  local held = redis.call('hget', KEYS[1], ARGV[i])
  if held then
    local run = cjson.decode(held)
    if (within and now - tonumber(run['ended']) > within)
        or (on == 'success' and run['outcome'] ~= 'ok') then
      redis.call('hdel', KEYS[1], ARGV[i])
      held = false
    end
  end
  if not held then complete = false end
end
if complete then
  redis.call('del', KEYS[1])
  return {'fire'}
end
return {'wait'}
"""


class Unavailable(Exception):
    """Redis did not answer (or is in its back-off after not answering). `sent`: the call
    may have gone out (it timed out), so Redis may have carried it out with only its
    answer lost."""

    def __init__(self, reason: str, *, sent: bool) -> None:
        super().__init__(reason)
        self.sent = sent


def _host_of(claimant: str) -> str:
    """The host id in a fire key's value ('HOST_ID NONCE'; '' stays '')."""
    return claimant.rsplit(" ", 1)[0]


def _beat_view(beat: dict[str, Any]) -> dict[str, Any]:
    """A heartbeat as `status --cluster` shows it: its time in the JSON form (Redis keeps
    epoch seconds)."""
    if isinstance(beat.get("time"), int | float):
        beat["time"] = iso_utc(beat["time"])
    return beat


def host_figures() -> dict[str, Any]:
    """What the heartbeat tells of this host's load: `load` = max(1-minute load average
    per core, fraction of memory in use), which orders claims (see claim_delay), and its
    parts: the load average, the cores, the memory in use (percent) and in all (bytes)."""
    average = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    memory = psutil.virtual_memory()
    return {"load": round(max(average / cores, memory.percent / 100.0), 3),
            "loadavg": round(average, 2), "cpus": cores,
            "memory_percent": round(memory.percent, 1), "memory_total": memory.total}


def majority(hashes: list[str | None], own: str | None) -> str | None:
    """The config hash most hosts run; a tie goes to `own` (this host's) if it is among
    the most common, else to the smallest."""
    counts: dict[str | None, int] = {}
    for value in hashes:
        counts[value] = counts.get(value, 0) + 1
    if not counts:
        return own
    most = max(counts.values())
    leaders = [value for value, count in counts.items() if count == most]
    if own in leaders:
        return own
    return min(leaders, key=lambda value: value or "")


def redact(url: str) -> str:
    """The Redis URL without its password, for logs."""
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)


LeaseChange = Callable[[str, bool, float], None]  # (task, held, seconds left to stop by)
LeaseRenewed = Callable[[str, float], None]  # (task, its expiry on CLOCK_BOOTTIME)
CLAIM_ROUNDS = 4  # write back, wait out the hold, claim: a claim takes at most this many


def boottime() -> float:
    """CLOCK_BOOTTIME: what a lease's expiry is told in to its guard (it counts a suspend,
    as Redis's expiry does)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class Cluster:
    def __init__(self, settings: ClusterSettings, *, host_id: str,
                 describe: Callable[[], dict[str, Any]],
                 settled: Callable[[], Mapping[str, float]] = dict,
                 health: Health | None = None) -> None:
        """`settled()`: the latest fire this host settled of each `run_on: one` cron task
        (its fire ledger), written back when Redis comes back empty."""
        self.settings = settings
        self.host_id = host_id
        # What this daemon writes into the fire keys it wins: its host id, and a nonce that
        # tells its own claims from those of an earlier daemon on the same host.
        self._claimant = f"{host_id} {secrets.token_hex(4)}"
        self._describe = describe  # this host's heartbeat fields (version, config hash...)
        self._settled = settled
        self._health = health or Health(time.time)
        self._prefix = f"torchd:{settings.name}:"
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            settings.redis, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT,
            retry_on_timeout=False, decode_responses=True)
        self._claim = self._redis.register_script(CLAIM)
        self._restore_script = self._redis.register_script(RESTORE)
        self._take = self._redis.register_script(TAKE)
        self._renew = self._redis.register_script(RENEW)
        self._release = self._redis.register_script(RELEASE)
        self._edge = self._redis.register_script(EDGE)
        self._epoch: str | None = None  # the epoch this host has written its fires into
        self._down_until = 0.0
        self._backoff = BACKOFF_FIRST
        self._down_reason: str | None = None
        self.load = 0.0
        self._figures: dict[str, Any] = {}  # host_figures() at the last heartbeat
        self.claims_won = 0  # fires this daemon won since it started
        self.skew: float | None = None  # this host's clock minus Redis's, in seconds
        self._lease_tasks: set[str] = set()
        self._held: dict[str, float] = {}  # task -> when its lease expires (CLOCK_BOOTTIME)
        self._tokens: dict[str, int] = {}  # task -> the latest fencing token it was given
        self._on_lease: LeaseChange = lambda _task, _held, _left: None
        self._on_renew: LeaseRenewed = lambda _task, _expiry: None
        self._loops: list[asyncio.Task[None]] = []
        self._giving_back: set[asyncio.Task[None]] = set()
        self._claiming: dict[str, asyncio.Lock] = {}  # task -> its claims, one at a time
        # This host's claims by result (won, lost, later, error): torchd_cluster_claims_total.
        self.claim_counts = dict.fromkeys(("won", "lost", "later", "error"), 0)

    # ----- lifecycle ---------------------------------------------------------------------
    async def start(self, on_lease: LeaseChange, on_renew: LeaseRenewed | None = None) -> None:
        self._on_lease = on_lease
        if on_renew is not None:
            self._on_renew = on_renew
        self._figures = host_figures()
        self.load = float(self._figures["load"])
        with contextlib.suppress(Unavailable):
            await self._ask(self._redis.ping)
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._heartbeat_loop(), name="cluster heartbeat"),
                       loop.create_task(self._lease_loop(), name="cluster leases")]
        for task in self._loops:
            task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        """A loop that ends other than by close() is a bug: said at once, and in status."""
        if task.cancelled() or task.exception() is None:
            return
        log.critical("cluster: the %s loop stopped on an internal error", task.get_name(),
                     exc_info=task.exception())
        self._health.report("cluster-internal", f"cluster: the {task.get_name()} loop "
                            "stopped on an internal error (see the log); restart the daemon")

    async def close(self) -> None:
        """Stop the loops, give back held leases (their instances are stopped by now)."""
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # logged on its end
                await task
        for name in list(self._held):
            with contextlib.suppress(Unavailable):
                await self._ask(lambda n=name: self._release(  # type: ignore[misc]
                    keys=[self._key("lease", n)], args=[self._claimant]))
        self._held.clear()
        with contextlib.suppress(Unavailable):
            await self._ask(lambda: self._redis.delete(self._key("host", self.host_id)))
        await self._redis.aclose()

    # ----- talking to Redis --------------------------------------------------------------
    def _key(self, kind: str, *parts: str) -> str:
        return self._prefix + ":".join((kind, *parts))

    async def _ask(self, call: Callable[[], Awaitable[T]], *, probe: bool = False) -> T:
        """One Redis call, failing fast while Redis is known to be down (except probes)."""
        if not probe and time.monotonic() < self._down_until:
            raise Unavailable(self._down_reason or "Redis is unavailable", sent=False)
        try:
            result = await call()
        except (redis_errors.RedisError, OSError) as exc:  # READONLY, OOM... as well
            reason = f"Redis unavailable ({type(exc).__name__}: {exc})"
            if self._down_reason is not None:
                self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            self._down_reason = reason
            self._down_until = time.monotonic() + self._backoff
            self._health.report("cluster", f"cluster: {reason}; run_on: one fires are missed "
                                "and leased instances stop until it answers")
            # A timeout may come after the call went out; a refused connection sent nothing.
            raise Unavailable(reason, sent=isinstance(exc, redis_errors.TimeoutError)) from None
        if self._down_reason is not None:  # it answers again
            self._down_reason = None
            self._backoff = BACKOFF_FIRST
            self._down_until = 0.0
            self._health.clear("cluster")
        return result

    async def _write_back(self) -> None:
        """Write this host's latest settled fires into the epoch Redis has (made if it has
        none), and take that epoch as known. Raises Unavailable."""
        fires = dict(self._settled())
        keys = [self._key("epoch"), *(self._key("last", task) for task in fires),
                *(self._key("fence", task) for task in self._tokens)]
        reach = ("" if self.skew is None
                 else str(round((max(self.skew, 0.0) + RESTORE_MARGIN) * 1000)))
        args = [secrets.token_hex(4), str(len(fires)), reach,
                *(str(round(at * 1000)) for at in fires.values()),
                *(str(token) for token in self._tokens.values())]
        epoch = str(await self._ask(lambda: self._restore_script(keys=keys, args=args),
                                    probe=True))
        if epoch != self._epoch:
            if self._epoch is not None:
                log.warning("cluster: Redis came back without its data (a restart without "
                            "persistence?); wrote back the latest fire of %d task(s) this "
                            "host knows of; claims wait %.0fs for the other hosts to do the "
                            "same", len(fires), EPOCH_HOLD)
            self._epoch = epoch

    # ----- fires -------------------------------------------------------------------------
    def claim_delay(self) -> float:
        """Less-loaded hosts claim first; an overloaded one leaves the fire to others."""
        if self.load > self.settings.max_load:
            return OVERLOADED_DELAY
        return min(self.load, 1.0) * CLAIM_SPREAD

    async def claim(self, task: str, scheduled: float) -> Claim:
        """Claim one fire. A host's claims of one task are made one at a time, in the order
        asked: claims held back together (EPOCH_HOLD) must not go out of order, where a
        later fire's claim would make an earlier one's come too late."""
        delay = self.claim_delay()
        if delay:
            await asyncio.sleep(delay)
        lock = self._claiming.get(task)
        if lock is None:
            lock = self._claiming[task] = asyncio.Lock()
        async with lock:
            claim = await self._claim_fire(task, scheduled)
        result = ("error" if claim.error is not None else "won" if claim.won
                  else "lost" if claim.holder is not None else "later")
        self.claim_counts[result] += 1
        return claim

    async def _claim_fire(self, task: str, scheduled: float) -> Claim:
        stamp = str(round(scheduled * 1000))
        keys = [self._key("fire", task, stamp), self._key("last", task), self._key("epoch")]
        for _ in range(CLAIM_ROUNDS):
            args: list[str | int] = [self._claimant, stamp, CLAIM_TTL_MS, self._epoch or "",
                                     round(EPOCH_HOLD * 1000)]

            def claim_fire(args: list[str | int] = args) -> Awaitable[Any]:
                return self._claim(keys=keys, args=args)

            asked_again = False
            try:
                answer = await self._ask(claim_fire)
            except Unavailable as exc:
                if not exc.sent:
                    return Claim(won=False, holder=None, error=str(exc))
                # The claim may have been made with only the answer lost (a slow Redis):
                # then nobody else runs the fire, so ask once more; the script answers our
                # own claim as held by us.
                try:
                    answer = await self._ask(claim_fire, probe=True)
                except Unavailable:
                    return Claim(won=False, holder=None, error=str(exc))
                asked_again = True
            kind = answer[0]
            if kind == "restore":
                try:
                    await self._write_back()
                except Unavailable as exc:
                    return Claim(won=False, holder=None, error=str(exc))
            elif kind == "wait":  # the hold, then the load's deference again
                await asyncio.sleep(int(answer[1]) / 1000 + self.claim_delay())
            elif kind == "won" or (asked_again and answer[1:] == [self._claimant]):
                self.claims_won += 1
                return Claim(won=True, holder=self.host_id)  # a fire is otherwise claimed once
            elif kind == "held":
                return Claim(won=False, holder=_host_of(str(answer[1])))
            else:  # "later": a later fire of the task ran already
                return Claim(won=False, holder=None)
        return Claim(won=False, holder=None, error="the claim did not settle (Redis emptied "
                                                   "again and again?)")

    # ----- workflow edges ----------------------------------------------------------------
    async def offer_edge(self, downstream: str, after: After, run: EdgeRun,
                         now: float) -> EdgeAnswer:
        """Set the downstream's edge from `run` and, if the set is complete, clear it in
        the same script (see EDGE). A run that satisfies an `on: failure` edge fires by
        itself: no state is kept for it. An unanswered call is no fire (a timed-out one
        may have set the edge: it then counts for the next run)."""
        if after.on.value == "failure":
            return EdgeAnswer(fire=True)
        record = json.dumps({"run_id": run.run_id, "outcome": str(run.outcome),
                             "ended": run.ended, "workflow_id": run.workflow_id})
        args = [run.upstream, record, repr(now),
                "" if after.within is None else repr(after.within), str(after.on),
                *after.tasks]
        try:
            answer = await self._ask(lambda: self._edge(keys=[self._key("edges", downstream)],
                                                        args=args))
        except Unavailable as exc:
            return EdgeAnswer(fire=False, error=str(exc))
        return EdgeAnswer(fire=answer[0] == "fire")

    # ----- leases ------------------------------------------------------------------------
    def set_lease_tasks(self, names: set[str]) -> None:
        """The run_on: one daemon tasks this host may hold (active, not paused)."""
        for name in self._lease_tasks - names:
            if self._held.pop(name, None) is not None:
                self._on_lease(name, False, 0.0)
                self._in_background(self._give_back(name))
        self._lease_tasks = set(names)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._giving_back.add(task)
        task.add_done_callback(self._giving_back.discard)

    def holds(self, task: str) -> bool:
        """Whether this host holds the task's lease now (not past its expiry: a daemon
        that was frozen learns so on waking, before it renews)."""
        expiry = self._held.get(task)
        return expiry is not None and boottime() < expiry

    def lease_expiry(self, task: str) -> float | None:
        """When the lease this host holds expires, on CLOCK_BOOTTIME, unless renewed."""
        return self._held.get(task)

    def fencing_token(self, task: str) -> int | None:
        """The token Redis gave when this host took the lease: higher than any before."""
        return self._tokens.get(task) if task in self._held else None

    @property
    def lease_ttl(self) -> float:
        return self.settings.lease_ttl

    async def _give_back(self, name: str) -> None:
        with contextlib.suppress(Unavailable):
            await self._ask(lambda: self._release(keys=[self._key("lease", name)],
                                                  args=[self._claimant]))

    async def _lease_loop(self) -> None:
        ttl = self.settings.lease_ttl
        due: dict[str, float] = {}
        while True:
            now = time.monotonic()
            for name in sorted(self._lease_tasks):
                if due.get(name, 0.0) <= now:
                    due[name] = time.monotonic() + await self._tend_lease(name, ttl)
            for name in set(due) - self._lease_tasks:
                del due[name]
            wake = min(due.values(), default=now + ttl / 3)
            await asyncio.sleep(min(max(wake - time.monotonic(), 0.02), ttl / 3))

    async def _tend_lease(self, name: str, ttl: float) -> float:
        """Renew the lease if held, else try to take it. Returns when to come back: a
        third of the TTL, or just after another holder's lease would expire."""
        key = self._key("lease", name)
        ttl_ms = round(ttl * 1000)
        # The lease runs for `ttl` from when it was asked for (Redis starts it later, so
        # this errs early), counted on CLOCK_BOOTTIME, which counts a suspend as Redis does.
        asked = boottime()
        if name in self._held:
            try:
                renewed = await self._ask(lambda: self._renew(keys=[key],
                                                              args=[self._claimant, ttl_ms]),
                                          probe=True)
            except Unavailable:
                renewed = 0
            if renewed and self.holds(name):
                self._held[name] = asked + ttl
                self._on_renew(name, asked + ttl)
                return ttl / 3
            if renewed:  # in Redis still, but past the expiry it counted on (it was frozen)
                self._in_background(self._give_back(name))
            # Fencing: stop the instance before the lease can pass to another host (its
            # guard does so too, should this daemon be frozen meanwhile).
            expiry = self._held.pop(name, None)
            if expiry is None:  # the task was removed or paused meanwhile: given back
                return ttl / 3
            left = expiry - boottime()
            log.warning("cluster: lease of task %s lost (not renewed); stopping its "
                        "instance within %.1fs", name, max(left, 0.0))
            self._on_lease(name, False, max(left - 0.5, 0.0))
            return ttl / 3
        hold = round(max(EPOCH_HOLD, ttl) * 1000)
        try:
            answer = await self._ask(lambda: self._take(
                keys=[key, self._key("fence", name), self._key("epoch")],
                args=[self._claimant, ttl_ms, self._epoch or "", hold]), probe=True)
            if answer[0] == "restore":
                await self._write_back()
                return 0.0
            if answer[0] == "wait":
                return min(int(answer[1]) / 1000 + 0.02, ttl / 3)
            token = answer[1] if answer[0] == "taken" else None
            left_ms = -2 if token else await self._ask(lambda: self._redis.pttl(key))
        except Unavailable:
            return ttl / 3
        if token and name not in self._lease_tasks:  # removed or paused meanwhile
            self._in_background(self._give_back(name))
            return ttl / 3
        if token:
            self._held[name] = asked + ttl
            self._tokens[name] = int(token)
            log.info("cluster: lease of task %s taken (fencing token %s); starting it here",
                     name, token)
            self._on_lease(name, True, ttl)
            return ttl / 3
        if isinstance(left_ms, int) and left_ms >= 0:
            return min(left_ms / 1000 + 0.02, ttl / 3)  # try again as it expires
        return ttl / 3

    # ----- registry ----------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            self._figures = await asyncio.to_thread(host_figures)
            self.load = float(self._figures["load"])
            with contextlib.suppress(Unavailable):
                await self._beat()
            await asyncio.sleep(HEARTBEAT)

    async def _beat(self) -> None:
        """Write back this host's fires if Redis has an epoch it does not know (first
        thing: EPOCH_HOLD counts on it), measure this host's clock against Redis's, and
        write the heartbeat."""
        if await self._ask(lambda: self._redis.get(self._key("epoch")), probe=True) != self._epoch:
            await self._write_back()
        before = time.time()
        seconds, micros = await self._ask(self._redis.time, probe=True)
        after = time.time()
        self.skew = round((before + after) / 2 - (seconds + micros / 1e6), 3)
        if abs(self.skew) > SKEW_WARNING:
            self._health.report("cluster-clock", f"cluster: this host's clock is "
                                f"{self.skew:+.1f}s off Redis's: claims of the same fire are "
                                "made that far apart; keep the hosts' clocks in step (NTP)")
        else:
            self._health.clear("cluster-clock")
        beat = json.dumps({**self._describe(), **self._figures, "host_id": self.host_id,
                           "load": self.load, "leases": sorted(self._held),
                           "claims_won": self.claims_won, "time": time.time(),
                           "clock_skew": self.skew})
        await self._ask(lambda: self._redis.set(self._key("host", self.host_id), beat,
                                                px=round(HEARTBEAT * 3000)), probe=True)

    async def view(self) -> dict[str, Any]:
        """Live hosts, lease holders, whether every host runs the same config, and hosts
        whose clock is off Redis's by more than SKEW_WARNING."""
        try:
            hosts = await self._ask(lambda: self._values("host"), probe=True)
            leases = await self._ask(lambda: self._values("lease"), probe=True)
        except Unavailable as exc:
            return {"name": self.settings.name, "host_id": self.host_id, "error": str(exc)}
        beats = sorted((_beat_view(json.loads(v)) for v in hosts.values()),
                       key=lambda b: b["host_id"])
        hashes = {beat.get("config_hash") for beat in beats}
        own = next((b.get("config_hash") for b in beats if b["host_id"] == self.host_id),
                   None)
        common = majority([beat.get("config_hash") for beat in beats], own)
        for beat in beats:
            beat["config_drift"] = beat.get("config_hash") != common
        skewed = {beat["host_id"]: beat["clock_skew"] for beat in beats
                  if abs(beat.get("clock_skew") or 0.0) > SKEW_WARNING}
        return {"name": self.settings.name, "host_id": self.host_id, "hosts": beats,
                "leases": {key.rsplit(":", 1)[1]: _host_of(value)
                           for key, value in leases.items()},
                "config_drift": len(hashes) > 1, "config_majority": common,
                "clock_skew": skewed}

    async def live_hosts(self) -> int | None:
        """Hosts whose heartbeat Redis holds (this one among them); None if Redis does not
        answer (or is in its back-off after not answering)."""
        try:
            return len(await self._ask(lambda: self._values("host")))
        except Unavailable:
            return None

    async def _values(self, kind: str) -> dict[str, str]:
        keys = [key async for key in self._redis.scan_iter(match=self._key(kind, "*"),
                                                           count=500)]
        values = await self._redis.mget(keys) if keys else []
        return {str(k): str(v) for k, v in zip(keys, values, strict=True) if v is not None}
