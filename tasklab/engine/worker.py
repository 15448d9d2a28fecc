"""tasklab's RQ worker: long-lived, running every job in the worker process itself.

It is RQ's :class:`~rq.worker.SimpleWorker` (no fork per job, so a task's per-process state,
such as an open database connection, survives from one job to the next), plus:

* a fast path through RQ's bookkeeping: the same keys, records and transitions as RQ's, in
  two round trips to Redis per job instead of about twenty (see :class:`Worker`);
* the lighter bookkeeping, process life and lease of :class:`~tasklab.engine.lean_worker.LeanWorker`,
  and the fencing of :class:`~tasklab.engine.fencing.FencingWorker`.

Worker processes (see :mod:`tasklab.local.worker_process`) are started by a
:class:`~tasklab.local.pool.WorkerPool`, locally by a lab or on any machine by
``tasklab worker --url URL``.
"""

from __future__ import annotations

import datetime
import logging
import math
import sys
import threading
import time
from collections import deque
from typing import Any

import redis
import rq
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.connection import AbstractConnection
from redis.retry import Retry
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.logutils import blue, green
from rq.queue import Queue
from rq.rate_limit import release_slot
from rq.registry import StartedJobRegistry
from rq.results import Result
from rq.suspension import WORKERS_SUSPENDED
from rq.timeouts import UnixSignalDeathPenalty
from rq.utils import as_text, now
from rq.worker import WorkerStatus

from .. import defaults
from ..code.serialization import ResultSerializer, Serializer
from ..core.signing import find_key, keyring
from ..errors import SignatureError
from . import events
from .claim import PEEK_HANDED, SUSPENDED, TRANSACTION
from .execution import defer_finish_writes, finish_writes, forget_finish_writes, run_success_hooks, start_writes
from .fence import owned
from .fencing import FencingWorker
from .joblog import JobLinesAtDebug
from .keys import META_TASK, claimed_key, handed_key, running_key
from .lost import requeue_claimed
from .refusal import PlainSerializer, check_signed, foreign_callback, refuse, signed_job
from .rq_private import (
    depends_on_others,
    end_execution,
    handle_success,
    mark_stopped,
    new_execution,
    ordered_queues,
    set_state_locally,
    start_execution,
    state_write,
)
from .transaction import (
    FENCE,
    FENCE_CLAIM,
    FENCE_QUEUED,
    FENCE_SOLE,
    Commands,
    Fenced,
    HasDependents,
    checked,
    commands_of,
    execute,
    execute_plainly,
    fits,
    flatten,
    pack,
    raise_first_error,
)
from .worker_job import WorkerJob

log = logging.getLogger("tasklab.worker")

# Where a job's start stands, when the worker may leave it unwritten (``job._tl_start``; see Worker).
UNWRITTEN = "unwritten"  # not written: the job is still the worker's claim, and queued in Redis
UNSURE = "unsure"  # sent, and its reply lost: written or not, the running mark tells
WRITTEN = "written"  # written: the job is STARTED, as any job the worker starts at once
FENCED = "fenced"  # not written: the job was settled meanwhile, by whoever found the lease run out
COMMITTING = "committing"  # never to be written: the job's success is being committed without it


class DeathPenalty(UnixSignalDeathPenalty):
    """RQ's job timeout, by SIGALRM; nothing at all for a job without one (a tasklab task's RQ timeout
    is -1: its time limits are its own, see :func:`tasklab.engine.execution.time_limits`)."""

    def setup_death_penalty(self) -> None:
        if self._timeout > 0:
            super().setup_death_penalty()

    def cancel_death_penalty(self) -> None:
        if self._timeout > 0:
            super().cancel_death_penalty()


