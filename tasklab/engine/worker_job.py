"""RQ's ``Job`` as a worker reads it: the same job, with less Python spent on each one.

A worker handles hundreds of jobs a second, and a few of RQ's conveniences cost a noticeable
part of each: every job, result and registry object checks its serializer against a
``typing.Protocol`` (slow before Python 3.12), and every use of ``job.started_job_registry``
builds a new registry; each date of the job hash is parsed with ``strptime``; and a job that
succeeded has its whole hash written again (its arguments compressed anew), though only four
fields changed. :class:`WorkerJob` checks each serializer once, builds each registry once per
queue, parses RQ's timestamps with ``fromisoformat``, and writes only the fields that changed
(see :meth:`WorkerJob.write_success`). The job hash, registries and results it leaves in Redis
are RQ's.
"""

from __future__ import annotations

import datetime
from typing import Any

from redis.client import Pipeline
from rq.job import Job, JobStatus
from rq.registry import BaseRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.utils import str_to_date

from ..code.serialization import Serializer
from .execution import execute_task
from .queue import TaskJob
from .refusal import allowed_callback
from .rq_private import add_finished, return_value, save_success, utc_stamp
from .transaction import HSET_IF_EXISTS

#: The function every tasklab job names (see :mod:`tasklab.client.submit`).
RUNTIME = f"{execute_task.__module__}.{execute_task.__name__}"

#: Job hash fields holding RQ timestamps (``utcformat``: ``2026-11-22T10:00:00.123456Z``).
_DATE_FIELDS = frozenset({"created_at", "enqueued_at", "started_at", "ended_at", "last_heartbeat"})

_registries: dict[tuple[type, type, str, int, int], BaseRegistry] = {}


def _registry(kind: type[BaseRegistry], job: Job) -> Any:
    key = (kind, type(job), job.origin, id(job.connection), id(job.serializer))
    registry = _registries.get(key)
    if registry is None or registry.connection is not job.connection:
        registry = kind(job.origin, connection=job.connection, job_class=type(job), serializer=job.serializer)
        _registries[key] = registry
    return registry


def parse_date(raw: bytes | str) -> datetime.datetime:
    """An RQ timestamp as an aware UTC datetime, as ``rq.utils.str_to_date`` reads it."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    if text.endswith("Z"):
        try:  # "Z" itself is read by fromisoformat from Python 3.11 only
            return datetime.datetime.fromisoformat(text[:-1] + "+00:00")
        except ValueError:
            pass
    return str_to_date(text)


class WorkerJob(TaskJob):
    """An RQ job, with its serializer checked once, its registries built once per queue and
    its dates parsed quickly."""

    @property
    def started_job_registry(self) -> StartedJobRegistry:
        return _registry(StartedJobRegistry, self)

    def retry(self, queue: Any, pipeline: Pipeline) -> None:
        """RQ's, but a job retried after an interval becomes SCHEDULED in the same transaction that puts
        it in the scheduled registry: RQ writes the status at once, before, so that for a moment the
        job was SCHEDULED with no due time (``AsyncResult.eta`` was ``None`` in the RETRY state)."""
        interval = self.get_retry_interval()
        if not interval:
            super().retry(queue, pipeline)
            return
        assert self.retries_left
        self.retries_left -= 1
        due = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=interval)
        self.set_status(JobStatus.SCHEDULED, pipeline=pipeline)
        queue.schedule_job(self, due, pipeline=pipeline)
        self.log.info("Job %s: scheduled for retry at %s, %s remaining", self.id, due, self.retries_left)

    # -- what RQ calls or stores for the job, checked (see tasklab.engine.refusal) --

    @property
    def success_callback(self) -> Any:
        return super().success_callback if allowed_callback(self._success_callback_name, self.id) else None

    @property
    def failure_callback(self) -> Any:
        return super().failure_callback if allowed_callback(self._failure_callback_name, self.id) else None

    @property
    def stopped_callback(self) -> Any:
        return super().stopped_callback if allowed_callback(self._stopped_callback_name, self.id) else None

    def save_meta(self) -> None:
        """The meta, signed as a job's (what the worker writes back is signed as a result)."""
        self.connection.hset(self.key, "meta", Serializer.dumps(self.meta))

    def to_dict(self, include_meta: bool = True, include_result: bool = True) -> dict:
        obj = super().to_dict(include_meta=include_meta, include_result=include_result)
        if include_meta and "meta" in obj:
            obj["meta"] = Serializer.dumps(self.meta)
        return obj

    @property
    def func(self) -> Any:
        """RQ's, but tasklab's runtime, which every tasklab job names, without RQ's ``import_attribute`` of
        its name on each job."""
        if self.func_name == RUNTIME and not self.instance:
            return execute_task
        return super().func

    @property
    def finished_job_registry(self) -> FinishedJobRegistry:
        return _registry(FinishedJobRegistry, self)

    def restore(self, raw_data: dict) -> Any:
        dates, rest = {}, {}
        for key, value in raw_data.items():
            name = key.decode() if isinstance(key, bytes) else key
            if name in _DATE_FIELDS and value:
                dates[name] = value
            else:
                rest[key] = value
        result = super().restore(rest)
        for name, value in dates.items():
            setattr(self, name, parse_date(value))
        return result

    def write_success(
        self,
        result_ttl: int,
        pipeline: Pipeline,
        worker_name: str = "",
        execution_id: str | None = None,
        execution_started_at: datetime.datetime | None = None,
        execution_ended_at: datetime.datetime | None = None,
        started: bool = False,
    ) -> None:
        """RQ's ``_handle_success`` for a :mod:`tasklab.engine.transaction` pipeline, writing only the
        fields of the job hash that running the job changed (RQ writes every field but
        ``meta`` again, with the same values), and only if the job still exists: RQ's full
        write would bring back a job deleted while it ran; four fields would leave a hash
        that RQ cannot read. With ``started``, the job's start was never written, and the field
        it alone writes, ``worker_name``, is written here; a heartbeat never was, and is not now
        (``last_heartbeat`` tells how long a started job has not been heard from: nothing reads it
        once the job has ended, and it costs a finished job about 70 bytes of Redis's memory)."""
        changed: list[str] = ["status", JobStatus.FINISHED.value]
        formatted: dict[int, str] = {}  # the job's end is its last heartbeat too: formatted once
        for field in ("started_at", "ended_at") if started else ("started_at", "ended_at", "last_heartbeat"):
            value = getattr(self, field)
            if value is not None:
                text = formatted.get(id(value))
                if text is None:
                    text = formatted[id(value)] = utc_stamp(value)
                changed += [field, text]
        if started:  # the commit's fence found the job queued: it exists
            pipeline.execute_command("HSET", self.key, *changed, "worker_name", worker_name)
        else:
            pipeline.execute_command(HSET_IF_EXISTS, self.key, *changed)
        save_success(self, return_value(self), result_ttl, pipeline, worker_name, execution_id,
                     execution_started_at, execution_ended_at)  # fmt: skip
        if result_ttl != 0:
            add_finished(self, result_ttl, pipeline)
