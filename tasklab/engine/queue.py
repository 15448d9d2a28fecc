"""tasklab's RQ queue: RQ's ``Queue`` with tasklab's serializer and sub-second scheduling.

Jobs it creates are ordinary RQ jobs; any RQ tool can list, inspect and cancel them.

RQ scores scheduled jobs in whole seconds and compares them with the current whole second,
so a job due in 0.5 s may run at once and one due in 1.2 s may run after 1.0 s. tasklab
schedules with float scores (:class:`PreciseScheduledJobRegistry`). Jobs scheduled by plain
RQ still run as RQ intends.
"""

from __future__ import annotations

import functools
import time
from datetime import datetime, timezone
from typing import Any

from redis.client import Pipeline
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import resolve_serializer

from .. import defaults
from ..code.serialization import Serializer
from ..errors import ConfigurationError
from . import events
from .transaction import Script, call

#: KEYS: the registry, the scheduler lock of its queue. ARGV: now, most ids, the scheduler holding
#: the lock, seconds of the claim. The due ids, each moved the claim's length ahead; none unless the
#: lock is still held by that scheduler.
_CLAIM_DUE = """
if redis.call('GET', KEYS[2]) ~= ARGV[3] then
    return {}
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[4]), id)
end
return ids
"""


class PreciseScheduledJobRegistry(ScheduledJobRegistry):
    """RQ's scheduled-job registry, scored by float timestamps. Given the scheduler that holds its
    queue's lock (:attr:`holder`), the scheduler's read of the due jobs claims them (see
    :data:`~tasklab.defaults.SCHEDULER_CLAIM`); RQ's scheduler removes them as it queues them."""

    #: The name of the scheduler reading due jobs, and its queue's lock key.
    holder: tuple[str, str] | None = None

    def schedule(self, job: Job, scheduled_datetime: datetime, pipeline: Pipeline | None = None) -> int:
        if scheduled_datetime.tzinfo is None:
            scheduled_datetime = scheduled_datetime.astimezone(timezone.utc)
        connection = pipeline if pipeline is not None else self.connection
        return connection.zadd(self.key, {job.id: scheduled_datetime.timestamp()})

    def get_jobs_to_schedule(self, timestamp: int | None = None, chunk_size: int = 1000) -> list[str]:
        # RQ passes the current whole second; the float clock is never earlier than it.
        now = max(float(timestamp or 0), time.time())
        if self.holder is None:
            return [jid.decode() for jid in self.connection.zrangebyscore(self.key, 0, now, start=0, num=chunk_size)]
        name, lock_key = self.holder
        script = self.connection.register_script(_CLAIM_DUE)
        ids = script(keys=[self.key, lock_key], args=[repr(now), chunk_size, name, defaults.SCHEDULER_CLAIM])
        return [jid.decode() for jid in ids]


#: Queue a batch of jobs that differ only in id, payload and description, as RQ's enqueue of each
#: would (its hash, the queue, RQ's set of queues), with one SUBMITTED event for all (the other ids
#: in its ``more`` field: see tasklab.engine.events.MORE) and one count. KEYS: the queue, RQ's set
#: of queues, the event stream, the namespace's counts.
#: ARGV: the job key prefix, the stream's length, the count's field, the number of the template's
#: (field, value) pairs and the pairs, the event's stream field and its record before its first id
#: and after it (up to its last field, ``more``), then each job's id, payload and description. Replies with the number
#: of jobs queued.
_ENQUEUE_BATCH = Script("""
local prefix, maxlen, counter = ARGV[1], ARGV[2], ARGV[3]
local i = 4
local function pairs_from()
    local n = tonumber(ARGV[i])
    local list = {}
    for j = i + 1, i + 2 * n do
        list[#list + 1] = ARGV[j]
    end
    i = i + 2 * n + 1
    return list
end
local fields = pairs_from()
local record, head, tail = ARGV[i], ARGV[i + 1], ARGV[i + 2]
i = i + 3
local f = #fields
fields[f + 1], fields[f + 3] = 'data', 'description'
local ids = {}
while i <= #ARGV do
    local id = ARGV[i]
    fields[f + 2], fields[f + 4] = ARGV[i + 1], ARGV[i + 2]
    redis.call('HSET', prefix .. id, unpack(fields))
    ids[#ids + 1] = id
    i = i + 3
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', record, head .. ids[1] .. tail .. table.concat(ids, ' ', 2))
redis.call('SADD', KEYS[2], KEYS[1])
for first = 1, #ids, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(ids, first, math.min(first + 999, #ids)))
end
redis.call('HINCRBY', KEYS[4], counter, #ids)
return #ids
""")


_serializers: dict[Any, Any] = {}


def resolved_serializer(serializer: Any) -> Any:
    """RQ's ``resolve_serializer(serializer)``, checked once per serializer."""
    try:
        return _serializers[serializer]
    except KeyError:
        resolved = _serializers[serializer] = resolve_serializer(serializer)
        return resolved
    except TypeError:  # not hashable
        return resolve_serializer(serializer)


