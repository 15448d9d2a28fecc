"""Delayed jobs: RQ's scheduler, run on a worker thread, with sub-second precision.

It enqueues due jobs from the float-scored registries of :mod:`tasklab.engine.queue`, by the
float clock, so countdowns and retry delays are kept to within one scheduler interval.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterable

import redis
from rq.scheduler import RQScheduler
from rq.utils import now

from .. import defaults
from .queue import PreciseScheduledJobRegistry
from .rq_private import set_acquired_locks, use_scheduled_registries

log = logging.getLogger("tasklab.scheduler")

#: RQ's acquire-or-refresh of a scheduler lock (the same key and value, so RQ's tools and RQ's
#: ``release_locks`` see it), with a TTL in milliseconds. Returns 1 acquired, 2 refreshed, 0 taken.
_LOCK_LUA = """
local value = redis.call('GET', KEYS[1])
if not value then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return 1
elseif value == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 2
end
return 0
"""


class PreciseScheduler(RQScheduler):
    def prepare_registries(self, queue_names: Iterable[str] | None = None) -> None:
        registries = []
        for name in queue_names or self.acquired_locks:
            registry = PreciseScheduledJobRegistry(name, connection=self.connection, serializer=self.serializer)
            registry.holder = (self.name, self.get_locking_key(name))  # claims its due jobs: see the registry
            registries.append(registry)
        use_scheduled_registries(self, registries)


class SchedulerThread(threading.Thread):
    """RQ's scheduler (per-queue locks, metadata, enqueueing due jobs) on a thread of a worker.

    RQ forks a process for it, which would outlive a killed worker; a thread cannot. Every
    worker runs one; RQ's per-queue locks make exactly one of them active per queue. RQ holds
    a lock for a minute and tries for a free one every two; here a lock lives
    :data:`~tasklab.defaults.SCHEDULER_LOCK_TTL` seconds and every scheduler tries to take or
    refresh its locks every :data:`~tasklab.defaults.SCHEDULER_LOCK_REFRESH` seconds, so the
    death of the holder stalls countdowns, etas and retries for at most that long.
    """

    def __init__(self, queues: list, connection: redis.Redis, serializer: object, interval: float):
        super().__init__(name="tasklab-scheduler", daemon=True)
        self.scheduler = PreciseScheduler(queues, connection=connection, interval=1, serializer=serializer)
        self.names = sorted(queue.name if hasattr(queue, "name") else str(queue) for queue in queues)
        self.interval = interval
        self.stopping = threading.Event()
        self._lock_script = self.scheduler.connection.register_script(_LOCK_LUA)

    def run(self) -> None:
        scheduler = self.scheduler
        last_locking = -math.inf
        unreachable = False  # Redis did not answer the last pass: logged once an outage
        try:
            scheduler.register_birth()
            while not self.stopping.wait(self.interval):
                try:
                    if time.monotonic() - last_locking >= defaults.SCHEDULER_LOCK_REFRESH:
                        self.take_locks()
                        last_locking = time.monotonic()
                    if scheduler.acquired_locks:
                        scheduler.enqueue_scheduled_jobs()
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    if not unreachable:
                        log.warning("scheduler: Redis is unreachable (%s); it tries again every %.1f s",
                                    exc, self.interval)  # fmt: skip
                    unreachable = True
                    continue
                except Exception:
                    log.exception("scheduler pass failed; trying again in %.1f s", self.interval)
                unreachable = False
        finally:
            with contextlib.suppress(Exception):
                scheduler.release_locks()
                scheduler.register_death()

    def take_locks(self) -> set[str]:
        """Take the free locks of this worker's queues and refresh the ones it holds, in one round
        trip with the scheduler's metadata; the queues it now schedules."""
        scheduler = self.scheduler
        scheduler.last_heartbeat = now()
        with scheduler.connection.pipeline() as pipe:
            scheduler.save(pipeline=pipe)
            for name in self.names:
                self._lock_script(
                    keys=[scheduler.get_locking_key(name)],
                    args=[scheduler.name, int(defaults.SCHEDULER_LOCK_TTL * 1000)],
                    client=pipe,
                )
            outcomes = pipe.execute()[-len(self.names) :]
        held = {name for name, outcome in zip(self.names, outcomes, strict=True) if outcome in (1, 2)}
        if held != scheduler.acquired_locks:
            log.info("scheduling the delayed jobs of %s", ", ".join(sorted(held)) or "no queue")
            set_acquired_locks(scheduler, held)
            scheduler.prepare_registries(held)
        return held

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
