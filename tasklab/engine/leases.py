"""Worker leases: how a worker's death is noticed in seconds, wherever it ran.

Every worker process holds a lease: its name in the sorted set :data:`LEASES`, scored by when the
lease runs out, on Redis's own clock (so that hosts whose clocks differ agree). A thread of the
worker renews it every :data:`~tasklab.defaults.LEASE_RENEW_INTERVAL` seconds for
:data:`~tasklab.defaults.LEASE_TTL` seconds. A worker that dies, freezes, or loses its host or its
link to Redis stops renewing; once its lease has run out, whoever looks first (another worker's
lease thread, a supervisor, a client waiting for a result) takes it out of the set, in the same
script that finds it, and settles the jobs it was running (:func:`tasklab.engine.lost.settle_jobs_of`):
failed with ``WorkerLostError``, or requeued under ``acks_late``. Taking it out is atomic, so each
expired lease is settled once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from rq import Queue
from rq.job import Job

from .. import defaults
from ..errors import WorkerLostError
from .lost import settle_jobs_of, unregister

log = logging.getLogger("tasklab.leases")

#: Sorted set: worker name -> when its lease runs out (milliseconds, Redis's clock).
LEASES = "tasklab:leases"

_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

#: ``take(limit, claim_ms)``: takes up to ``limit`` leases that ran out by moving their end to
#: ``now + claim_ms`` (the settler's claim on them: taken again if it does not finish by then), and
#: returns their names, each followed by that claim.
_TAKE_LUA = """
local function take(limit, claim_ms)
    local taken = {}
    if limit == 0 then
        return taken
    end
    for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)) do
        redis.call('ZADD', KEYS[1], now + claim_ms, name)
        taken[#taken + 1] = name
        taken[#taken + 1] = tostring(now + claim_ms)
    end
    return taken
end
"""

#: KEYS[1]: the leases. ARGV: worker name, TTL in ms, most expired leases to take (0: none), claim ms.
#: Renews the worker's lease and takes leases that ran out. Returns 1 if the lease was new (settled
#: meanwhile, or never held), 2 if it was taken by a settler (its end is a settler's claim, further off
#: than a lease's TTL: its jobs are being settled now), else 0, then the leases taken (see ``take``).
_RENEW_AND_TAKE = (
    _NOW
    + _TAKE_LUA
    + """
local ends = redis.call('ZSCORE', KEYS[1], ARGV[1])
local new = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if ends and tonumber(ends) > now + tonumber(ARGV[2]) then
    new = 2
end
local taken = take(tonumber(ARGV[3]), tonumber(ARGV[4]))
table.insert(taken, 1, new)
return taken
"""
)

#: KEYS[1]: the leases. ARGV: most expired leases to take, claim ms. Takes them (see ``take``).
_TAKE = _NOW + _TAKE_LUA + "return take(tonumber(ARGV[1]), tonumber(ARGV[2]))\n"

#: KEYS[1]: the leases. ARGV: worker name, the settler's claim. Removes the lease if it still ends at
#: the claim (its worker did not renew it meanwhile); 1 if removed.
_RELEASE = """
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1])) == tonumber(ARGV[2]) then
    return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""

#: Expired leases one call takes at most (the rest are taken by the next).
_TAKE_AT_ONCE = 16
#: Milliseconds a settler's claim on an expired lease lasts before another may take it again: longer
#: than a lease's TTL, so that a renewal tells a lease being settled from a held one.
_CLAIM_MS = 10_000
assert _CLAIM_MS > defaults.LEASE_TTL * 1000


def _run(connection: redis.Redis, script: str, args: list) -> list:
    reply = connection.register_script(script)(keys=[LEASES], args=args)
    return [name.decode() if isinstance(name, bytes) else name for name in reply]


#: What a renewal found: the lease held until now, new (settled meanwhile, or never held), or being
#: settled now by whoever took it as run out.
HELD, NEW, SETTLING = 0, 1, 2


def renew(connection: redis.Redis, worker_name: str, take_expired: bool = True) -> tuple[int, list[tuple[str, str]]]:
    """Renew ``worker_name``'s lease: what it found (:data:`HELD`, :data:`NEW` or :data:`SETTLING`),
    and with ``take_expired`` the leases that ran out, taken for the caller to settle (with their claims)."""
    args = [worker_name, int(defaults.LEASE_TTL * 1000), _TAKE_AT_ONCE if take_expired else 0, _CLAIM_MS]
    found, *taken = _run(connection, _RENEW_AND_TAKE, args)
    return int(found), list(zip(taken[::2], taken[1::2], strict=True))


