"""Workflow steps on the worker's side: what follows a step that failed for good, and the
callbacks (``link``) and errbacks (``link_error``) of a task, queued by the worker that ran it.

A workflow's steps are RQ jobs linked by RQ's dependencies (see :mod:`tasklab.client.workflow`).
When a step fails for good, RQ leaves the steps after it deferred forever. tasklab cancels them
(state REVOKED, the failed job's id in their meta under :data:`META_CAUSE`) from the failed
job's RQ failure callback, in the worker, and tells whoever waits on the workflow through a
stream of failure notices. The waiting side does the same for a failure the callback cannot
see (a worker lost, a step revoked).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import redis
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus
from rq.utils import as_text

from .. import defaults
from ..code.serialization import Serializer
from . import events, keys
from .fence import owned
from .queue import TaskJob, TaskQueue
from .rq_private import take_queued_commands

log = logging.getLogger("tasklab.workflow")

#: Job meta of a workflow step: its number in submission order (from 1), and where it is ("step 2 of 3").
META_STEP = "tl_step"
META_WHERE = "tl_where"
#: Job meta of a step cancelled because a step before it failed: the failed job's id.
META_CAUSE = "tl_cause"
#: RQ's failure callback of a step that others follow (a dotted path stored with the job).
FAILURE_CALLBACK = "tasklab.engine.workflow.on_step_failure"
#: What a join job runs (a dotted path stored with the job).
JOIN = "tasklab.engine.workflow.join"
#: Job meta of a task submitted with ``link=``: its callbacks' jobs, built and signed at submit
#: (see :func:`parked`), which the worker queues in the transaction that records the task's success.
#: A callback receives the task's value as a chain step does (:data:`keys.META_PARENTS`).
META_LINKS = "tl_links"
#: Job meta of a task submitted with ``link_error=``: its errbacks, each ``("call", version, task
#: name, args, kwargs)`` for a task that takes ``(request, exc, traceback)``, called in the worker
#: (as Celery does), or ``("apply", parked job)`` for one submitted with the failed task's id, queued
#: by the worker with the failure's record.
META_ERRBACKS = "tl_errbacks"


def failures_key(workflow_id: str) -> str:
    """Stream of the ids of a workflow's steps that failed for good, written by the workers."""
    return f"tasklab:workflow:{workflow_id}:failed"


def on_step_failure(job: Job, connection: redis.Redis, *exc_info: Any) -> None:
    """RQ's failure callback of a workflow step that others follow; runs in the worker.

    Once the step has failed for good, the steps after it can never run: cancel them and tell
    whoever waits on the workflow. Never raises, since RQ would record that instead of the
    step's own failure.
    """
    if job.retries_left or not owned(job):  # another attempt follows, or the job was settled elsewhere
        return
    try:
        cancel_downstream(connection, job.id)
        workflow = job.meta.get(keys.META_WORKFLOW)
        if workflow:
            with connection.pipeline(transaction=False) as pipe:
                pipe.xadd(failures_key(workflow), {"id": job.id}, maxlen=1000, approximate=True)
                pipe.expire(failures_key(workflow), defaults.WORKFLOW_NOTICE_TTL)
                pipe.execute()
    except Exception:
        log.exception("could not cancel the workflow steps after failed job %s", job.id)


def cancel_downstream(connection: redis.Redis, job_id: str) -> list[str]:
    """Cancel every deferred job waiting, directly or through others, for ``job_id``, which failed or was
    revoked; return their ids. They become REVOKED, with ``job_id`` in their meta (:data:`META_CAUSE`)."""
    cancelled: list[str] = []
    seen, frontier = {job_id}, [job_id]
    while frontier:
        with connection.pipeline(transaction=False) as pipe:
            for parent in frontier:
                pipe.smembers(Job.dependents_key_for(parent))
            found = {as_text(i) for members in pipe.execute() for i in members} - seen
        seen |= found
        frontier = sorted(found)
        jobs = [j for j in Job.fetch_many(frontier, connection, serializer=Serializer) if j is not None]
        waiting = [j for j in jobs if j.get_status(refresh=False) == JobStatus.DEFERRED]
        with connection.pipeline() as pipe:
            for job in waiting:
                job.meta[META_CAUSE] = job_id
                pipe.hset(job.key, "meta", Serializer.dumps(job.meta))
                try:
                    if not job.has_rate_limit:
                        job.cancel(pipeline=pipe)
                except InvalidJobOperation:  # cancelled meanwhile
                    continue
                cancelled.append(job.id)
                if keys.META_TASK not in job.meta:  # a join job, not a task
                    continue
                events.emit_for(pipe, events.REVOKED, job)
            pipe.execute()
        for job in waiting:
            if job.has_rate_limit:  # RQ cancels these outside a caller's pipeline only
                with contextlib.suppress(InvalidJobOperation):
                    job.cancel()
    return cancelled


def join() -> None:
    """What a join job runs: nothing. It finishes once the jobs it depends on have finished."""


def parked(job: Job, queue_name: str, task_name: str | None) -> dict[str, Any]:
    """A job built (and signed) at submit, for a worker to queue later: its id, queue, task and hash."""
    return {"id": job.id, "queue": queue_name, "task": task_name, "fields": job.to_dict()}


def queue_parked(connection: redis.Redis, entry: dict[str, Any], pipe: Any) -> None:
    """Queue on ``pipe`` a job built at submit (see :func:`parked`), with RQ's own enqueue, and its
    SUBMITTED event."""
    fields = {k: v if isinstance(v, bytes) else v.encode() if isinstance(v, str) else str(v).encode()
              for k, v in entry["fields"].items()}  # fmt: skip  # as redis-py writes them (a JobStatus is a str)
    job = TaskJob(entry["id"], connection=connection, serializer=Serializer)
    job.restore(fields)
    queue = TaskQueue(entry["queue"], connection=connection)
    # RQ's enqueue wants a pipeline it can put in MULTI mode itself, which ``pipe`` (a transaction
    # already under way) cannot be: its writes are made on one of their own, then moved over.
    with connection.pipeline() as staged:
        queue.enqueue_job(job, pipeline=staged)
        for args, options in take_queued_commands(staged):
            pipe.execute_command(*args, **options)
    events.emit_for(pipe, events.SUBMITTED, job, q=queue.name, v=job.meta.get(keys.META_VERSION))


def callback_writes(job: Job, pipe: Any, succeeded: bool) -> None:
    """Queue on ``pipe`` what follows ``job``'s final outcome: its callbacks after a success, its
    submitted errbacks after a failure (those called in the worker are not here)."""
    if succeeded:
        for entry in job.meta.get(META_LINKS) or ():
            queue_parked(job.connection, entry, pipe)
        return
    for errback in job.meta.get(META_ERRBACKS) or ():
        if errback[0] == "apply":
            queue_parked(job.connection, errback[1], pipe)


def has_callbacks(job: Job) -> bool:
    """Whether ``job`` has callbacks or errbacks (its outcome's writes then go in one transaction)."""
    return bool(job.meta.get(META_LINKS) or job.meta.get(META_ERRBACKS))
