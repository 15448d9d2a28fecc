"""The one room where tasklab touches RQ's (and redis-py's) internals.

RQ's private names and the layout of its keys are a contract RQ never promised. Every use
tasklab makes of them is here, each with the reason it has no public road; the rest of
tasklab uses RQ's public API (``Queue.create_job(on_failure=...)``,
``ScheduledJobRegistry.get_scheduled_time``, the key properties of queues, registries and
workers). They were checked against the RQ versions in :data:`CHECKED`; importing this module
with another RQ raises :class:`~tasklab.errors.ConfigurationError` (see :func:`check_rq_version`),
and ``tests/test_rq_private.py`` pins the range.
"""

from __future__ import annotations

import calendar
import contextlib
import datetime
import os
import random
import re
import time
import zlib
from base64 import b64encode
from collections.abc import Iterator
from typing import Any

import rq
from redis.client import Pipeline
from rq import job as rq_job
from rq import worker_registration
from rq.defaults import UNSERIALIZABLE_RETURN_VALUE_PAYLOAD
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution, ExecutionRegistry
from rq.job import Job
from rq.registry import FinishedJobRegistry
from rq.results import Result
from rq.scheduler import RQScheduler
from rq.utils import now, parse_composite_key, utcformat
from rq.worker import BaseWorker

from .. import defaults
from ..errors import ConfigurationError

#: RQ releases whose internals this module was read against.
CHECKED = ("3.0.0",)
#: The (major, minor) releases of RQ tasklab runs on: those of :data:`CHECKED`.
SUPPORTED = frozenset({(3, 0)})


def check_rq_version(version: str = rq.VERSION) -> None:
    """Raise :class:`ConfigurationError` unless ``version`` is a release of :data:`SUPPORTED`."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None or (int(match.group(1)), int(match.group(2))) not in SUPPORTED:
        wanted = " or ".join(f"{major}.{minor}.x" for major, minor in sorted(SUPPORTED))
        raise ConfigurationError(
            f"tasklab runs on RQ {wanted}, whose internals it was checked against, but RQ {version} is installed. "
            f"Install a supported release: pip install 'rq>=3.0,<3.1'."
        )


check_rq_version()


# -- workers ------------------------------------------------------------------------------


class _SmallStaysPlain:
    """What ``rq.job`` calls ``zlib``: RQ compresses every job's payload and exception text when it
    writes a job's hash, and reads back either form (it falls back to the bytes as stored when they
    are no zlib stream). A payload of a few hundred bytes compresses to about its own size, at
    about 10 µs a job, the most expensive step of a submit; twice that with a signature's 32 random
    bytes. Below :data:`~tasklab.defaults.COMPRESS_FROM` bytes, they are stored as they are. No
    public setting exists (RQ 3.0's ``Job.to_dict`` calls ``zlib.compress`` directly)."""

    error = zlib.error
    decompress = staticmethod(zlib.decompress)

    @staticmethod
    def compress(data: bytes, /, level: int = -1) -> bytes:
        return data if len(data) < defaults.COMPRESS_FROM else zlib.compress(data, level)


def compressed_payload(data: bytes) -> bytes:
    """A job's payload as RQ's ``Job.to_dict`` stores it (see :class:`_SmallStaysPlain`)."""
    return rq_job.zlib.compress(data)


def queued_fields(queue: Any, func: str, **options: Any) -> dict[str, Any]:
    """The hash RQ's enqueue writes for a job of ``func`` with ``options`` (``Queue.create_job``'s),
    made by RQ's own ``Job.to_dict``, without its ``data`` and ``description``: the jobs of a batch
    differ in those and their ids only (see :meth:`tasklab.engine.queue.TaskQueue.enqueue_batch`)."""
    job = queue.create_job(func, args=(), kwargs={}, description="", **options)
    job.origin = queue.name  # what RQ's (private) Queue._prepare_for_queue sets
    job.enqueued_at = job.created_at
    job._status = rq_job.JobStatus.QUEUED
    # RQ reads every field with a default, and writes a job's empty fields (its start, end,
    # worker, callbacks) as '': left out here, they cost a queued job neither memory nor time.
    return {key: value for key, value in job.to_dict().items() if value != "" and key not in ("data", "description")}


def store_small_payloads_plainly() -> None:
    """Make RQ store small job payloads as they are (see :class:`_SmallStaysPlain`); done at import."""
    rq_job.zlib = _SmallStaysPlain  # type: ignore[assignment]


def set_state_locally(worker: BaseWorker, state: str) -> None:
    """Record ``state`` in the worker object only. RQ's ``set_state`` always writes the worker
    hash; tasklab writes it only when it changed, or inside a transaction of its own."""
    worker._state = state


def ordered_queues(worker: BaseWorker) -> list[Any]:
    """The worker's queues in the order its dequeue strategy takes them; RQ keeps no public view."""
    return list(worker._ordered_queues)


def mark_stopped(worker: BaseWorker, job_id: str) -> None:
    """Make RQ's ``handle_job_failure`` record ``job_id`` STOPPED (revoked), not FAILED. The public
    ``request_stop_execution`` also kills the worker's work horse, which a supervisor settling a
    dead worker's job must not do."""
    worker._stopped_job_id = job_id


def state_write(pipe: Pipeline, worker: BaseWorker, state: str) -> None:
    """Queue on ``pipe`` what RQ's ``set_state`` writes (the worker hash's ``state`` field), so
    that it rides in a transaction of tasklab's own."""
    pipe.hset(worker.key, "state", state)


def executions_key(worker_name: str) -> str:
    """The set of the running executions of ``worker_name`` (RQ's key, built by RQ's template)."""
    return WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name)


