"""tasklab's RQ queue: RQ's ``Queue`` with tasklab's serializer and sub-second scheduling.

Jobs it creates are ordinary RQ jobs; any RQ tool can list, inspect and cancel them.
"""

from __future__ import annotations

from datetime import datetime

from redis.client import Pipeline
from rq import Queue
from rq.job import Job, JobStatus

from .scheduler import PreciseScheduledJobRegistry
from .serialization import Serializer


class TaskQueue(Queue):
    def __init__(self, name: str = "default", **kwargs: object):
        kwargs.setdefault("serializer", Serializer)
        super().__init__(name, **kwargs)  # type: ignore[arg-type]

    @property
    def scheduled_job_registry(self) -> PreciseScheduledJobRegistry:
        return PreciseScheduledJobRegistry(queue=self, job_class=self.job_class, serializer=self.serializer)

    def schedule_job(self, job: Job, datetime: datetime, pipeline: Pipeline | None = None, unique: bool = False) -> Job:
        """Put ``job`` in the scheduled registry, due at ``datetime`` to the sub-second."""
        if unique:
            raise ValueError("tasklab schedules jobs by id; unique=True is not supported here")
        pipe = pipeline if pipeline is not None else self.connection.pipeline()
        pipe.sadd(self.redis_queues_keys, self.key)
        self._persist_job(job, pipe, status=JobStatus.SCHEDULED)
        self.scheduled_job_registry.schedule(job, datetime, pipeline=pipe)
        if pipeline is None:
            pipe.execute()
        return job
