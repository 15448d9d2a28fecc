"""Jobs whose worker process is gone: failed for good, or requeued with ``acks_late``.

A job must never stay STARTED after its process died (killed, out of memory, stopped by
its hard time limit or by ``revoke(terminate=True)``). The supervisor that saw the process
die calls :func:`settle_jobs_of` with the reason; each job the worker was running is then
finished through RQ's own failure path (registries, result record, dependents, rate-limit
slot), as if the worker had done it:

* ``acks_late`` jobs with retries left are requeued at once and count one retry;
* the others fail with the reason (``WorkerLostError``, ``TimeLimitExceeded``), or are
  STOPPED (state REVOKED) when terminated on request.
"""

from __future__ import annotations

import logging
import time

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.utils import as_text, now
from rq.worker import SimpleWorker

from ..code.serialization import Serializer
from ..core import options as opts
from ..errors import TaskRevokedError
from . import events, keys
from .queue import TaskQueue
from .records import record_exception
from .rq_private import mark_stopped, worker_key
from .workflow import cancel_downstream

log = logging.getLogger("tasklab.lost")


def settle_jobs_of(connection: redis.Redis, worker_name: str, reason: BaseException) -> list[str]:
    """Fail or requeue every job the dead worker ``worker_name`` was running, and queue again the
    jobs it had taken but not started; return the ids of the first.

    A job it was running without a written start (a short task: see :class:`tasklab.engine.worker.Worker`)
    is still in its claimed list, the last one: it is settled as lost too, not queued again as if it had
    never run. The rest of a batch it held goes back to its queue."""
    _, ran = requeue_claimed(connection, worker_name, gone=True)
    worker = SimpleWorker.find_by_key(  # a SimpleWorker's kill_horse() does nothing, whatever is called
        worker_key(worker_name),
        connection=connection,
        queue_class=TaskQueue,
        serializer=Serializer,
    )
    executions = worker.get_current_executions(refresh=True) if worker is not None else []
    if worker is None or (ran is not None and executions):
        # No record to settle it with; or the worker was running a job whose start it wrote, and so
        # had never begun the one still claimed: it goes back to its queue.
        if ran is not None:
            requeue_claimed(connection, worker_name)
            ran = None
        if worker is None:
            return []
    settled = []
    if ran is not None:
        try:
            job: Job | None = Job.fetch(ran, connection=connection, serializer=Serializer)
        except NoSuchJobError:
            job = None
        if job is not None and job.get_status() == JobStatus.QUEUED and _take_claim(connection, worker_name, ran):
            job.started_at = None  # the start in Redis, if any, is an earlier attempt's
            try:
                _settle(worker, job, TaskQueue(job.origin, connection=connection), None, reason)  # type: ignore[arg-type]
            except BaseException:  # left to the next settler, as it was
                connection.rpush(keys.claimed_key(worker_name), ran)
                raise
            settled.append(job.id)
    for execution in executions:
        try:
            job = Job.fetch(execution.job_id, connection=connection, serializer=Serializer)
        except NoSuchJobError:
            continue
        if job.get_status() != JobStatus.STARTED or not _take_over(connection, job.id, execution.id):
            continue  # finished meanwhile, or settled by someone else
        queue = TaskQueue(job.origin, connection=connection)
        _settle(worker, job, queue, execution, reason)  # type: ignore[arg-type]  # found as a SimpleWorker
        settled.append(job.id)
    return settled


def unregister(connection: redis.Redis, worker_name: str) -> None:
    """Remove the record of the dead worker ``worker_name``: RQ's tools no longer list it."""
    worker = SimpleWorker.find_by_key(worker_key(worker_name), connection=connection)
    if worker is not None:
        worker.register_death()


#: KEYS[1]: a worker's claimed list; KEYS[2]: the list of the job handed to it as it waited (see
#: tasklab.engine.keys.handed_key). ARGV: job key prefix, queue key prefix (RQ's, public), and 1 if
#: the last job of the claimed list counts as run (the worker is gone: it is the one the worker was to
#: run next, and may have been running without a written start). Puts the jobs both lists hold that are
#: still queued back at the head of their queues, in the order the worker would have run them (a claim
#: pushes each job it takes to the head of the claimed list: see tasklab.engine.claim), the claimed
#: ones first, but that one, which stays claimed; drops the lists, or leaves that one alone in the
#: claimed list. Returns the ids requeued, then that one's id or false.
_REQUEUE_CLAIMED = """
local requeued = {}
local kept = false
for k = 2, 1, -1 do
    local ids = redis.call('LRANGE', KEYS[k], 0, -1)
    for i = 1, #ids do
        local job = redis.call('HMGET', ARGV[1] .. ids[i], 'status', 'origin')
        if job[1] == 'queued' and job[2] then
            if k == 1 and ARGV[3] == '1' and i == #ids then
                kept = ids[i]
            else
                redis.call('LPUSH', ARGV[2] .. job[2], ids[i])
                requeued[#requeued + 1] = ids[i]
            end
        end
    end
end
redis.call('DEL', KEYS[1], KEYS[2])
if kept then
    redis.call('RPUSH', KEYS[1], kept)  -- for a settler to come
end
return {requeued, kept}
"""


