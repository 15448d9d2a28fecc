"""What a worker does about jobs settled without it: its part of the fencing.

Whoever settles a job because its worker's lease ran out deletes the job's running mark first
(:mod:`tasklab.engine.fence`); the worker's finish transaction is fenced on that mark, and its start
on its claim (:mod:`tasklab.engine.transaction`). :class:`FencingWorker` handles what follows in the
worker: RQ's failure path and job start when fenced, the duplicate outcome recorded, and the renewal
of the running job's RQ execution record by the lease thread, which a long task would outlive.
"""

from __future__ import annotations

from redis.client import Pipeline
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.worker import WorkerStatus

from . import events
from .execution import attempt_of, forget_finish_writes
from .fence import owned
from .keys import running_key
from .lean_worker import LeanWorker
from .rq_private import executions_key, renew_execution
from .transaction import Fenced


class FencingWorker(LeanWorker):
    """See the module's text. :class:`tasklab.engine.worker.Worker` sets :attr:`running`."""

    #: The running job's RQ execution, its started registry and TTL, renewed by the lease thread.
    running: tuple[Execution, StartedJobRegistry, int] | None = None

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: StartedJobRegistry | None = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        """RQ's failure path, unless the job was settled while it ran (see :meth:`_fenced`). While
        Redis does not answer, the worker holds the outcome until it does, and then writes it once:
        RQ's path changes the job as it goes (its retries), so it is not tried twice; if Redis goes
        away again meanwhile, the worker stops and its lease settles the job."""
        self.wait_for_redis(f"it records the outcome of job {job.id}")
        if execution is not None and not owned(job):
            self._fenced(job, "FAILURE")
            return
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
        self.connection.delete(running_key(job.id))
        self.running = None

    def execute_job(self, job: Job, queue: Queue) -> None:
        """RQ's SimpleWorker's, unless the job was queued again before it could start (see
        :meth:`prepare_execution`): another worker runs it, and this one goes on."""
        try:
            execution = self.prepare_execution(job)
        except Fenced:  # recorded by _start_fenced
            return
        self.perform_job(job, queue, execution)
        self.set_state(WorkerStatus.IDLE)

    def _start_fenced(self, job: Job) -> None:
        self.log.warning(
            "Worker %s: job %s was queued again while this worker held it (its lease ran out); it does not run "
            "it here", self.name, job.id,
        )  # fmt: skip
        job._tl_start_fenced = True  # type: ignore[attr-defined]
        forget_finish_writes(job)
        self.executions.clear()
        self.running = None
        self.set_state(WorkerStatus.IDLE)

    def extend_running(self, pipe: Pipeline) -> bool:
        """Queue on ``pipe`` the renewal of the running job's RQ execution record (its TTL is the
        worker's heartbeat TTL, which a long task would outlive); whether there was one. Called by
        the lease thread at every renewal."""
        running = self.running
        if running is None:
            return False
        execution, registry, ttl = running
        renew_execution(pipe, execution, registry, ttl)
        # The worker's record and its executions set, which RQ's heartbeat renews between jobs only:
        # a task longer than their TTL would leave a live worker unlisted (and its job unsettled if it died).
        keep = max(ttl, self.worker_ttl + 60)
        pipe.expire(self.key, keep)
        pipe.expire(executions_key(self.name), keep)
        return True

    def _fenced(self, job: Job, outcome: str) -> None:
        """The job this worker ran was settled meanwhile, by whoever found this worker's lease run
        out (a freeze, a lost link to Redis): the first outcome stands. This one goes to the history
        as a duplicate, and the worker goes on with its next job."""
        self.log.warning(
            "Worker %s: job %s was settled while this worker ran it (its lease ran out); its %s here is "
            "recorded as a duplicate, the first outcome stands",
            self.name, job.id, outcome,
        )  # fmt: skip
        self.executions.clear()
        self.running = None
        if getattr(job, "_tl_start_fenced", False):  # it never started here: nothing to record
            return
        forget_finish_writes(job)
        with self.connection.pipeline(transaction=False) as pipe:
            events.emit_for(pipe, events.DUPLICATE, job, n=attempt_of(job), w=self.name, x=outcome)
            pipe.execute()
