"""Workflow steps on the worker's side: what follows a step that failed for good.

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