def drop(connection: redis.Redis, worker_name: str) -> None:
    """Give up ``worker_name``'s lease: it stopped cleanly, or its jobs were settled already."""
    connection.zrem(LEASES, worker_name)


def take_expired(connection: redis.Redis) -> list[tuple[str, str]]:
    """Take the leases that ran out, each with the taker's claim on it (each goes to one caller only,
    until its claim runs out: a settler that fails or is interrupted leaves it to the next)."""
    taken = _run(connection, _TAKE, [_TAKE_AT_ONCE, _CLAIM_MS])
    return list(zip(taken[::2], taken[1::2], strict=True))


def settle(connection: redis.Redis, taken: list[tuple[str, str]]) -> list[str]:
    """Settle the jobs of workers whose leases were taken as run out; the ids of the jobs settled.
    A lease is removed (and its worker unregistered) once settled, unless its worker renewed it
    meanwhile: a live worker keeps its lease and its record, and its late outcomes are fenced."""
    settled: list[str] = []
    for name, claim in taken:
        reason = WorkerLostError(
            f"Worker {name} stopped renewing its lease for {defaults.LEASE_TTL:g} s while it ran the task: its "
            "process, its host or its link to Redis was lost."
        )
        try:
            jobs = settle_jobs_of(connection, name, reason)
            if connection.register_script(_RELEASE)(keys=[LEASES], args=[name, claim]):
                unregister(connection, name)
        except Exception:
            log.exception("settling the jobs of worker %s, whose lease ran out, failed", name)
            continue
        if jobs:
            log.warning("worker %s's lease ran out; settled its jobs %s", name, ", ".join(jobs))
        settled += jobs
    return settled


def settle_expired(connection: redis.Redis) -> list[str]:
    """Take the leases that ran out and settle their workers' jobs; the ids of the jobs settled.
    Also queues again jobs stranded in RQ's intermediate lists (see :func:`requeue_stranded`)."""
    requeue_stranded(connection)
    return settle(connection, take_expired(connection))


#: Taken by whoever looks for stranded jobs, so that they are looked for once a renewal interval.
_SWEEP_LOCK = "tasklab:sweep"
#: Prefix of the keys that remember when a job was first seen stranded.
_STRANDED = "tasklab:stranded:"

#: KEYS[1]: an RQ intermediate list, KEYS[2]: its queue. ARGV: job key prefix, grace (ms), marker
#: prefix. Jobs in the list that have not started for ``grace`` since first seen there are queued
#: again (or dropped from it, if gone); returns the ids queued again.
_REQUEUE_STRANDED = (
    _NOW
    + """
local grace = tonumber(ARGV[2])
local moved = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    local status = redis.call('HGET', ARGV[1] .. id, 'status')
    if status ~= 'started' then
        local marker = ARGV[3] .. id
        local seen = redis.call('GET', marker)
        if not seen then
            redis.call('SET', marker, now, 'PX', grace * 10)
        elseif now - tonumber(seen) >= grace then
            redis.call('LREM', KEYS[1], 1, id)
            redis.call('DEL', marker)
            if status == 'queued' then
                redis.call('LPUSH', KEYS[2], id)
                moved[#moved + 1] = id
            end
        end
    end
end
return moved
"""
)


def requeue_stranded(connection: redis.Redis) -> list[str]:
    """Queue again the jobs left in RQ's intermediate lists by a process that took them and died
    before starting them (a plain RQ worker; tasklab's workers take jobs into claimed lists,
    settled with the worker). At most once a renewal interval, whoever calls first; the ids."""
    if not connection.set(_SWEEP_LOCK, 1, nx=True, px=int(defaults.LEASE_RENEW_INTERVAL * 1000)):
        return []
    script = connection.register_script(_REQUEUE_STRANDED)
    args = [Job.redis_job_namespace_prefix, int(defaults.STRAND_GRACE * 1000), _STRANDED]
    moved: list[str] = []
    for queue in Queue.all(connection=connection):
        found = script(keys=[queue.intermediate_queue_key, queue.key], args=args)
        moved += [name.decode() if isinstance(name, bytes) else name for name in found]
    if moved:
        log.warning("queued again jobs taken but never started: %s", ", ".join(moved))
    return moved


