"""Delayed jobs: RQ's scheduler, run on a worker thread, with sub-second precision.

RQ scores scheduled jobs in whole seconds and compares them with the current whole second,
so a job due in 0.5 s may run at once and one due in 1.2 s may run after 1.0 s. tasklab
schedules with float scores and enqueues by the float clock: countdowns and retry delays are
kept to within one scheduler interval. Jobs scheduled by plain RQ still run as RQ intends.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import datetime, timezone

from redis.client import Pipeline
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.scheduler import RQScheduler

log = logging.getLogger("tasklab.scheduler")


class PreciseScheduledJobRegistry(ScheduledJobRegistry):
    """RQ's scheduled-job registry, scored by float timestamps."""

    def schedule(self, job: Job, scheduled_datetime: datetime, pipeline: Pipeline | None = None) -> int:
        if scheduled_datetime.tzinfo is None:
            scheduled_datetime = scheduled_datetime.astimezone(timezone.utc)
        connection = pipeline if pipeline is not None else self.connection
        return connection.zadd(self.key, {job.id: scheduled_datetime.timestamp()})

    def get_jobs_to_schedule(self, timestamp: int | None = None, chunk_size: int = 1000) -> list[str]:
        # RQ passes the current whole second; the float clock is never earlier than it.
        now = max(float(timestamp or 0), time.time())
        return [jid.decode() for jid in self.connection.zrangebyscore(self.key, 0, now, start=0, num=chunk_size)]


class PreciseScheduler(RQScheduler):
    def prepare_registries(self, queue_names: list[str] | None = None) -> None:
        self._scheduled_job_registries = [
            PreciseScheduledJobRegistry(name, connection=self.connection, serializer=self.serializer)
            for name in (queue_names or self._acquired_locks)
        ]


class SchedulerThread(threading.Thread):
    """RQ's scheduler loop (locks, heartbeat, enqueue due jobs) on a thread of a worker.

    RQ forks a process for it, which would outlive a killed worker; a thread cannot. Every
    worker runs one; RQ's per-queue locks make exactly one of them active per queue.
    """

    def __init__(self, queues: list, connection: object, serializer: object, interval: float):
        super().__init__(name="tasklab-scheduler", daemon=True)
        # RQ derives lock and heartbeat TTLs (whole seconds) from its interval.
        self.scheduler = PreciseScheduler(queues, connection=connection, interval=1, serializer=serializer)
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        scheduler = self.scheduler
        last_heartbeat = 0.0
        try:
            scheduler.register_birth()
            while not self.stopping.wait(self.interval):
                try:
                    if scheduler.should_reacquire_locks:
                        scheduler.acquire_locks()
                    if not scheduler.acquired_locks:
                        continue
                    if time.monotonic() - last_heartbeat >= 1:
                        scheduler.heartbeat()
                        last_heartbeat = time.monotonic()
                    scheduler.enqueue_scheduled_jobs()
                except Exception:
                    log.exception("scheduler pass failed; trying again in %.1f s", self.interval)
        finally:
            with contextlib.suppress(Exception):
                scheduler.release_locks()
                scheduler.register_death()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