def job_id_of_execution(member: bytes | str) -> str:
    """The job id of a member of an executions set (``<job id>:<execution id>``)."""
    return parse_composite_key(member.decode() if isinstance(member, bytes) else member)[0]


def renew_execution(pipe: Pipeline, execution: Any, started_registry: Any, ttl: int) -> None:
    """Queue on ``pipe`` what RQ's ``Execution.heartbeat`` renews (the record's TTL, its place in
    the job's registries), without re-creating anything already deleted: RQ's writes a field into
    the record, which would bring back the record of an execution that just ended."""
    pipe.expire(execution.key, ttl)
    started_registry.add_execution(execution, ttl=ttl, pipeline=pipe, xx=True)
    ExecutionRegistry(job_id=execution.job_id, connection=pipe).add(
        execution=execution, ttl=ttl, pipeline=pipe, xx=True
    )


def uncount_failed_job(pipe: Pipeline, worker_name: str) -> None:
    """Queue on ``pipe`` the undoing of the failed job RQ's failure path counts for ``worker_name``
    (``failed_job_count`` of its hash), for a job the runtime puts back through that path without
    failing it (a rate-limit hold); RQ offers no public way to count it otherwise."""
    pipe.hincrby(worker_key(worker_name), "failed_job_count", -1)


def worker_key(worker_name: str) -> str:
    """The hash of the worker called ``worker_name``: RQ 3 has no ``key_for`` for workers."""
    return BaseWorker.redis_worker_namespace_prefix + worker_name


# -- jobs ---------------------------------------------------------------------------------


#: Execution ids' own generator: a task that seeds ``random`` does not make them repeat. Seeded from the
#: operating system's randomness, here and again in a forked child.
_execution_ids = random.Random()
os.register_at_fork(after_in_child=_execution_ids.seed)


def execution_id() -> str:
    """A new execution's id: 32 random hex digits, as RQ's ``uuid4().hex``, which costs a system call for the
    operating system's randomness each time (an id needs only to be unique)."""
    return f"{_execution_ids.getrandbits(128):032x}"


def new_execution(job: Job, worker_name: str) -> Execution:
    """An RQ execution of ``job`` by ``worker_name``, starting now, as ``Execution.create`` makes it,
    but not yet written (see :func:`start_execution`)."""
    started = now()
    execution = Execution(execution_id(), job.id, job.connection, worker_name)
    execution._job = job
    execution.created_at = execution.last_heartbeat = started
    return execution