def lease_client(connection: redis.Redis) -> redis.Redis:
    """A client of ``connection``'s Redis for a lease thread: its own connections, replies awaited
    :data:`~tasklab.defaults.LEASE_SOCKET_TIMEOUT` seconds at most, TCP keepalive on."""
    pool = connection.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs["socket_timeout"] = defaults.LEASE_SOCKET_TIMEOUT
    kwargs["socket_connect_timeout"] = defaults.LEASE_SOCKET_TIMEOUT
    if "path" not in kwargs:  # TCP only
        kwargs["socket_keepalive"] = True
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


class LeaseKeeper(threading.Thread):
    """Renews ``worker_name``'s lease every :data:`~tasklab.defaults.LEASE_RENEW_INTERVAL` seconds,
    and settles the jobs of workers whose leases it finds expired. :meth:`valid` says whether the
    lease is known to be held now: a worker whose lease may have run out takes no job."""

    def __init__(
        self,
        connection: redis.Redis,
        worker_name: str,
        on_lost: Callable[[], None] | None = None,
        extend: Callable[[Any], bool] | None = None,
    ) -> None:
        super().__init__(name="tasklab-lease", daemon=True)
        self.client = lease_client(connection)
        self.worker_name = worker_name
        #: Called when a renewal finds that the lease had been taken as expired (the worker was
        #: frozen or cut off, and its jobs were settled): the worker registers itself again.
        self.on_lost = on_lost
        #: Queues on a pipeline what a running job needs renewed with the lease (its RQ execution).
        self.extend = extend
        self._held = False
        self.stopping = threading.Event()
        self.renewed = threading.Event()
        self._valid_until = -math.inf  # time.monotonic() by which the lease runs out
        self._failing_since: float | None = None
        #: How many times a renewal found the lease run out and settled, or being settled: a claim
        #: made before the count last changed may have been queued again by the settler.
        self.epoch = 0

    def renew(self) -> list[str]:
        """Renew the lease (and the running job's execution record) now, and settle, on a thread,
        the workers whose leases it found expired (taken, so settled by no one else); their names.
        Raises redis-py's errors."""
        started = time.monotonic()
        found, expired = renew(self.client, self.worker_name)
        if self._held and found == SETTLING:  # settled now: a claim made before may be queued again
            self.epoch += 1
            log.warning("worker %s: its lease had run out and its jobs are being settled; it goes on", self.worker_name)
        elif self._held and found == NEW:
            self.epoch += 1
            log.warning("worker %s: its lease had run out and its jobs were settled; it goes on", self.worker_name)
            if self.on_lost is not None:
                self.on_lost()
        self._held = True
        self._valid_until = started + defaults.LEASE_TTL
        self.renewed.set()
        if self._failing_since is not None:
            log.warning(
                "worker %s: renewed its lease again after %.1f s", self.worker_name, started - self._failing_since
            )
            self._failing_since = None
        if self.extend is not None:
            with self.client.pipeline(transaction=False) as pipe:
                if self.extend(pipe):
                    pipe.execute()
        if expired:  # settled on a thread of its own: the next renewal must not wait for it
            threading.Thread(target=settle, args=(self.client, expired), name="tasklab-settle", daemon=True).start()
        return [name for name, _claim in expired]

    def valid(self) -> bool:
        return time.monotonic() < self._valid_until

    def wait_valid(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a renewal if the lease may have run out; whether it is held."""
        if not self.valid():
            self.renewed.clear()
            self.renewed.wait(timeout)
        return self.valid()

    def run(self) -> None:
        pause = defaults.LEASE_RENEW_INTERVAL
        while not self.stopping.wait(pause):
            try:
                self.renew()
            except Exception as exc:  # redis-py's errors, mostly: tried again soon, logged once an outage
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    log.warning("worker %s: cannot renew its lease (%r); it takes no job until it can",
                                self.worker_name, exc)  # fmt: skip
                pause = defaults.LEASE_RETRY_INTERVAL
                continue
            pause = defaults.LEASE_RENEW_INTERVAL

    def stop(self) -> None:
        """Stop renewing, and give the lease up (the worker stops cleanly)."""
        self.stopping.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout=defaults.LEASE_SOCKET_TIMEOUT * 2)
        try:
            drop(self.client, self.worker_name)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass  # it runs out by itself
        finally:
            self.client.close()