class TaskJob(Job):
    """RQ's job, its serializer checked once per serializer: RQ checks it against a ``typing.Protocol``
    for every job it makes, which costs more than the rest of a submit's Python before Python 3.12."""

    def __init__(self, id: str | None = None, connection: Any = None, serializer: Any = None) -> None:
        super().__init__(id, connection)  # RQ's default serializer: nothing to check
        self.serializer = resolved_serializer(serializer)


class TaskQueue(Queue):
    def __init__(self, name: str = "default", **kwargs: object):
        kwargs.setdefault("serializer", Serializer)
        kwargs.setdefault("job_class", TaskJob)
        super().__init__(name, **kwargs)  # type: ignore[arg-type]

    @functools.cached_property
    def started_job_registry(self) -> StartedJobRegistry:
        """RQ's, built once: a worker uses it twice for every job."""
        return super().started_job_registry

    @property
    def scheduled_job_registry(self) -> PreciseScheduledJobRegistry:
        return PreciseScheduledJobRegistry(queue=self, job_class=self.job_class, serializer=self.serializer)

    def enqueue_ready_jobs_by_queue(self, job_ids_by_queue_name: dict[str, list[str]]) -> None:
        """Queue dependents whose dependencies are met, retrying the ones RQ skipped.

        RQ moves each such job to the ready registry, then queues it under WATCH, and skips a
        job when another worker touched the registry at the same moment, leaving it to
        maintenance (minutes later). With many workflows finishing at once that is common, so
        the skipped ones are tried again here, briefly, until none is left ready.
        """
        pending = job_ids_by_queue_name
        for attempt in range(defaults.READY_ATTEMPTS):
            super().enqueue_ready_jobs_by_queue(pending)
            pending = self._still_ready(pending)
            if not pending:
                return
            time.sleep(0.001 * 2**attempt)  # back off from the concurrent writer, then retry
        self.log.warning("ready jobs %s left for RQ's maintenance to queue", pending)

    def _still_ready(self, job_ids_by_queue_name: dict[str, list[str]]) -> dict[str, list[str]]:
        ids = [job_id for job_ids in job_ids_by_queue_name.values() for job_id in job_ids]
        if not ids:
            return {}
        with self.connection.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(self.job_class.key_for(job_id), "status")
            statuses = dict(zip(ids, pipe.execute(), strict=True))
        still = {}
        for queue_name, job_ids in job_ids_by_queue_name.items():
            left = [i for i in job_ids if statuses[i] == JobStatus.READY_TO_ENQUEUE.value.encode()]
            if left:
                still[queue_name] = left
        return still

    def enqueue_batch(
        self, fields: dict[str, Any], jobs: list[tuple[str, bytes, str]], *, task: str, namespace: str, version: str
    ) -> None:
        """Queue ``jobs``, each ``(id, payload, description)``, with the rest of their hash taken from
        ``fields`` (:func:`tasklab.engine.rq_private.queued_fields`): what RQ's enqueue of each writes,
        and tasklab's SUBMITTED event of the batch, in one atomic script call."""
        if not jobs:
            return
        # The event's record with an empty id, and its last field, the batch's other ids, left open.
        head = events.SUBMITTED + events.SEPARATOR
        tail = events.record(events.SUBMITTED, "", task, namespace, time.time(), {"q": self.name, "v": version},
                             full=True)  # fmt: skip
        if not tail.startswith(head) or not tail.endswith(events.SEPARATOR):
            raise ValueError("A SUBMITTED record begins with its kind and ends with its batch's ids.")
        args: list[Any] = [4, self.key, self.redis_queues_keys, events.STREAM, events.counts_key(namespace)]
        args += [self.job_class.redis_job_namespace_prefix, defaults.EVENTS_MAXLEN, f"{task}|{events.SUBMITTED}"]
        args.append(len(fields))
        for item in fields.items():
            args.extend(item)
        args += [events.RECORD, head, tail[len(head) :]]
        for job in jobs:
            args.extend(job)
        call(self.connection, _ENQUEUE_BATCH, args)

    def schedule_job(self, job: Job, datetime: datetime, pipeline: Pipeline | None = None, unique: bool = False) -> Job:
        """Put ``job`` in the scheduled registry, due at ``datetime`` to the sub-second."""
        if unique:
            raise ConfigurationError("tasklab schedules jobs by id; unique=True is not supported here.")
        pipe = pipeline if pipeline is not None else self.connection.pipeline()
        pipe.sadd(self.redis_queues_keys, self.key)
        job.set_status(JobStatus.SCHEDULED, pipeline=pipe)  # what RQ's (private) _persist_job does
        job.save(pipeline=pipe)
        job.cleanup(ttl=job.ttl, pipeline=pipe)
        self.scheduled_job_registry.schedule(job, datetime, pipeline=pipe)
        if pipeline is None:
            pipe.execute()
        return job