def start_execution(
    job: Job, ttl: int, pipeline: Pipeline, worker_name: str, execution: Execution | None = None
) -> Execution:
    """Queue on ``pipeline`` what ``Execution.create(job, ttl, pipeline, worker_name)`` and then
    ``job.prepare_for_execution(worker_name, pipeline)`` write, as the same commands (``ttl`` >= 0),
    with a tenth of their Python: a worker starts every job with it. The execution is returned, and
    the job's fields set, as RQ's would be. ``tests/test_rq_private.py`` compares the two. Given an
    ``execution`` from :func:`new_execution`, that one is written, with its start time."""
    if execution is None:
        execution = new_execution(job, worker_name)
    started = execution.created_at
    seconds, score = started.timestamp(), calendar.timegm(started.utctimetuple()) + ttl
    composite = f"{job.id}:{execution.id}"
    key = execution.key
    command = pipeline.execute_command
    command("HSET", key, "id", execution.id, "job_id", job.id, "created_at", seconds, "last_heartbeat", seconds,
            "worker_name", worker_name)  # fmt: skip
    command("EXPIRE", key, ttl)
    executions = ExecutionRegistry.key_template.format(job.id)
    command("ZADD", executions, score + 60, execution.id)
    command("EXPIRE", executions, ttl + 60)
    command("ZADD", job.started_job_registry.key, score, composite)
    if worker_name:
        workers = WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name)
        command("SADD", workers, composite)
        command("EXPIRE", workers, ttl + 60)
    stamp = utc_stamp(started)
    job.worker_name, job.last_heartbeat, job.started_at = worker_name, started, started
    job._status = rq_job.JobStatus.STARTED
    command("HSET", job.key, "last_heartbeat", stamp, "status", job._status, "started_at", stamp,
            "worker_name", worker_name)  # fmt: skip
    return execution


def utc_stamp(value: datetime.datetime) -> str:
    """RQ's ``utcformat(value)`` (``2026-11-22T10:00:00.123456Z``), from ``isoformat``: ``strftime`` takes
    several times longer, twice on each job a worker finishes."""
    if value.year < 1000:  # strftime does not pad the year to four digits
        return utcformat(value)
    return value.isoformat(timespec="microseconds")[:26] + "Z"


def save_success(
    job: Job, return_value: Any, ttl: int | None, pipeline: Pipeline, worker_name: str = "",
    execution_id: str | None = None, started_at: Any = None, ended_at: Any = None,
) -> None:  # fmt: skip
    """Queue on ``pipeline`` what ``Result(type=SUCCESSFUL, ...).save(ttl, pipeline)`` writes for ``job``
    (its result stream's entry and TTL), as the same commands, with less Python; RQ also signs a
    ``None`` return value it then leaves out. ``tests/test_rq_private.py`` compares the two."""
    data: list[Any] = ["type", Result.Type.SUCCESSFUL.value, "worker_name", worker_name]
    if return_value is not None:
        try:
            serialized = job.serializer.dumps(return_value)
        except Exception:
            serialized = job.serializer.dumps(UNSERIALIZABLE_RETURN_VALUE_PAYLOAD)
        data += ["return_value", b64encode(serialized).decode()]
    if execution_id:
        data += ["execution_id", execution_id]
    if started_at:
        data += ["execution_started_at", started_at.timestamp()]
    if ended_at:
        data += ["execution_ended_at", ended_at.timestamp()]
    key = Result.get_key(job.id)
    pipeline.execute_command("XADD", key, "MAXLEN", "~", 10, "*", *data)
    if ttl is not None:
        if ttl == -1:
            pipeline.execute_command("PERSIST", key)
        else:
            pipeline.execute_command("EXPIRE", key, ttl)


