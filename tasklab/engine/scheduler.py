"""Delayed jobs: RQ's scheduler, run on a worker thread, with sub-second precision.

It enqueues due jobs from the float-scored registries of :mod:`tasklab.engine.queue`, by the
float clock, so countdowns and retry delays are kept to within one scheduler interval.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable

from rq.scheduler import RQScheduler

from .queue import PreciseScheduledJobRegistry
from .rq_private import use_scheduled_registries

log = logging.getLogger("tasklab.scheduler")


class PreciseScheduler(RQScheduler):
    def prepare_registries(self, queue_names: Iterable[str] | None = None) -> None:
        registries = [
            PreciseScheduledJobRegistry(name, connection=self.connection, serializer=self.serializer)
            for name in (queue_names or self.acquired_locks)
        ]
        use_scheduled_registries(self, registries)


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