class Worker(FencingWorker):
    """tasklab's RQ worker; jobs of plain RQ functions run here too. It writes RQ's records with
    one transaction to start a job and one to finish it (RQ's SimpleWorker: about twenty round
    trips), each sent as one call of :data:`TRANSACTION`, packed by hiredis, on a connection of
    its own (see :meth:`_execute`):

    * the start: the fence on the worker's claim, RQ's execution record, busy state, the job's
      start, the running mark, a due heartbeat, and a count of the job's dependents; its reply is
      read only just before the task body runs (see :meth:`_confirm_start`);
    * the finish of a success: the fence on the running mark, counts, result, finished registry,
      execution cleanup, idle state, the attempt's output and event, a second count of the
      dependents, the suspension flag, and the next job, taken into the claimed list in the same
      script (see :mod:`tasklab.engine.claim`); from a deep queue, a batch of them
      (:data:`~tasklab.defaults.CLAIM_BATCH`), which the worker holds and runs in order, reading each
      while the commit of the one before it is on its way (:meth:`_read_ahead`). With no job waiting,
      it waits for one itself (:meth:`_wait_for_job`).

    A short task costs one script instead of two. A tasklab task runs at once, its start unwritten,
    when the worker's lease has been held since the claim that took it was sent; the start is written
    only if the task still runs :data:`~tasklab.defaults.START_WRITTEN_AFTER` seconds later (by a
    thread: :class:`StartTimer`), or before a failure, a retry or anything else RQ's path writes.
    A task that ends sooner is recorded by one commit (:meth:`_finish_short`): fenced on the claim
    (:data:`~tasklab.engine.transaction.FENCE_SOLE`), the same records as RQ's but for the execution
    record, started registry entry and running mark, which RQ writes at the start and deletes at the
    end. Until then the job is queued in Redis (PENDING, as Celery shows a task without
    ``track_started``), and the last job of this worker's claimed list
    (:func:`~tasklab.engine.keys.claimed_key`): if the worker dies or its lease runs out meanwhile,
    whoever settles its jobs counts it lost with the worker, as a started one
    (:func:`tasklab.engine.lost.settle_jobs_of`). A job BLMOVE hands to a waiting worker goes to a
    list of its own (:func:`~tasklab.engine.keys.handed_key`), queued again by a settler, and joins
    the claimed list only once the worker has read the reply. A worker frozen in that wait and settled
    meanwhile finds it gone; and a job handed after the settle is started the usual way, fenced on
    its claim, since the worker finds its lease run out (or renewed after it was taken: see
    :attr:`~tasklab.engine.leases.LeaseKeeper.epoch`).

    Everything else is RQ's own code: failures, retries, timeouts, callbacks, rate limits,
    repeats, ``result_ttl=0``, and jobs that had dependents when they started (RQ's WATCH
    transaction). A dependent added while its parent ran is seen by the second count and
    enqueued right after the commit, as RQ does after a failure.
    """

    #: RQ logs how long each result is kept, after every job; the job's options say it.
    log_result_lifespan = False
    death_penalty_class = DeathPenalty

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("job_class", WorkerJob)
        super().__init__(*args, **kwargs)
        if not keyring.ready():  # made directly (rq worker -w …): the key from the environment
            keyring.use(find_key())
        self.log = JobLinesAtDebug(self.log)  # type: ignore[assignment]
        self._started_job_id: str | None = None  # started by prepare_execution, not yet run
        self._fast_job_id: str | None = None  # had no dependents when it started
        self._next_job: tuple[Job, Queue] | None = None  # taken by a claim, read, and next to run
        # Taken by a claim (a batch: see defaults.CLAIM_BATCH), not read yet, in the order they run:
        # (queue, job id, the job hash's fields as the claim read them, the lease's epoch at the claim).
        self._held: deque[tuple[Queue, str, list, int | None]] = deque()
        self._held_since = 0.0  # time.monotonic() of the claim that took them
        self._queues_were_empty = False  # the last commit found no job to take
        # A claim may take a batch, unless the last success's commit did not go straight on to the next job
        # (hooks, webhooks, maintenance: see _takes_next): the next claim after it takes one.
        self._claim_batch = True
        self._transaction_connection: AbstractConnection | None = None  # see _execute
        self._unconfirmed: tuple[Job, list, int] | None = None  # a start sent, its reply not read
        self._claims_unsure = False  # a call that may have claimed a job lost its reply
        self._fast_finish = False  # the job being finished goes by the one-transaction path
        self._claim_epoch: int | None = None  # the lease's epoch when the last claim was sent
        self._start_lock = threading.Lock()  # a job's start is written, or committed without, once
        self._unwritten: tuple[Job, float] | None = None  # running, its start unwritten; since when
        self._start_timer: StartTimer | None = None  # from bootstrap() on
        self._totals = events.Totals()  # counts of finished jobs, held for a moment (see _commit_totals)
        self._totals_sent: tuple[bool, events.Totals] | None = None  # with the last commit sent
        self._maintenance_seen: datetime.datetime | None = None  # last_cleaned_at, when _maintenance_due was set
        self._maintenance_due = 0.0  # time.time() after which RQ's maintenance is due
        self._idle_writes = False  # gone idle: its counts and idle state go with the next wait (see _idle)

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """Take the job the last commit took, or a waiting job in one round trip; when none
        waits, wait for one (:meth:`_wait_for_job`). ``None`` (the loop ends) once asked to stop."""
        if self._stopping or not self.holds_lease():
            return None
        self._idle()
        if self._claims_unsure:
            self.riding_out(self._return_unknown_claims, "it puts back the jobs it may have taken")
        result, self._next_job = self._next_job, None
        if result is None:
            try:
                result = self._next_held()
            except (redis.ConnectionError, redis.TimeoutError):
                self.connection_lost()  # what it holds goes back once Redis answers (see _wait_for_job)
        if result is None and not self._queues_were_empty:
            result = self._pop_waiting_job()
        self._queues_were_empty = False
        if result is None:
            result = self._wait_for_job(timeout, max_idle_time)
        if result is None:
            return None
        job, queue = result
        self.reorder_queues(reference_queue=queue)
        job.redis_server_version = self.get_redis_server_version()
        name = green(queue.name)
        if self.log.isEnabledFor(logging.DEBUG):  # as RQ's line, at DEBUG (see JobLinesAtDebug)
            if self.log_job_description:
                self.log.debug("Worker %s: %s: %s (%s)", self.name, name, blue(job.description), job.id)
            else:
                self.log.debug("Worker %s: %s: %s", self.name, name, job.id)
        return result  # RQ's heartbeat here is sent, when due, with the job's start

    def execute_job(self, job: Job, queue: Queue) -> None:
        """RQ's SimpleWorker.execute_job, but idle written only when no next job was taken (:meth:`_idle`)."""
        execution = self.prepare_execution(job)
        try:
            self.perform_job(job, queue, execution)
        finally:
            with self._start_lock:  # every outcome took it; an exit half-way leaves it to the timer no more
                self._unwritten = None
        self._idle()

    def _idle(self) -> None:
        """The worker is idle, between two jobs. When the last commit took the next job, it stays
        busy in Redis, from one job to the next: that commit wrote no idle state, nor will this; so
        while it holds jobs of a batch. Otherwise the counts it held and the idle state are written:
        when the last commit found no job waiting, with the worker's wait for the next one, in the same
        round trip (see :meth:`_wait_handed`); else now. Only then is the worker idle here: a stop request
        meanwhile marks the stop, as during a job (RQ's warm shutdown), rather than interrupt the writes."""
        if self._holds_jobs():
            set_state_locally(self, WorkerStatus.IDLE)
        elif self._queues_were_empty:
            self._idle_writes = True  # idle here once they are sent
        else:
            self._write_idle()

    def _queue_idle(self, pipe: Pipeline) -> None:
        """Queue on ``pipe`` what going idle writes: the counts held, and the idle state unless it is written."""
        self._totals.write(pipe, self.key)
        if self._stored_state != WorkerStatus.IDLE:
            state_write(pipe, self, WorkerStatus.IDLE)

    def _idle_written(self, errors: list) -> None:
        """The idle writes were applied; those Redis refused (``errors``: a key of the wrong type) are logged,
        not sent again."""
        self._idle_writes = False
        self._totals = events.Totals()
        self._stored_state = WorkerStatus.IDLE
        set_state_locally(self, WorkerStatus.IDLE)
        if errors:
            self.log.error("Worker %s: could not record its counts or state: %s", self.name, errors[0])

    def _write_idle(self) -> None:
        """Write the counts held and the idle state now, in one round trip."""
        if not self._totals.held and self._stored_state == WorkerStatus.IDLE:
            self._idle_written([])
            return

        def send() -> list:
            with self.connection.pipeline(transaction=False) as pipe:
                self._queue_idle(pipe)
                return pipe.execute(raise_on_error=False)

        replies = self.riding_out(send, "it records its counts")
        self._idle_written([reply for reply in replies if isinstance(reply, Exception)])

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """The idle writes left for the next wait (see :meth:`_idle`) go first, before another state."""
        if self._idle_writes and state != WorkerStatus.IDLE:
            self._write_idle()
        super().set_state(state, pipeline)

    # -- the counts of finished jobs, held for a moment --

    def _commit_totals(self, job: Job, pipe: Pipeline | Commands, write: bool) -> None:
        """Queue the writes a success left (:func:`~tasklab.engine.execution.finish_writes`) on
        ``pipe``, with the job's counts (tasklab's and RQ's) held in :attr:`_totals`, or, with
        ``write`` or once they are :data:`~tasklab.defaults.TOTALS_HELD` seconds old, written with
        all those held, by this commit; :meth:`_totals_applied` once the commit is applied."""
        assert job.started_at is not None and job.ended_at is not None
        totals = events.Totals()
        totals.success((job.ended_at - job.started_at).total_seconds())
        job._tl_totals = totals  # type: ignore[attr-defined]  # see execution._write_attempt
        try:
            finish_writes(job, pipe)
        finally:
            job._tl_totals = None  # type: ignore[attr-defined]
        write = write or self._totals.due()
        if write:
            both = events.Totals()
            both.add(self._totals)
            both.add(totals)
            both.write(pipe, self.key)
        self._totals_sent = (write, totals)

    def _totals_applied(self) -> None:
        """The commit of :meth:`_commit_totals` was applied: what it wrote is no longer held."""
        sent, self._totals_sent = self._totals_sent, None
        if sent is None:
            return
        written, totals = sent
        if written:
            self._totals = events.Totals()
        else:
            self._totals.add(totals)

    def _holds_jobs(self) -> bool:
        """Whether this worker holds jobs it took and has not begun: the next one to run, read or not."""
        return self._next_job is not None or bool(self._held)

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's, but jobs held from a batch go back to their queues first when workers are suspended:
        a suspended worker holds none. Idle writes left for the wait are written first: RQ's check puts
        back the state it finds once workers are resumed."""
        if self._idle_writes and not self._not_suspended and not self._stopping:
            self._write_idle()
        if self._holds_jobs() and not self._not_suspended and not self._stopping:
            if self.riding_out(lambda: self.connection.exists(WORKERS_SUSPENDED), "it goes on"):
                self.riding_out(lambda: self._return_held("is suspended"), "it puts back the jobs it holds")
            else:
                self._not_suspended = True  # just read: RQ's check is skipped
        super().check_for_suspension(burst)

    def _pop_arguments(self) -> tuple[list[str], list[str]]:
        """KEYS and the first ARGV of the pop of :data:`TRANSACTION`: this worker's claimed list,
        then the queues in order, and the job key prefix."""
        keys = [claimed_key(self.name), *(queue.key for queue in ordered_queues(self))]
        return keys, [self.job_class.redis_job_namespace_prefix]

    def _wait_for_job(self, timeout: int | None, max_idle_time: int | None) -> tuple[Job, Queue] | None:
        """Block until a job waits, and take it into this worker's claimed list: with BLMOVE for one
        queue (into the list of a job handed to it, then into its claimed list: see :meth:`_claimed`),
        else by taking one with :data:`TRANSACTION` every :data:`~tasklab.defaults.CLAIM_POLL_INTERVAL`
        seconds. Without ``timeout`` (burst), one look; ``None`` when none came, or the loop is to end
        (stop asked, idle too long). While Redis is unreachable, it retries with backoff, logging one
        line per outage; jobs a call whose reply was lost may have taken go back to their queues before
        the next look, so that the only job in the claimed list is the one taken last."""
        queues = ordered_queues(self)
        blocking = len(queues) == 1 and self.get_redis_server_version() >= (6, 2, 0)
        waiting_since = time.monotonic()
        backoff = 0.0
        while True:
            if self._stopping or not self.holds_lease():
                return None
            try:
                if self._claims_unsure:
                    self._return_unknown_claims()
                self.heartbeat()  # the worker key outlives the wait (sent at most once per interval)
                if blocking and timeout is not None:
                    block = min(timeout, defaults.CLAIM_BLOCK)
                    self._claim_epoch = self.lease.epoch if self.lease is not None else None
                    result = self._wait_handed(queues[0], block)
                else:
                    if self._idle_writes:
                        self._write_idle()
                    result = self._pop_waiting_job(raise_unreachable=True)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                backoff = self.unreachable(exc, "it waits for jobs", backoff)
                continue
            self.connection_back()
            backoff = 0.0
            if result is not None or timeout is None:
                return result
            if max_idle_time is not None and time.monotonic() - waiting_since > max_idle_time:
                return None
            if not blocking:
                time.sleep(defaults.CLAIM_POLL_INTERVAL)

    def _wait_handed(self, queue: Queue, block: int) -> tuple[Job, Queue] | None:
        """Block up to ``block`` seconds in a BLMOVE from ``queue`` into the list of a job handed to this
        worker, sent with :data:`~tasklab.engine.claim.PEEK_HANDED` on the worker's own connection: the job's
        id and fields come in one round trip. Then the job joins the claimed list (:meth:`_claimed`)."""
        self._confirm_start()  # replies come in order on the connection
        conn = self._own_connection()
        handed = handed_key(self.name)
        peek = [1, handed, self.job_class.redis_job_namespace_prefix]
        # Going idle (see _idle), its writes go first, in the same round trip: the worker waits at once.
        idle: list[tuple] = []
        if self._idle_writes:
            with self.connection.pipeline(transaction=False) as pipe:
                self._queue_idle(pipe)
                idle = commands_of(pipe)
                pipe.reset()
        try:
            conn.send_packed_command(
                [*(pack(*command) for command in idle), pack("BLMOVE", queue.key, handed, "LEFT", "RIGHT", block),
                 PEEK_HANDED.packed(peek)]
            )  # fmt: skip
        except BaseException:
            conn.disconnect()  # a reply may be left unread
            raise
        try:
            if self._idle_writes:
                # Idle from here: a stop request ends the wait (RQ's StopRequested), and what was sent stands.
                set_state_locally(self, WorkerStatus.IDLE)
                self._idle_written(self._idle_replies(conn, len(idle)))
                if self._stopping:  # asked while they were sent: no wait
                    raise StopRequested()
            job_id, peeked = conn.read_response(), PEEK_HANDED.receive(conn, peek)
        except BaseException as exc:
            conn.disconnect()  # a reply may be left unread
            if self._idle_writes and not isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
                self._idle_written([])  # sent on a connection that works: Redis applies them
            raise
        if not job_id:
            if peeked:  # a job left in the list by a lost reply: it goes back
                self._claims_unsure = True
            return None
        job_id = as_text(job_id)
        if not peeked or as_text(peeked[0]) != job_id:  # not the first in the list: the same, and this one too
            self._claims_unsure = True
            return None
        return self._claimed(job_id, queue, peeked[1])

    def _idle_replies(self, conn: AbstractConnection, count: int) -> list:
        """Read the replies to the ``count`` idle writes sent ahead of a wait (they come at once); the errors."""
        errors = []
        for _ in range(count):
            try:
                conn.read_response()
            except redis.ResponseError as exc:
                errors.append(exc)
        return errors

    def _claimed(self, job_id: str, queue: Queue, fields: list) -> tuple[Job, Queue] | None:
        """The job BLMOVE handed to this worker, with the ``fields`` of its hash, moved into its (empty)
        claimed list, as a script's claim is; ``None`` if it is gone from the list it was handed in (the
        worker was frozen in its wait, and settled meanwhile: the job went back to its queue), or if its
        hash is gone (RQ skips those). The job is read while the move travels to Redis, and used only once
        the move is known to have been made. It may run with its start unwritten only if the lease has
        been held since the BLMOVE was sent: see :meth:`_may_leave_start_unwritten`."""
        conn = self._own_connection()
        try:
            conn.send_packed_command([pack("LMOVE", handed_key(self.name), claimed_key(self.name), "LEFT", "LEFT")])
            try:
                read, error = (self._parse_job(queue, job_id, fields, self._claim_epoch) if fields else None), None
            except Exception as exc:  # raised below, once the move is known
                read, error = None, exc
            moved = conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        if moved is None or as_text(moved) != job_id:
            # Whatever the lists hold now goes back to its queue before the next claim: this worker runs none.
            self._claims_unsure = True
            if moved is None:
                self.log.warning(
                    "Worker %s: job %s was queued again while this worker waited (its lease ran out); it does "
                    "not run it here", self.name, job_id,
                )  # fmt: skip
            return None
        if read is None and error is None:
            return self._read_job(queue, job_id, fields, self._claim_epoch)  # its hash is gone: dropped
        if isinstance(error, SignatureError):
            self._refuse(queue, job_id, error)
            return None
        if error is not None:
            raise error
        return read

    def _pop_waiting_job(self, raise_unreachable: bool = False) -> tuple[Job, Queue] | None:
        """Take a waiting job with a :data:`TRANSACTION` of no commands; ``None`` when none waits."""
        self._confirm_start()  # replies come in order on the connection
        call, expected = self._script_call([], claim=True)
        while True:
            try:
                (popped,) = self._run(call, expected)
            except (redis.ConnectionError, redis.TimeoutError):
                self.connection_lost()  # its reply lost: it may have taken a job
                if raise_unreachable:
                    raise
                return None  # the blocking wait that follows retries with backoff
            if not isinstance(popped, list):  # none waits, or workers are suspended
                return None
            self._hold(popped)
            result = self._next_held()
            if result is not None:
                return result

    def _hold(self, popped: list) -> None:
        """Keep the jobs a claim took (the reply of the claim script: its queue's key, then each job's id
        and fields), to run in their order."""
        queue_key = as_text(popped[0])
        queue = next(q for q in self.queues if q.key == queue_key)
        for i in range(1, len(popped), 2):
            self._held.append((queue, as_text(popped[i]), popped[i + 1], self._claim_epoch))
        self._held_since = time.monotonic()

    def _next_held(self) -> tuple[Job, Queue] | None:
        """The next job this worker holds, read from the fields its claim read; ``None`` when it holds
        none. A job whose hash was gone, or which is refused, is dropped from its claimed list."""
        while self._held:
            result = self._read_job(*self._held.popleft())
            if result is not None:
                return result
        return None

    def _read_ahead(self) -> None:
        """Read the next job held, if it is not read yet, while the commit of the one before it travels
        (see :meth:`_execute`). An error is left for the loop to meet where RQ's dequeue would raise it."""
        while self._next_job is None and self._held:
            entry = self._held.popleft()
            try:
                self._next_job = self._read_job(*entry)
            except Exception:
                self._held.appendleft(entry)  # this one, read again by the loop
                return

    def _read_job(self, queue: Queue, job_id: str, fields: list, epoch: int | None) -> tuple[Job, Queue] | None:
        """The job ``job_id``, claimed from ``queue`` with the ``fields`` of its hash; ``None`` if its hash was
        gone or it is refused, when it leaves the claimed list."""
        if not fields:  # deleted since it was queued: RQ skips it too
            self.connection.lrem(claimed_key(self.name), 1, job_id)
            return None
        try:
            return self._parse_job(queue, job_id, fields, epoch)
        except SignatureError as exc:
            self._refuse(queue, job_id, exc)
            return None

    def _refuse(self, queue: Queue, job_id: str, exc: SignatureError) -> None:
        """Fail a claimed job without running it (see :mod:`tasklab.engine.refusal`); the loop goes on."""
        refuse(job_id, queue, self.name, f"job {job_id} was not run: {exc}")

    def _parse_job(self, queue: Queue, job_id: str, fields: list, epoch: int | None) -> tuple[Job, Queue]:
        """The job ``job_id`` made from the ``fields`` of its hash, which are not empty, without a call to
        Redis: :class:`SignatureError` if it is to be refused."""
        job = self.job_class(job_id, connection=self.connection, serializer=self.serializer)
        hash_fields = dict(zip(fields[::2], fields[1::2], strict=True))
        if keyring.accept_unsigned and not signed_job(hash_fields):
            job.serializer = PlainSerializer  # a plain RQ job: its enqueuer reads its result with pickle
        elif job.serializer is Serializer:
            job.serializer = ResultSerializer  # what the worker writes back is signed as a result
        callback = foreign_callback(hash_fields)
        try:
            if callback is not None:
                raise SignatureError(f"job {job.id} names the callback {callback!r}, which is not tasklab's")
            check_signed(job.id, hash_fields)  # RQ would unpickle them, and swallow the meta's error
            job.restore(hash_fields)
        except SignatureError:
            raise
        except Exception as exc:
            exc.job_id, exc.queue = job.id, queue  # type: ignore[attr-defined]  # as RQ's dequeue
            raise
        job._tl_claim_epoch = epoch  # type: ignore[attr-defined]  # taken by a script
        return job, queue

    def connection_lost(self) -> None:
        """Its own connection goes (a reply may be half read), and a job claimed by a call whose
        reply was lost would sit in its claimed list: it is put back before the next claim."""
        self._claims_unsure = True
        if self._transaction_connection is not None:
            self._transaction_connection.disconnect()

    def _return_unknown_claims(self) -> None:
        """Put back, at the head of their queues, the jobs in this worker's claimed list (a claim
        whose reply was lost in an outage), those it holds included: between two jobs, after a lost
        reply, the worker holds none it has not started."""
        self._return_held("took them as Redis stopped answering")
        self._claims_unsure = False

    def _return_held(self, why: str, quiet: bool = False) -> None:
        """Put back, at the head of their queues and in their order, the jobs of this worker's claimed list:
        those it holds and has not begun (see :meth:`_holds_jobs`), and any a lost reply left there; a job no
        longer queued (revoked, deleted) is dropped. ``quiet``: logged at DEBUG, not as a warning."""
        self._next_job = None
        self._held.clear()
        requeue_claimed(self.connection, self.name, why=why, quiet=quiet)

    def _script_call(self, commands: list[tuple], claim: bool) -> tuple[list, int]:
        """The arguments of a :data:`TRANSACTION` call that runs ``commands`` (and then, with ``claim``,
        takes the next job, or a batch), and the number of replies it gives."""
        keys, argv = self._pop_arguments() if claim else ([], [""])
        batch = defaults.CLAIM_BATCH if self._claim_batch else 1  # one after a pause (see _takes_next)
        argv += [WORKERS_SUSPENDED if claim else "", str(batch), str(defaults.CLAIM_BATCH_DEPTH)]
        if claim:
            self._claim_epoch = self.lease.epoch if self.lease is not None else None
        return flatten(commands, [len(keys), *keys, *argv]), len(commands) + claim

    def _own_connection(self) -> AbstractConnection:
        if self._transaction_connection is None:
            connection = self.connection.connection_pool.make_connection()
            # Never sent again by redis-py after a lost reply: the worker tells what was applied.
            connection.retry = Retry(NoBackoff(), 0)
            self._transaction_connection = connection
        return self._transaction_connection

    def _execute(self, pipe: Pipeline | Commands, claim: bool = False) -> list:
        """Run the commands RQ's functions queued on ``pipe`` atomically; their replies, errors
        included, and with ``claim`` the reply of the next job's claim after them. The next job held,
        if any, is read meanwhile (:meth:`_read_ahead`).

        What ``pipe.execute(raise_on_error=False)`` does (retried on a lost connection), but as
        one call of :data:`TRANSACTION` (see :mod:`tasklab.engine.transaction`), on a connection of the
        worker's own: the pool's checks on taking and giving back a connection cost too much
        twice per job. The replies are Redis's, without the client's response callbacks; those
        used here are integers and lists anyway. Too large for a script call (a task's large
        result), it goes through redis-py's MULTI/EXEC and takes no job (the reply ``False``).
        """
        self._confirm_start()  # replies come in order on the connection
        commands = commands_of(pipe)
        call, expected = self._script_call(commands, claim)
        packed = TRANSACTION.packed(call)
        if not fits(commands, packed):
            replies = execute_plainly(pipe.pipeline() if isinstance(pipe, Commands) else pipe, raise_on_error=False)
            return [*replies, False] if claim else replies
        pipe.reset()
        meanwhile = self._read_ahead if self._held and self._next_job is None else None
        return checked(TRANSACTION.call(self._own_connection(), call, packed, meanwhile), expected)

    def _run(self, call: list, expected: int) -> list:
        return checked(TRANSACTION.call(self._own_connection(), call), expected)

    def prepare_execution(self, job: Job) -> Execution:
        """Start ``job`` in one transaction: what RQ's ``prepare_execution`` and
        ``prepare_job_execution`` write in two, and a count of the job's dependents. A short task's
        start may be left unwritten (see the class's text and :meth:`_leave_start_unwritten`)."""
        if self._may_leave_start_unwritten(job):
            return self._leave_start_unwritten(job)
        ttl = self.get_heartbeat_ttl(job)
        with self.connection.pipeline() as pipe:
            # Nothing is written unless the job is still this worker's claim: a settler may have
            # queued it again after this worker's lease ran out (see leases, and _start_fenced).
            pipe.execute_command(FENCE_CLAIM, claimed_key(self.name), job.id)
            execution = self._queue_start(job, ttl, pipe, new_execution(job, self.name))
            self.executions[execution.id] = execution
            defer_finish_writes(job)
            self._confirm_start()
            call, expected = self._script_call(commands_of(pipe), claim=False)
            pipe.reset()  # a start is small: always a script call
        self._started_job_id = job.id
        self._hook(job, execution)
        self.running = (execution, job.started_job_registry, ttl)
        if getattr(job, "_tl_started_written", False):
            # A tasklab task: send the start now, and read its reply only when the task is about
            # to run (the runtime calls the job's confirm_start first): the task's arguments,
            # code and request are got ready while Redis applies the start.
            try:
                TRANSACTION.send(self._own_connection(), call)
            except (redis.ConnectionError, redis.TimeoutError):
                self._own_connection().disconnect()
                self._started(job, self._start_again(job, call, expected))
            else:
                self._unconfirmed = (job, call, expected)
                job._tl_confirm_start = self._confirm_start  # type: ignore[attr-defined]
        else:
            try:
                replies = self._run(call, expected)
            except Fenced:
                self._start_fenced(job)
                raise
            self._started(job, replies)
        return execution

    def _queue_start(self, job: Job, ttl: int, pipe: Pipeline, execution: Execution) -> Execution:
        """Queue on ``pipe``, after its fence, a job's start: RQ's Execution.create and
        job.prepare_for_execution (which also sets last_heartbeat), busy state, a due heartbeat, the
        running mark, tasklab's STARTED event (dated when the execution began), then a count of the
        job's dependents, whose reply comes last."""
        start_execution(job, ttl, pipe, self.name, execution)
        self.set_state(WorkerStatus.BUSY, pipeline=pipe)
        self.heartbeat(ttl, pipeline=pipe)
        pipe.persist(job.key)
        pipe.set(running_key(job.id), execution.id)  # the fence of what follows about the job
        start_writes(job, pipe, self.name, ts=execution.created_at.timestamp())
        pipe.scard(job.dependents_key)
        return execution

    def _hook(self, job: Job, execution: Execution) -> None:
        """What the runtime calls on ``job`` while this worker runs it (see tasklab.engine.execution)."""
        job._tl_running = (running_key(job.id), execution.id)  # type: ignore[attr-defined]  # see owned()
        job._tl_wait_for_redis = lambda: self.wait_for_redis(f"it records the outcome of job {job.id}")  # type: ignore[attr-defined]
        job._tl_mark_stopped = lambda: mark_stopped(self, job.id)  # type: ignore[attr-defined]  # an expired job: STOPPED

    # -- a start left unwritten --

    def _may_leave_start_unwritten(self, job: Job) -> bool:
        """Whether ``job`` may run with its start unwritten: a tasklab task that keeps its result and
        does not repeat, claimed while the lease was held, and held ever since."""
        epoch, lease = getattr(job, "_tl_claim_epoch", None), self.lease
        return (
            epoch is not None and lease is not None and self._start_timer is not None
            and defaults.START_WRITTEN_AFTER > 0 and isinstance(job, WorkerJob) and META_TASK in job.meta
            # valid() first: a renewal that finds the lease being settled bumps the epoch before the validity
            and lease.valid() and lease.epoch == epoch and not job.webhooks and not (job.repeats_left or 0)
            and job.get_result_ttl(self.default_result_ttl) != 0
        )  # fmt: skip

    def _leave_start_unwritten(self, job: Job) -> Execution:
        """Run ``job`` without writing its start: the job's fields are set here as the start would
        set them, and its start is written later only if needed (:meth:`_write_start`)."""
        execution = new_execution(job, self.name)
        started = execution.created_at
        job.worker_name, job.last_heartbeat, job.started_at = self.name, started, started
        job._status = JobStatus.STARTED  # here; in Redis it stays queued until its outcome
        # Busy here (not in Redis): a stop request while it runs lets it finish (RQ's warm shutdown).
        set_state_locally(self, WorkerStatus.BUSY)
        job._tl_start = UNWRITTEN  # type: ignore[attr-defined]
        job._tl_execution = execution  # type: ignore[attr-defined]
        self._hook(job, execution)
        job._tl_started_written = True  # type: ignore[attr-defined]  # its STARTED event goes with the start
        job._tl_write_start = lambda: self._write_start(job)  # type: ignore[attr-defined]  # before an outcome
        defer_finish_writes(job)
        self._started_job_id = job.id
        self._fast_job_id = job.id  # its dependents are counted by the commit's fence
        self._unwritten = (job, time.monotonic())
        assert self._start_timer is not None
        self._start_timer.wake()
        return execution

    def _write_start(self, job: Job, on_timer: bool = False) -> None:
        """Write the start of ``job``, left unwritten, if it is not written yet: its RQ records as
        :meth:`prepare_execution` writes them, dated when the job began. Called by the runtime
        before a failure or a retry is recorded, and by :class:`StartTimer` once the task has run
        :data:`~tasklab.defaults.START_WRITTEN_AFTER` seconds. While Redis does not answer, it waits
        for it (``on_timer``: it tries once, and the timer tries again)."""
        with self._start_lock:
            if getattr(job, "_tl_start", WRITTEN) not in (UNWRITTEN, UNSURE):
                return
            if on_timer:
                try:
                    self._send_start(job, with_totals=True)
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    job._tl_start = UNSURE  # type: ignore[attr-defined]
                    self.log.debug("Worker %s: the start of job %s was not written (%s)", self.name, job.id, exc)
                    return
            else:
                what = f"it records the start of job {job.id}"
                self.riding_out(lambda: self._send_start(job, with_totals=False), what, stoppable=False)
            job._tl_write_start = None  # type: ignore[attr-defined]
            if self._unwritten is not None and self._unwritten[0] is job:
                self._unwritten = None

    def _send_start(self, job: Job, with_totals: bool) -> None:
        """One try of :meth:`_write_start`, under its lock: the job's state is WRITTEN or FENCED after
        it, unless Redis did not answer (raised, UNSURE: sent again, it is fenced if the first was
        applied, and the running mark then says so). ``with_totals`` (the timer, while the task runs
        on): the counts held are written too, not held through a long task."""
        execution: Execution = job._tl_execution  # type: ignore[attr-defined]
        ttl = self.get_heartbeat_ttl(job)
        job._tl_start = UNSURE  # type: ignore[attr-defined]
        held = self._totals if with_totals and self._totals.held else None
        with self.connection.pipeline() as pipe:
            # Written only while it is still this worker's claim, and still queued: not revoked meanwhile.
            pipe.execute_command(FENCE_QUEUED, claimed_key(self.name), job.id, job.key)
            if held is not None:
                held.write(pipe, self.key)
            status, last_heartbeat = job._status, job.last_heartbeat  # the task may have ended meanwhile
            self._queue_start(job, ttl, pipe, execution)
            job._status, job.last_heartbeat = status, last_heartbeat
            try:
                replies = execute(self.connection, pipe)
            except Fenced:
                if self.connection.get(running_key(job.id)) == execution.id.encode():
                    replies = [0]  # the first was applied; its count of dependents is lost: RQ's path
                else:
                    job._tl_start = FENCED  # type: ignore[attr-defined]
                    self._stored_state = None  # unknown: written again next time
                    return
        if held is not None:
            self._totals = events.Totals()  # written with the start
        self.executions[execution.id] = execution
        self.running = (execution, job.started_job_registry, ttl)
        self._fast_job_id = job.id if replies[-1] == 0 and len(replies) > 1 else None
        job._tl_start = WRITTEN  # type: ignore[attr-defined]

    def _take_start(self, job: Job) -> str:
        """Where ``job``'s start stands as its success is to be recorded: an unwritten one becomes
        COMMITTING (the timer leaves it alone from now on); an UNSURE one is settled first."""
        with self._start_lock:
            state = getattr(job, "_tl_start", WRITTEN)
            if state == UNWRITTEN:
                job._tl_start = COMMITTING  # type: ignore[attr-defined]
                self._unwritten = None
                return COMMITTING
        if state == UNSURE:
            self._write_start(job)
            state = job._tl_start  # type: ignore[attr-defined]
        return state

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: StartedJobRegistry | None = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        """RQ's failure path (see :class:`~tasklab.engine.fencing.FencingWorker`), after the job's start,
        if it was left unwritten."""
        self._write_start(job)
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)

    def handle_job_retry(self, job: Job, queue: Queue, retry: Any, started_job_registry: Any, execution: Any) -> None:
        """RQ's path for a job that returned a ``Retry``, after its start, if it was left unwritten."""
        self._write_start(job)
        super().handle_job_retry(job=job, queue=queue, retry=retry, started_job_registry=started_job_registry,
                                 execution=execution)  # fmt: skip

    def _fenced(self, job: Job, outcome: str) -> None:
        if getattr(job, "_tl_start", None) == FENCED:  # a late start fenced (revoked) leaves the claim: it goes
            try:
                self.connection.lrem(claimed_key(self.name), 1, job.id)
            except (redis.ConnectionError, redis.TimeoutError):
                self._claims_unsure = True  # left in the claimed list: it goes before the next claim
        super()._fenced(job, outcome)

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        self._start_timer = StartTimer(self)
        self._start_timer.start()

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
        except Fenced:
            self._start_fenced(job)
            raise
        except (redis.ConnectionError, redis.TimeoutError):
            # Lost with the reply: whether the start was applied is unknown; sent again, it is
            # fenced if it was (the claim is gone), and then the running mark says so.
            self._own_connection().disconnect()
            replies = self._start_again(job, call, expected)
        except BaseException:
            self._own_connection().disconnect()
            raise
        self._started(job, replies)

    def _start_again(self, job: Job, call: list, expected: int) -> list:
        try:
            return self.riding_out(lambda: self._run(call, expected), f"it starts job {job.id}", stoppable=False)
        except Fenced:
            key, execution_id = job._tl_running  # type: ignore[attr-defined]
            if self.connection.get(key) == execution_id.encode():  # the first one was applied
                return [None] * (expected - 1) + [0]
            self._start_fenced(job)
            raise

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        """RQ's, in fewer steps for a job run with its start unwritten (:meth:`_perform_short`)."""
        if getattr(job, "_tl_start", None) != UNWRITTEN or job.timeout != -1 or job._success_callback_name:
            return super().perform_job(job, queue, execution)
        return self._perform_short(job, queue, execution)

    def _perform_short(self, job: Job, queue: Queue, execution: Execution) -> bool:
        """RQ's ``perform_job`` and ``_finalize_success``, the same steps in the same order, for a job run
        with its start unwritten: a tasklab task (its time limits are its own, and its RQ timeout -1 sets
        none), with no success callback and no webhooks (see :meth:`_may_leave_start_unwritten`): so
        without RQ's timeout, callback and webhook steps, which would do nothing. Its line at the end is
        written only when it would be shown (``--log-level DEBUG``: see :class:`JobLinesAtDebug`)."""
        debug = self.log.isEnabledFor(logging.DEBUG)
        try:
            self.prepare_job_execution(job, len(self.queues) == 1)
            job.started_at = now()
            if debug:
                self.log.debug("Worker %s: performing job %s ...", self.name, job.id)
            return_value = job.perform()
            if debug:
                self.log.debug("Worker %s: finished performing job %s", self.name, job.id)
            self.handle_execution_ended(job, queue, job.success_callback_timeout)
            job._result = return_value
            if isinstance(return_value, rq.Retry):
                self.handle_job_retry(job=job, queue=queue, retry=return_value,
                                      started_job_registry=queue.started_job_registry, execution=execution)  # fmt: skip
                return True
            job._status = JobStatus.FINISHED
            self.handle_job_success(job, queue, queue.started_job_registry, execution)
            if debug:
                self.log.debug("Worker %s: %s: %s (%s)", self.name, green(job.origin), blue("Job OK"), job.id)
                if return_value is not None:
                    self.log.debug("Worker %s: result: %r", self.name, return_value)
        except:  # noqa: E722  # as RQ's: whatever the job raised is its failure
            self._finalize_failure(job, queue, execution, sys.exc_info())
            return False
        return True

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        if self._started_job_id != job.id:
            super().prepare_job_execution(job, remove_from_intermediate_queue)
            return
        self._started_job_id = None
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """Record the end locally; RQ also writes the job's heartbeat at once, but every path
        that follows writes it with the job's other fields, in its own transaction.

        RQ calls this first when a job ended, before it writes anything else about the job: so
        the reply to the job's start is read here, if it has not been yet.
        """
        self._confirm_start()
        if self.disable_default_exception_handler:  # the one failure path that saves nothing
            super().handle_execution_ended(job, queue, heartbeat_ttl)
            return
        job.ended_at = job.last_heartbeat = now()

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution
    ) -> None:
        """Finish a successful job in one transaction, or by RQ's path when it may have
        dependents, repeats, or a result that is not kept. While Redis does not answer, the worker
        holds the outcome until it does; the one transaction is then tried again until it is known
        to be applied, by this worker or (a settled job) by no one (see :meth:`_finish_again`)."""
        what = f"it records the outcome of job {job.id}"
        if not self._fast(job):  # RQ's path runs once, and only once Redis answers (a PING first)
            self.wait_for_redis(what)
        try:
            self._finish_success(job, queue, started_job_registry, execution, take_next=True)
        except (redis.ConnectionError, redis.TimeoutError):
            if not self._fast_finish:  # RQ's path is not tried twice: the lease settles the job
                raise
            self.connection_lost()
            self.riding_out(lambda: self._finish_again(job, queue, started_job_registry, execution), what,
                            stoppable=False)  # fmt: skip

    def _fast(self, job: Job) -> bool:
        """Whether ``job`` finishes by the one-transaction path: it had no dependents when it started,
        keeps its result, and does not repeat."""
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        return not (self._fast_job_id != job.id or result_ttl == 0 or (job.repeats_left or 0) > 0)

    def _finish_again(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution
    ) -> None:
        """After the fast path's transaction lost its reply: if the running mark still names this
        execution, nothing was applied, and it is sent again (fenced, so applied once at most); if
        the job is finished, it was applied, and what follows the commit is done; else the job was
        settled meanwhile (see :meth:`_fenced`)."""
        mark, status = self.connection.get(running_key(job.id)), self.connection.hget(job.key, "status")
        # Finished with this execution's result: another worker may have run it since it was settled.
        latest = self.connection.xrevrange(Result.get_key(job.id), "+", "-", count=1)
        ours = bool(latest) and latest[0][1].get(b"execution_id") == execution.id.encode()
        short = getattr(job, "_tl_start", None) == COMMITTING  # fenced on its claim, not on a mark
        if short and self.connection.lpos(claimed_key(self.name), job.id) is not None:
            self._finish_short(job, queue, execution, take_next=False)  # not applied: still its claim
        elif not short and mark == execution.id.encode():
            self._finish_success(job, queue, started_job_registry, execution, take_next=False)
        elif status == JobStatus.FINISHED.encode() and ours:
            forget_finish_writes(job)
            self._totals_applied()
            self._after_commit(job, queue, dependents=True)
        else:
            self._totals_sent = None
            self._fenced(job, "SUCCESS")

    def _finish_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution, take_next: bool
    ) -> None:
        state = self._take_start(job)
        if state == COMMITTING:
            self._fast_finish = True
            self._finish_short(job, queue, execution, take_next)
            return
        if state == FENCED:
            self._fenced(job, "SUCCESS")
            return
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        self._fast_finish = self._fast(job)
        if not self._fast_finish:
            self._keep_held(False, None)  # RQ's path, then the hooks: nothing is held meanwhile
            if not owned(job):  # checked just before RQ's own writes
                self._fenced(job, "SUCCESS")
                return
            super().handle_job_success(job, queue, started_job_registry, execution)
            self.connection.delete(running_key(job.id))
            self.running = None
            if getattr(job, "_tl_finish_writes", None):  # RQ's own path: write tasklab's records after it
                with self.connection.pipeline(transaction=False) as pipe:
                    finish_writes(job, pipe)
                    pipe.execute()
                forget_finish_writes(job)
            try:
                run_success_hooks(job)  # the result is stored: now on_success and after_return
            except Exception:
                self.log.exception("Worker %s: after job %s was recorded a success", self.name, job.id)
            return
        assert job.started_at is not None and job.ended_at is not None
        # Webhooks are sent after the commit and take time: until then, the worker is busy.
        quick = not job.webhooks
        take_next, claim = self._takes_next(job, take_next and quick)
        with self.connection.pipeline() as pipe:
            # Nothing is written if the job was settled meanwhile (its lease ran out): see _fenced.
            pipe.execute_command(FENCE, running_key(job.id), execution.id)
            self.running = None  # its execution record is about to go: the lease thread leaves it
            # Read first, so that it sees Redis as it was just before these writes. Whether workers
            # are suspended is read too: by the claim of the next job, or else here.
            pipe.scard(job.dependents_key)
            reads_next = not claim and self._reads_next_status(pipe, take_next)
            done: dict[str, Any] = {
                "worker_name": self.name,
                "execution_id": execution.id,
                "execution_started_at": execution.created_at,
                "execution_ended_at": job.ended_at,
            }
            if isinstance(job, WorkerJob):
                job.write_success(result_ttl, pipe, **done)
            else:
                handle_success(job, result_ttl, pipe, **done)
            # RQ's job.cleanup(result_ttl) also sets the TTL of the job's dependents and dependencies
            # keys, which are none here: a dependent added meanwhile gets it in _after_commit.
            if result_ttl is not None and result_ttl > 0:
                pipe.expire(job.key, result_ttl)
                if depends_on_others(job):
                    pipe.expire(job.dependencies_key, result_ttl)
            end_execution(job, execution, pipe)  # RQ's cleanup_execution
            self.executions.pop(execution.id, None)
            self._commit_totals(job, pipe, write=not take_next)  # the attempt's output, event and counts
            pipe.delete(running_key(job.id))
            if quick and not take_next:
                # Written now, to spare a round trip; self._state stays busy until the job
                # has ended, as RQ's shutdown request expects. A commit that takes the next job
                # leaves the worker busy (idle is written when it found none: see dequeue).
                state_write(pipe, self, WorkerStatus.IDLE)
            replies = self._send_commit(job, pipe, claim)
        if replies is None:
            return
        suspended = self._committed(job, replies, claim)
        raise_first_error(replies)  # now that the job it took is not lost
        dependents = replies[1]
        if not claim:
            suspended = replies[2]
            self._keep_held(take_next, replies[3] if reads_next else None)
        if quick:
            if not take_next:
                self._stored_state = WorkerStatus.IDLE
            self._not_suspended = not suspended
        self._after_commit(job, queue, dependents=bool(dependents))

    def _finish_short(self, job: Job, queue: Queue, execution: Execution, take_next: bool) -> None:
        """Record the success of a job whose start was never written, in one commit fenced on the
        worker's claim (:data:`FENCE_SOLE`): counts, the job's fields (those of its start too),
        result, finished registry, the attempt's output and event, and the next job. A job found
        to have dependents gets its start and RQ's path instead."""
        assert job.started_at is not None and job.ended_at is not None
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        take_next, claim = self._takes_next(job, take_next)
        job._tl_start_skipped = True  # type: ignore[attr-defined]  # its event says where it ran
        with Commands(self.connection) as pipe:
            pipe.execute_command(FENCE_SOLE, claimed_key(self.name), job.id, job.key, job.dependents_key)
            reads_next = not claim and self._reads_next_status(pipe, take_next)  # else the claim reads the flag
            if take_next:
                self.set_state(WorkerStatus.BUSY, pipeline=pipe)  # when it was not: it goes on working
            self.heartbeat(self.get_heartbeat_ttl(job), pipeline=pipe)  # when due
            assert isinstance(job, WorkerJob)
            job.write_success(result_ttl, pipe, self.name, execution.id, execution.created_at, job.ended_at,
                              started=True)  # fmt: skip
            if result_ttl is not None and result_ttl > 0:  # as RQ's job.cleanup(result_ttl)
                pipe.expire(job.key, result_ttl)
                if depends_on_others(job):
                    pipe.expire(job.dependencies_key, result_ttl)
            else:  # kept: what RQ's start does (a job's own TTL no longer applies)
                pipe.persist(job.key)
            self._commit_totals(job, pipe, write=not take_next)
            if not take_next:
                state_write(pipe, self, WorkerStatus.IDLE)
            try:
                replies = self._send_commit(job, pipe, claim)
            except HasDependents:
                self._totals_sent = None
                pipe.reset()
                job._tl_start, job._tl_start_skipped = UNWRITTEN, False  # type: ignore[attr-defined]
                self._write_start(job)
                self._finish_success(job, queue, job.started_job_registry, execution, take_next)
                return
        if replies is None:
            return
        suspended = self._committed(job, replies, claim)
        raise_first_error(replies)
        if not claim:
            suspended = replies[1]
            self._keep_held(take_next, replies[2] if reads_next else None)
        if not take_next:
            self._stored_state = WorkerStatus.IDLE
        self._not_suspended = not suspended
        self._after_commit(job, queue, dependents=False)

    @property
    def should_run_maintenance_tasks(self) -> bool:
        """RQ's (on the first start, then every ``maintenance_interval`` seconds), with the time it is due
        worked out once per maintenance instead of a date subtraction twice a job."""
        cleaned = self.last_cleaned_at
        if cleaned is None:
            return True
        if cleaned is not self._maintenance_seen:
            self._maintenance_seen = cleaned
            self._maintenance_due = cleaned.timestamp() + self.maintenance_interval
        return time.time() > self._maintenance_due

    def _takes_next(self, job: Job, take_next: bool) -> tuple[bool, bool]:
        """Whether the worker goes on from a success's commit to the next job, and whether the commit
        claims it (the worker holds none already). It goes on if the loop is about to take one
        (``take_next``) and may do nothing else first (stop, renew its lease, run RQ's maintenance).
        Hooks left for after the commit (on_success, after_return) may take long: the next job is taken
        after them, not held meanwhile in this worker's claimed list. The claim after a commit that did
        not go on takes one job, not a batch (see :attr:`_claim_batch`)."""
        goes_on = (
            take_next and not self._stopping and self.lease is not None and self.lease.valid()
            and not self.should_run_maintenance_tasks and getattr(job, "_tl_success_hooks", None) is None
        )  # fmt: skip
        self._claim_batch = goes_on
        return goes_on, goes_on and not self._holds_jobs()

    def _reads_next_status(self, pipe: Pipeline | Commands, take_next: bool) -> bool:
        """Queue on a success's commit that claims nothing the read of the suspension flag, and of the status
        of the next job the worker holds, if it goes straight on to it and has held it longer than
        :data:`~tasklab.defaults.START_WRITTEN_AFTER` (see :meth:`_keep_held`); whether that status is read.
        A job cancelled within that time of its claim may run all the same, as one cancelled between the
        claim and the start of a job taken alone always could; the read costs a command, which a batch of
        short tasks is spared."""
        pipe.exists(WORKERS_SUSPENDED)
        held_long = time.monotonic() - self._held_since > defaults.START_WRITTEN_AFTER
        if not (take_next and self._holds_jobs() and held_long):
            return False
        next_id = self._next_job[0].id if self._next_job is not None else self._held[0][1]
        pipe.hget(self.job_class.key_for(next_id), "status")
        return True

    def _keep_held(self, take_next: bool, next_status: Any) -> None:
        """After a success's commit: the jobs the worker holds go back to the head of their queues unless it
        goes straight on to the next (``take_next``), and that one is still queued (``next_status``, if the
        commit read it: not revoked or deleted while it was held). Hooks, webhooks, maintenance or a stop may
        take long, and the job held last in the claimed list would count as run if the worker died meanwhile."""
        still_queued = next_status is None or next_status == JobStatus.QUEUED.value.encode()
        if not self._holds_jobs() or (take_next and still_queued):
            return
        try:
            self._return_held("paused between two jobs", quiet=True)
        except (redis.ConnectionError, redis.TimeoutError):
            self.connection_lost()  # they go back once Redis answers (see _wait_for_job)

    def _send_commit(self, job: Job, pipe: Pipeline | Commands, claim: bool) -> list | None:
        """Send a success's commit (see :meth:`_execute`); its replies, or ``None`` if its fence stopped
        it: the job was settled or revoked meanwhile (see :meth:`_fenced`)."""
        try:
            return self._execute(pipe, claim=claim)
        except Fenced:
            self._totals_sent = None
            self._fenced(job, "SUCCESS")
            return None

    def _committed(self, job: Job, replies: list, claim: bool) -> bool | None:
        """After a success's commit was applied: its writes and counts are no longer held, and the jobs
        it claimed (``claim``) are held for the loop, which reads them as it takes them. Whether the
        claim found workers suspended (``None`` when it did not look)."""
        forget_finish_writes(job)
        self._totals_applied()
        if not claim:
            return None
        popped = replies[-1]
        if isinstance(popped, list):
            self._hold(popped)
        self._queues_were_empty = not popped
        return popped == SUSPENDED

    def _after_commit(self, job: Job, queue: Queue, dependents: bool) -> None:
        """What follows a success's commit. The outcome is recorded: nothing here may turn it into a
        failure (RQ's perform_job would record one for any exception), so errors are logged."""
        try:
            self._follow_commit(job, queue, dependents)
        except Exception:
            self.log.exception("Worker %s: after job %s was recorded a success", self.name, job.id)

    def _follow_commit(self, job: Job, queue: Queue, dependents: bool) -> None:
        if dependents:  # added while the job ran; the commit made it FINISHED for them
            try:
                result_ttl = job.get_result_ttl(self.default_result_ttl)
                if result_ttl is not None and result_ttl > 0:  # as RQ's job.cleanup(result_ttl)
                    self.connection.expire(job.dependents_key, result_ttl)
                queue.enqueue_dependents(job)
            except Exception:
                self.log.exception("Worker %s: failed to enqueue dependents of job %s", self.name, job.id)
        release_slot(job)
        run_success_hooks(job)  # the result is stored: now on_success and after_return, as Celery
        assert job.started_at is not None and job.ended_at is not None
        if self.log.isEnabledFor(logging.DEBUG):  # its argument costs more than the check
            self.log.debug("Worker %s: job %s finished in %s", self.name, job.id, job.ended_at - job.started_at)

    def teardown(self) -> None:
        if self._start_timer is not None:
            self._start_timer.stop()
        try:
            if self._totals.held or self._idle_writes:
                self._write_idle()
        except Exception:
            self.log.exception("Worker %s: could not record the counts it held", self.name)
        try:  # the jobs it holds, and any claim whose reply was lost on the way
            self._return_held("stopped" if self._holds_jobs() else "is gone")
        except Exception:
            self.log.exception("Worker %s: could not put back the job it had taken", self.name)
        if self._transaction_connection is not None:
            self._transaction_connection.disconnect()
        super().teardown()