def add_finished(job: Job, ttl: int, pipeline: Pipeline) -> None:
    """Queue on ``pipeline`` what ``FinishedJobRegistry.add(job, ttl)`` writes (its ``ZADD``, by RQ's key layout),
    without building the registry object on each job. ``tests/test_rq_private.py`` compares the two."""
    score: int | str = ttl if ttl < 0 else int(time.time()) + ttl
    pipeline.execute_command("ZADD", FinishedJobRegistry.key_template.format(job.origin),
                             "+inf" if score == -1 else score, job.id)  # fmt: skip


def end_execution(job: Job, execution: Execution, pipeline: Pipeline) -> None:
    """Queue on ``pipeline`` what RQ's ``cleanup_execution`` (``Execution.delete``) writes, as the same
    commands; the caller forgets the execution. ``tests/test_rq_private.py`` compares the two."""
    command = pipeline.execute_command
    command("DEL", execution.key)
    command("ZREM", job.started_job_registry.key, execution.composite_key)
    command("ZREM", ExecutionRegistry.key_template.format(execution.job_id), execution.id)
    if execution.worker_name:
        command("SREM", WORKER_EXECUTIONS_KEY_TEMPLATE.format(execution.worker_name), execution.composite_key)


@contextlib.contextmanager
def current_job(job: Job) -> Iterator[None]:
    """Make ``job`` what ``rq.get_current_job()`` returns meanwhile, as while RQ performs it (RQ
    sets its private context variable only around ``Job.perform``)."""
    token = rq_job._current_job.set(job)
    try:
        yield
    finally:
        rq_job._current_job.reset(token)


def depends_on_others(job: Job) -> bool:
    """Whether ``job`` was made with dependencies (RQ's public ``dependency_ids`` reads Redis)."""
    return bool(job._dependency_ids)


def handle_success(job: Job, result_ttl: int, pipeline: Pipeline, **execution: Any) -> None:
    """RQ's own writes for a job that succeeded (status, result, finished registry), on ``pipeline``.
    Public RQ does them only inside its worker's own transaction, which tasklab's replaces."""
    job._handle_success(result_ttl, pipeline=pipeline, **execution)


def return_value(job: Job) -> Any:
    """The value a job's function returned, before it is written: RQ keeps it only in memory."""
    return job._result


# -- the scheduler ------------------------------------------------------------------------


def set_acquired_locks(scheduler: RQScheduler, names: set[str]) -> None:
    """Record the queues whose scheduler lock ``scheduler`` holds: tasklab takes the locks itself,
    with a TTL of seconds, where RQ's ``acquire_locks`` and ``heartbeat`` always give a minute."""
    scheduler._acquired_locks = set(names)


def use_scheduled_registries(scheduler: RQScheduler, registries: list[Any]) -> None:
    """Make ``scheduler`` enqueue from ``registries`` (tasklab's float-scored ones): RQ's
    ``prepare_registries`` builds its own class with no hook for another."""
    scheduler._scheduled_job_registries = registries


# -- redis-py pipelines -------------------------------------------------------------------


def queued_commands(pipe: Pipeline) -> list[tuple]:
    """The commands queued on a redis-py pipeline, as tuples of arguments. redis-py keeps them
    in ``command_stack`` and offers no public view; tasklab sends them as one script call."""
    return [command for command, _options in pipe.command_stack]


def take_queued_commands(pipe: Pipeline) -> list[tuple[tuple, dict]]:
    """Remove and return the commands (with their options) queued on ``pipe``, keeping it usable:
    ``reset()`` would also unwatch and give its connection back."""
    queued, pipe.command_stack = list(pipe.command_stack), []
    return queued


def is_watching(pipe: Pipeline) -> bool:
    """Whether ``pipe`` WATCHes keys (then only redis-py's MULTI/EXEC on its connection honours them)."""
    return bool(pipe.watching)


def workers_of_queue_key(queue_name: str) -> str:
    """RQ's set of the names of the workers that serve ``queue_name``."""
    return worker_registration.WORKERS_BY_QUEUE_KEY % queue_name


store_small_payloads_plainly()
