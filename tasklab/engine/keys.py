"""Redis keys and job-meta fields that tasklab adds next to RQ's own records."""

from __future__ import annotations

#: Job meta fields: which task and code version a job runs, and how often it was retried.
META_NAMESPACE = "tl_ns"
META_TASK = "tl_task"
META_VERSION = "tl_v"
META_RETRIES = "tl_retries"
#: Workflows: the job ids whose results a job receives as its first argument, and how:
#: "one" prepends the single parent's value (a chain step), "list" the list of values, in
#: order (a chord's callback). Absent for immutable signatures.
META_PARENTS = "tl_parents"
META_MERGE = "tl_merge"
#: Workflows: the id of the workflow (chain, group, chord) a job belongs to.
META_WORKFLOW = "tl_workflow"
#: Why a job waits although it is due: "rate_limit" while its rate-limit slot comes.
META_HELD = "tl_held"
#: When a job not started by then is revoked instead of run (``expires``; a float timestamp).
META_EXPIRES = "tl_expires"
#: For a callback or errback given ``expires`` in seconds: counted from when it is applied (queued by
#: the worker, RQ's ``enqueued_at``), as Celery counts it, not from the submit of the task it follows.
META_EXPIRES_AFTER = "tl_expires_after"
#: With acks_late: how many times a job lost with its worker is requeued (its max_retries).
META_ACKS_LATE = "tl_acks_late"
#: Field of a worker's RQ record: when its current job's hard time limit runs out (epoch s).
WORKER_DEADLINE = "tl_deadline"
#: Set of job ids whose running attempt should be terminated (revoke(terminate=True)).
TERMINATE_KEY = "tasklab:terminate"
#: Per-job time limits in seconds, resolved at submit (call, then task, then lab options).
META_TIME_LIMIT = "tl_time_limit"
META_SOFT_TIME_LIMIT = "tl_soft_time_limit"


def claimed_key(worker_name: str) -> str:
    """List: the ids of the jobs ``worker_name`` took from a queue and has not started yet. A job
    moves into it from its queue in one step (or from the list of the job handed to the worker as it
    waited: :func:`handed_key`), and out of it in the transaction that starts it, so a job is always
    queued, handed to or claimed by a worker, or started by one (RQ's execution records).

    A claim pushes each job it takes to the head of the list (a batch, from a deep queue: see
    :data:`~tasklab.defaults.CLAIM_BATCH`), and the worker runs them in that order, so the last one is
    always the job the worker runs next, or may be running with its start unwritten (see
    :class:`tasklab.engine.worker.Worker`): whoever settles the worker's jobs (it died, or its lease ran
    out) counts that one, if still claimed and queued, as lost with the worker rather than never
    started, and queues the others again."""
    return f"tasklab:claimed:{worker_name}"


def handed_key(worker_name: str) -> str:
    """List: the job Redis handed to ``worker_name`` while it waited for one (BLMOVE), until the
    worker reads the reply and moves it into its claimed list. Whoever settles the worker's
    jobs queues it again: the worker never saw it, so it never ran it. (A worker frozen in its wait
    and settled meanwhile finds it gone when it wakes, and does not run it.)"""
    return f"tasklab:handed:{worker_name}"


def running_key(job_id: str) -> str:
    """String: the RQ execution id of the worker running the job, from its start until its outcome is
    written; whoever settles the job instead deletes it first, so the worker's late writes are
    fenced (see :data:`tasklab.engine.transaction.FENCE`). It has no TTL: a long task keeps it."""
    return f"tasklab:running:{job_id}"


def output_key(job_id: str) -> str:
    """Hash: attempt number -> what that attempt printed; and :data:`OUTPUT_HOOKS_PENDING`."""
    return f"tasklab:job:{job_id}:output"


#: The field of :func:`output_key` naming the attempt whose success hooks run after its result was
#: stored, and when it was stored (``"<attempt> <timestamp>"``): what they print is added to that
#: attempt's output, and the field deleted, when they end.
OUTPUT_HOOKS_PENDING = "hooks"


def exception_key(job_id: str) -> str:
    """Hash: the final exception's type, message and pickled form."""
    return f"tasklab:job:{job_id}:exc"


def report_key(job_id: str) -> str:
    """String: the state and meta a running task last reported (``self.update_state``), signed and
    pickled (see :mod:`tasklab.engine.reports`)."""
    return f"tasklab:job:{job_id}:report"
