"""tasklab's RQ worker: long-lived, running every job in the worker process itself.

It is RQ's :class:`~rq.worker.SimpleWorker` (no fork per job, so a task's per-process state,
such as an open database connection, survives from one job to the next), plus:

* a fast path through RQ's bookkeeping: the same keys, records and transitions as RQ's, in
  two round trips to Redis per job instead of about twenty (see :class:`Worker`);
* RQ's scheduler run in a thread instead of a forked process, so delayed and retried jobs
  are enqueued and no process is left behind when the worker dies.

Worker processes (see :mod:`tasklab.local.worker_process`) are started by a
:class:`~tasklab.local.pool.WorkerPool`, locally by a lab or on any machine by
``tasklab worker --url URL``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import redis
from redis.client import Pipeline
from redis.connection import AbstractConnection
from rq.executions import Execution
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.logutils import blue, green
from rq.queue import Queue
from rq.rate_limit import release_slot
from rq.registry import StartedJobRegistry
from rq.suspension import WORKERS_SUSPENDED
from rq.utils import as_text, now
from rq.worker import SimpleWorker, WorkerStatus

from .. import defaults
from .execution import defer_finish_writes, finish_writes, start_writes
from .scheduler import SchedulerThread
from .transaction import (
    RUN_COMMANDS_LUA,
    Script,
    checked,
    commands_of,
    execute_plainly,
    fits,
    flatten,
    raise_first_error,
)
from .worker_job import WorkerJob

log = logging.getLogger("tasklab.worker")

# Take the first waiting job and read its hash. As RQ's dequeue_any: a worker of one queue
# moves the job to that queue's intermediate list (RQ's LMOVE), one of several queues pops the
# first non-empty queue in order (RQ's LPOP). A job whose hash is gone comes back with no
# fields, and the caller takes the next one, as RQ does. Given the suspension key, it takes
# nothing while workers are suspended (RQ checks before dequeuing).
_POP_JOB_LUA = """
local function pop_job(queue_keys, move, job_prefix, suspension_key)
    if suspension_key ~= '' and redis.call('EXISTS', suspension_key) == 1 then
        return false
    end
    for _, queue_key in ipairs(queue_keys) do
        local job_id
        if move == '1' then
            job_id = redis.call('LMOVE', queue_key, queue_key .. ':intermediate', 'LEFT', 'RIGHT')
        else
            job_id = redis.call('LPOP', queue_key)
        end
        if job_id then
            return {queue_key, job_id, redis.call('HGETALL', job_prefix .. job_id)}
        end
    end
    return false
end
"""

#: A worker's bookkeeping commands (see :mod:`tasklab.transaction`), then, optionally, the next
#: job, taken by ``pop_job`` above, its reply appended to theirs; with no commands, one round
#: trip that only takes a job. KEYS: queue keys to take a job from (none: take nothing); ARGV:
#: '1' to move the job into the intermediate list ('0' to pop it), job key prefix, suspension
#: key or '', then the commands.
TRANSACTION = Script(
    _POP_JOB_LUA
    + RUN_COMMANDS_LUA
    + """
local replies = run_commands(4)
if #KEYS > 0 then
    replies[#replies + 1] = pop_job(KEYS, ARGV[1], ARGV[2], ARGV[3])
end
return replies
"""
)


#: The lines RQ logs at INFO for every job: when a worker takes it, and when it succeeded.
_PER_JOB_LINES = frozenset(
    {
        "Worker %s: %s: %s (%s)",
        "Worker %s: %s: %s",
        "Successfully completed %s job in %ss on worker %s",
        "Successfully completed job %s in %ss on worker %s",
    }
)


class _JobLinesAtDebug:
    """RQ's worker logger, with the lines RQ writes for every job logged at DEBUG, not INFO.

    At hundreds of jobs a second they filled the worker log (two lines a job, never rotated)
    and cost a twentieth of each job's time, while each attempt's outcome, timing and output
    are kept with its result and shown by the monitor. Failures, retries and all other lines
    keep their levels; ``--log-level DEBUG`` shows every job again.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)

    def info(self, msg: str, *args: object, **kwargs: Any) -> None:
        kwargs.setdefault("stacklevel", 2)
        self._logger.log(logging.DEBUG if msg in _PER_JOB_LINES else logging.INFO, msg, *args, **kwargs)


