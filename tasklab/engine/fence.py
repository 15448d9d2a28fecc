"""Whether a worker still owns the job it runs: the job's running mark
(:func:`tasklab.engine.keys.running_key`), set by tasklab's worker when the job starts, names that
worker's execution until the outcome is written; whoever settles the job instead (the worker's
lease ran out) deletes it first. What the worker would write after that is fenced."""

from __future__ import annotations

from rq.job import Job


def owned(job: Job) -> bool:
    """Whether the worker running ``job`` still owns it: its running mark (set by tasklab's worker
    at the start, named in ``job._tl_running``) is gone once someone settled the job because the
    worker's lease ran out. The attempt's outcome is then not recorded over the settled one."""
    running = getattr(job, "_tl_running", None)
    if running is None:  # another RQ worker: no leases, no fence
        return True
    key, execution_id = running
    return bool(job.connection.get(key) == execution_id.encode())