#: KEYS[1]: a job's running mark. ARGV[1]: the execution it must name. Deletes it if it does.
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def _take_over(connection: redis.Redis, job_id: str, execution_id: str) -> bool:
    """Take the job over from the worker that ran it, atomically: its running mark goes, so that the
    worker's own outcome, if it comes after all, is fenced; or, if the worker wrote it first, the
    mark is gone already and the job is left alone."""
    key = keys.running_key(job_id)
    return bool(connection.register_script(_TAKE_OVER)(keys=[key], args=[execution_id]))


def requeue_claimed(
    connection: redis.Redis, worker_name: str, why: str = "is gone", gone: bool = False, quiet: bool = False
) -> tuple[list[str], str | None]:
    """Queue again, at the head of their queues, the jobs ``worker_name`` took but never started
    (it died between the two, or took them by a call whose reply was lost), or was handed as it
    waited (see :func:`~tasklab.engine.keys.handed_key`); they never ran, so no retry is counted.
    Their ids, and, when the worker is ``gone``, the id of the job it may have been running without
    a written start (the last of its claimed list, if still queued: the first of a batch it had not
    finished), which stays in its claimed list for the caller to settle as lost with the worker
    (``None`` if none). ``quiet``: logged at DEBUG (a live worker putting back what it held), not as a
    warning."""
    script = connection.register_script(_REQUEUE_CLAIMED)
    args = [Job.redis_job_namespace_prefix, TaskQueue.redis_queue_namespace_prefix, 1 if gone else 0]
    found, ran = script(keys=[keys.claimed_key(worker_name), keys.handed_key(worker_name)], args=args)
    requeued = [as_text(i) for i in found]
    if requeued:
        level = logging.DEBUG if quiet else logging.WARNING
        log.log(level, "worker %s %s: queued again the jobs it had taken, %s", worker_name, why, ", ".join(requeued))
    return requeued, as_text(ran) if ran else None


def _take_claim(connection: redis.Redis, worker_name: str, job_id: str) -> bool:
    """Take the job ``job_id`` over from the claimed list of ``worker_name``, atomically: whoever
    removes it settles it (the worker's own finish is fenced on the same claim)."""
    return bool(connection.lrem(keys.claimed_key(worker_name), 1, job_id))


def _settle(worker: SimpleWorker, job: Job, queue: TaskQueue, execution: object | None, reason: BaseException) -> None:
    retries = int(job.meta.get(keys.META_RETRIES, 0))
    limit = job.meta.get(keys.META_ACKS_LATE)
    requeue = limit is not None and not isinstance(reason, TaskRevokedError) and (
        limit == opts.FOREVER or retries < limit
    )  # fmt: skip
    with job.connection.pipeline(transaction=False) as pipe:
        events.emit_for(
            pipe, events.REVOKED if isinstance(reason, TaskRevokedError) else events.LOST, job,
            n=retries, w=worker.name, x=type(reason).__name__, msg=str(reason)[:200],
            run=round((now() - job.started_at).total_seconds(), 6) if job.started_at else None,
            next=repr(time.time()) if requeue else None,
        )  # fmt: skip
        pipe.execute()
    if requeue:
        job.meta[keys.META_RETRIES] = retries + 1
        job.save_meta()
        job.retries_left, job.retry_intervals = 1, [0]
        log.warning("job %s lost with worker %s (%s); requeued (acks_late)", job.id, worker.name, reason)
        exc_string = f"{type(reason).__name__}: {reason}; requeued (acks_late)"
    else:
        job.retries_left = 0
        record_exception(job, reason)
        if isinstance(reason, TaskRevokedError):
            mark_stopped(worker, job.id)  # RQ then marks the job STOPPED, not FAILED
        log.warning("job %s lost with worker %s: %s", job.id, worker.name, reason)
        exc_string = f"{type(reason).__module__}.{type(reason).__qualname__}: {reason}"
    worker.handle_job_failure(job, queue, exc_string=exc_string, execution=execution)  # type: ignore[arg-type]
    if not requeue and job.meta.get(keys.META_WORKFLOW):
        cancel_downstream(job.connection, job.id)  # RQ ran no failure callback for a lost job