#: Seconds the :class:`StartTimer` stays awake with no job to watch before it sleeps until the next one.
START_TIMER_AWAKE = 1.0


class StartTimer(threading.Thread):
    """Writes the start of the job its worker runs with its start unwritten, once the job has run
    :data:`~tasklab.defaults.START_WRITTEN_AFTER` seconds (see :class:`Worker`): a longer task is
    STARTED in Redis, with its RQ execution record, as any other."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(name="tasklab-start", daemon=True)
        self.worker = worker
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._asleep = True  # waits for wake(): no job has begun with its start unwritten for a while

    def wake(self) -> None:
        """A job began with its start unwritten (:attr:`Worker._unwritten` is set first). Only a timer
        asleep is woken: an awake one looks every :data:`~tasklab.defaults.START_WRITTEN_AFTER` seconds
        by itself, so that a burst of short tasks costs no thread switch per task."""
        if self._asleep:
            self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        after = defaults.START_WRITTEN_AFTER
        idle_since: float | None = -math.inf  # awake, and no job found to watch since then: asleep at first
        while not self._stopping.is_set():
            pending = self.worker._unwritten
            if pending is None:
                clock = time.monotonic()
                if idle_since is None:
                    idle_since = clock
                if clock - idle_since < START_TIMER_AWAKE:
                    self._stopping.wait(after)  # a job that begins meanwhile is seen in time
                    continue
                # Asleep until the next such job: the flag before the look, so that wake() sets the event
                # for any job this look misses (see wake), and the event cleared before the look too.
                self._asleep = True
                self._wake.clear()
                if self.worker._unwritten is None and not self._stopping.is_set():  # stop() sets both, in turn
                    self._wake.wait()
                self._asleep, idle_since = False, None
                continue
            idle_since = None
            job, since = pending
            left = since + after - time.monotonic()
            if left > 0:
                self._stopping.wait(left)
                continue
            try:
                self.worker._write_start(job, on_timer=True)
            except Exception:
                self.worker.log.exception("Worker %s: could not write the start of job %s", self.worker.name, job.id)
            if self.worker._unwritten is pending:  # not written (Redis did not answer): soon again
                self._stopping.wait(defaults.LEASE_RETRY_INTERVAL)