class Worker(SimpleWorker):
    """tasklab's RQ worker. Jobs of plain RQ functions run here too.

    RQ's SimpleWorker spends about twenty round trips to Redis on each job: heartbeats (three
    unpipelined commands each) before and after every step, the worker state written even
    when it has not changed, a suspension check, two transactions to start the job, a job
    heartbeat after it, and WATCH plus a read of the dependents before the closing
    transaction. This worker writes the same records with one transaction to start a job and
    one to finish it, which also takes the next job while jobs are waiting. It

    * sends worker heartbeats at most once per :attr:`heartbeat_interval`, with the start of
      a job when one is due then, and always in time for the worker key to outlive the job;
    * writes the worker state only when it changes;
    * starts a job in one transaction: RQ's execution record, busy state, the job's start
      (``started``, ``started_at``, ``worker_name``) and its removal from the intermediate
      queue, together with a count of the job's dependents;
    * finishes a job that succeeded in one transaction (counts, result, finished registry,
      expiry, execution cleanup, idle state), which also counts the dependents again, reads
      the suspension flag, and takes the next job in the same script (RQ's LMOVE,
      or LPOP for several queues, then HGETALL), unless workers are suspended or the worker
      is stopping. A worker that stops before it starts that job puts it back at the head of
      its queue. Otherwise it takes a job with the same script, or, when none waits, with
      RQ's blocking dequeue;
    * sends each transaction as one call of :data:`TRANSACTION` (one reply, not one
      per command), packed by hiredis, on a connection of its own (see :meth:`_execute`);
    * does not wait for the reply to a tasklab task's start: it gets the task ready while
      Redis applies it, and the runtime reads the reply just before the task body runs or
      anything else about the attempt is written (see :meth:`_confirm_start`);
    * uses :class:`~tasklab.worker_job.WorkerJob`, RQ's Job with less Python per job.

    Everything else is RQ's own code: failures, retries, timeouts, callbacks, rate limits,
    repeats, ``result_ttl=0``, and jobs that had dependents when they started, which finish
    through RQ's WATCH transaction. A dependent added while its parent ran (after the first
    count) is seen by the second count and enqueued right after the commit by RQ's
    ``enqueue_dependents``, as RQ itself does after a failure.
    """

    scheduler_interval: float = defaults.SCHEDULER_INTERVAL
    #: Seconds between two worker heartbeats while jobs keep the worker busy.
    heartbeat_interval: float = defaults.WORKER_HEARTBEAT_INTERVAL
    #: RQ logs how long each result is kept, after every job; the job's options say it.
    log_result_lifespan = False
    _scheduler_thread: SchedulerThread | None = None

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("job_class", WorkerJob)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.log = _JobLinesAtDebug(self.log)  # type: ignore[assignment]
        self._heartbeat_sent_at = -math.inf  # time.monotonic() of the last heartbeat sent
        self._heartbeat_expires_at = -math.inf  # when the worker key expires, by that clock
        self._stored_state: str | None = None  # the state last written to Redis
        self._started_job_id: str | None = None  # started by prepare_execution, not yet run
        self._fast_job_id: str | None = None  # had no dependents when it started
        self._not_suspended = False  # the last commit found no suspension; skip one check
        self._next_job: tuple[Job, Queue] | None = None  # taken by the last commit
        self._queues_were_empty = False  # the last commit found no job to take
        self._transaction_connection: AbstractConnection | None = None  # see _execute
        self._unconfirmed: tuple[Job, list, int] | None = None  # a start sent, its reply not read

    # -- Redis round trips saved ----------------------------------------------------------

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """RQ's heartbeat, skipped when one was sent less than :attr:`heartbeat_interval` ago
        and the worker key it kept alive does not expire sooner than this one asks.

        The key is kept for at least RQ's idle TTL (``worker_ttl + 60``), and for longer when
        a job's timeout asks for it (RQ shortens it to the job's TTL while a short job runs).
        Without ``pipeline``, its three commands go in one round trip instead of three.
        """
        timeout = max(timeout or 0, self.worker_ttl + 60)
        clock = time.monotonic()
        if (
            clock - self._heartbeat_sent_at < self.heartbeat_interval
            and self._heartbeat_expires_at >= clock + timeout - self.heartbeat_interval
        ):
            return
        if pipeline is None:
            with self.connection.pipeline(transaction=False) as pipe:
                super().heartbeat(timeout, pipe)
                pipe.execute()
        else:
            super().heartbeat(timeout, pipeline)
        self._heartbeat_sent_at = clock
        self._heartbeat_expires_at = clock + timeout

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        self._state = state
        if state != self._stored_state:
            super().set_state(state, pipeline)
            self._stored_state = state

    def register_birth(self) -> None:
        super().register_birth()
        self._stored_state = None  # a new worker hash, without a state

    def check_for_suspension(self, burst: bool) -> None:
        if self._not_suspended:  # read by the commit of the job that just ended
            self._not_suspended = False
            return
        super().check_for_suspension(burst)

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """Take the job the last commit took, or a waiting job in one round trip; when none
        waits, block in RQ's loop."""
        self.set_state(WorkerStatus.IDLE)
        result, self._next_job = self._next_job, None
        if result is None and not self._queues_were_empty:
            result = self._pop_waiting_job()
        self._queues_were_empty = False
        if result is None:
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        job, queue = result
        self.reorder_queues(reference_queue=queue)
        job.redis_server_version = self.get_redis_server_version()
        name = green(queue.name)
        if self.log.isEnabledFor(logging.DEBUG):  # as RQ's line, at DEBUG (see _JobLinesAtDebug)
            if self.log_job_description:
                self.log.debug("Worker %s: %s: %s (%s)", self.name, name, blue(job.description), job.id)
            else:
                self.log.debug("Worker %s: %s: %s", self.name, name, job.id)
        return result  # RQ's heartbeat here is sent, when due, with the job's start

    def _pop_arguments(self) -> tuple[list[str], list[str]]:
        """KEYS and the first two ARGV of the pop of :data:`TRANSACTION`, for the queues in order."""
        keys = [queue.key for queue in self._ordered_queues]
        move = len(keys) == 1 and self.get_redis_server_version() >= (6, 2, 0)
        return keys, ["1" if move else "0", self.job_class.redis_job_namespace_prefix]

    def _pop_waiting_job(self) -> tuple[Job, Queue] | None:
        """Take a waiting job with a :data:`TRANSACTION` of no commands; ``None`` when none waits."""
        self._confirm_start()  # replies come in order on the connection
        call, expected = self._script_call([], take_next=True)
        while True:
            try:
                (popped,) = self._run(call, expected)
            except (redis.ConnectionError, redis.TimeoutError):
                return None  # RQ's loop retries with backoff
            if not popped:
                return None
            result = self._popped_job(popped)
            if result is not None:
                return result

    def _popped_job(self, popped: list) -> tuple[Job, Queue] | None:
        queue_key, job_id, fields = popped
        queue = next(q for q in self.queues if q.key == as_text(queue_key))
        if not fields:
            return None  # deleted since it was queued: RQ skips it too
        job = self.job_class(as_text(job_id), connection=self.connection, serializer=self.serializer)
        try:
            job.restore(dict(zip(fields[::2], fields[1::2], strict=True)))
        except Exception as exc:
            exc.job_id, exc.queue = job.id, queue  # type: ignore[attr-defined]  # as RQ's dequeue
            raise
        return job, queue

    def _return_next_job(self) -> None:
        """Put the job taken by the last commit back at the head of its queue."""
        taken, self._next_job = self._next_job, None
        if taken is None:
            return
        job, queue = taken
        with self.connection.pipeline() as pipe:
            if len(self.queues) == 1:
                pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            pipe.lpush(queue.key, job.id)
            pipe.execute()

    def _script_call(self, commands: list[tuple], take_next: bool) -> tuple[list, int]:
        """The arguments of a :data:`TRANSACTION` call that runs ``commands`` (and then takes
        the next job, with ``take_next``), and the number of replies it gives."""
        keys, argv = self._pop_arguments() if take_next else ([], ["", ""])
        argv.append(WORKERS_SUSPENDED if take_next else "")
        return flatten(commands, [len(keys), *keys, *argv]), len(commands) + take_next

    def _own_connection(self) -> AbstractConnection:
        if self._transaction_connection is None:
            self._transaction_connection = self.connection.connection_pool.make_connection()
        return self._transaction_connection

    def _execute(self, pipe: Pipeline, take_next: bool = False) -> list:
        """Run the commands RQ's functions queued on ``pipe`` atomically; their replies, errors
        included, and with ``take_next`` the reply of the next job's pop after them.

        What ``pipe.execute(raise_on_error=False)`` does (retried on a lost connection), but as
        one call of :data:`TRANSACTION` (see :mod:`tasklab.transaction`), on a connection of the
        worker's own: the pool's checks on taking and giving back a connection cost too much
        twice per job. The replies are Redis's, without the client's response callbacks; those
        used here are integers and lists anyway. Too large for a script call (a task's large
        result), it goes through redis-py's MULTI/EXEC and takes no job (the reply ``False``).
        """
        self._confirm_start()  # replies come in order on the connection
        commands = commands_of(pipe)
        call, expected = self._script_call(commands, take_next)
        packed = TRANSACTION.packed(call)
        if not fits(commands, packed):
            replies = execute_plainly(pipe, raise_on_error=False)
            return [*replies, False] if take_next else replies
        pipe.reset()
        return checked(TRANSACTION.call(self._own_connection(), call, packed), expected)

    def _run(self, call: list, expected: int) -> list:
        return checked(TRANSACTION.call(self._own_connection(), call), expected)

    def prepare_execution(self, job: Job) -> Execution:
        """Start ``job`` in one transaction: what RQ's ``prepare_execution`` and
        ``prepare_job_execution`` write in two, and a count of the job's dependents."""
        ttl = self.get_heartbeat_ttl(job)
        with self.connection.pipeline() as pipe:
            execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
            self.executions[execution.id] = execution
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            self.heartbeat(ttl, pipeline=pipe)
            # Also sets last_heartbeat, which RQ writes once more just before.
            job.prepare_for_execution(self.name, pipeline=pipe)
            pipe.persist(job.key)
            if len(self.queues) == 1:  # as RQ: only then was the job moved to the intermediate queue
                queue_key = self.queue_class.redis_queue_namespace_prefix + job.origin
                pipe.lrem(IntermediateQueue.get_intermediate_queue_key(queue_key), 1, job.id)
            start_writes(job, pipe, self.name)  # tasklab's STARTED event, in the same transaction
            defer_finish_writes(job)
            pipe.scard(job.dependents_key)
            self._confirm_start()
            call, expected = self._script_call(commands_of(pipe), take_next=False)
            pipe.reset()  # a start is small: always a script call
        self._started_job_id = job.id
        if getattr(job, "_tl_started_written", False):
            # A tasklab task: send the start now, and read its reply only when the task is about
            # to run (the runtime calls the job's confirm_start first): the task's arguments,
            # code and request are got ready while Redis applies the start.
            try:
                TRANSACTION.send(self._own_connection(), call)
            except (redis.ConnectionError, redis.TimeoutError):
                self._own_connection().disconnect()
                self._started(job, self._run(call, expected))
            else:
                self._unconfirmed = (job, call, expected)
                job._tl_confirm_start = self._confirm_start  # type: ignore[attr-defined]
        else:
            self._started(job, self._run(call, expected))
        return execution

    def _started(self, job: Job, replies: list) -> None:
        raise_first_error(replies)
        self._fast_job_id = None if replies[-1] else job.id  # the count of its dependents

    def _confirm_start(self) -> None:
        """Read the reply to the start transaction sent by :meth:`prepare_execution`, if it
        has not been read yet: before the task runs, before anything else about the job is
        written, and before the connection is used again."""
        pending, self._unconfirmed = self._unconfirmed, None
        if pending is None:
            return
        job, call, expected = pending
        job._tl_confirm_start = None  # type: ignore[attr-defined]
        try:
            replies = checked(TRANSACTION.receive(self._own_connection(), call), expected)
        except (redis.ConnectionError, redis.TimeoutError):
            # Lost with the reply: whether the start was applied is unknown, and applying it
            # twice writes the same records again (the STARTED event excepted).
            self._own_connection().disconnect()
            replies = self._run(call, expected)
        except BaseException:
            self._own_connection().disconnect()
            raise
        self._started(job, replies)

    def _finalize_success(self, job: Job, *args: Any, **kwargs: Any) -> None:
        self._confirm_start()
        super()._finalize_success(job, *args, **kwargs)

    def _finalize_failure(self, job: Job, *args: Any, **kwargs: Any) -> None:
        self._confirm_start()
        super()._finalize_failure(job, *args, **kwargs)

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        if self._started_job_id != job.id:
            super().prepare_job_execution(job, remove_from_intermediate_queue)
            return
        self._started_job_id = None
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """Record the end locally; RQ also writes the job's heartbeat at once, but every path
        that follows writes it with the job's other fields, in its own transaction."""
        if self.disable_default_exception_handler:  # the one failure path that saves nothing
            super().handle_execution_ended(job, queue, heartbeat_ttl)
            return
        job.ended_at = job.last_heartbeat = now()

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution
    ) -> None:
        """Finish a successful job in one transaction, or by RQ's path when it may have
        dependents, repeats, or a result that is not kept."""
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        if self._fast_job_id != job.id or result_ttl == 0 or (job.repeats_left or 0) > 0:
            super().handle_job_success(job, queue, started_job_registry, execution)
            if getattr(job, "_tl_finish_writes", None):  # RQ's own path: write tasklab's records after it
                with self.connection.pipeline(transaction=False) as pipe:
                    finish_writes(job, pipe)
                    pipe.execute()
            return
        assert job.started_at is not None and job.ended_at is not None
        # Webhooks are sent after the commit and take time: until then, the worker is busy.
        quick = not job.webhooks
        # The loop is about to take the next job: the commit takes it, unless the loop may do
        # something else first.
        take_next = quick and not self._stop_requested and not self.should_run_maintenance_tasks
        with self.connection.pipeline() as pipe:
            # Read first, so that both see Redis as it was just before these writes.
            pipe.scard(job.dependents_key)
            pipe.exists(WORKERS_SUSPENDED)
            self.increment_successful_job_count(pipeline=pipe)
            self.increment_total_working_time(job.ended_at - job.started_at, pipe)
            success = job.write_success if isinstance(job, WorkerJob) else job._handle_success
            success(
                result_ttl,
                pipeline=pipe,
                worker_name=self.name,
                execution_id=execution.id,
                execution_started_at=execution.created_at,
                execution_ended_at=job.ended_at,
            )
            job.cleanup(result_ttl, pipeline=pipe, remove_from_queue=False)
            job._status = JobStatus.FINISHED
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            finish_writes(job, pipe)  # the attempt's output and event, from the runtime
            if quick:
                # Written now, to spare a round trip; self._state stays busy until the job
                # has ended, as RQ's shutdown request expects.
                pipe.hset(self.key, "state", WorkerStatus.IDLE)
            replies = self._execute(pipe, take_next=take_next)
        if take_next:
            popped = replies[-1]
            self._next_job = self._popped_job(popped) if isinstance(popped, list) else None
            self._queues_were_empty = not popped
        raise_first_error(replies)  # now that the job it took is not lost
        dependents, suspended = replies[:2]
        if quick:
            self._stored_state = WorkerStatus.IDLE
            self._not_suspended = not suspended
        if dependents:  # added while the job ran; the commit made it FINISHED for them
            try:
                queue.enqueue_dependents(job)
            except Exception:
                self.log.exception("Worker %s: failed to enqueue dependents of job %s", self.name, job.id)
        release_slot(job)
        self.log.debug("Worker %s: job %s finished in %s", self.name, job.id, job.ended_at - job.started_at)

    # -- process life -----------------------------------------------------------------------

    def _start_scheduler(self, burst: bool = False, *args: object, **kwargs: object) -> None:
        if burst:
            super()._start_scheduler(burst, *args, **kwargs)  # type: ignore[arg-type]
            return
        self._scheduler_thread = SchedulerThread(self.queues, self.connection, self.serializer, self.scheduler_interval)
        self._scheduler_thread.start()

    def unsubscribe(self) -> None:
        # RQ joins its pubsub thread for up to a second; the process is about to exit anyway.
        # The (daemon) thread closes its connection when it stops: closing it under the thread
        # here made it log a traceback at every exit.
        if self.pubsub_thread:
            self.pubsub_thread.stop()

    def teardown(self) -> None:
        if self._scheduler_thread is not None:
            self._scheduler_thread.stop()
        try:
            self._return_next_job()
        except Exception:
            self.log.exception("Worker %s: could not put back the job it had taken", self.name)
        if self._transaction_connection is not None:
            self._transaction_connection.disconnect()
        super().teardown()
