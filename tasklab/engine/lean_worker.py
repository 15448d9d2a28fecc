"""RQ's SimpleWorker with less bookkeeping and tasklab's process life.

* Worker heartbeats go at most once per :attr:`LeanWorker.heartbeat_interval`, and always in
  time for the worker key to outlive the job; the worker state is written only when it changes;
  a suspension check already answered by the last commit is not asked again.
* RQ's scheduler runs on a thread of the worker, not in a forked process, so delayed and retried
  jobs are enqueued and no process is left behind when the worker dies.
* A stop request (SIGTERM, or :meth:`LeanWorker.stop_soon` before the loop has begun) lets the
  running job finish and takes no next one; :attr:`LeanWorker.stop_signal_hook` sees the signal first.
* It holds a lease (:mod:`tasklab.engine.leases`), renewed by a thread, and takes no job while
  the lease may have run out.
* It rides out a Redis outage: each step of its loop that talks to Redis waits for Redis to
  answer again, with backoff, logging one line when the outage begins and one when it ends;
  RQ's loop would log a traceback and quit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.client import Pipeline
from rq import worker_registration
from rq.exceptions import StopRequested
from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker

from .. import defaults
from .leases import LeaseKeeper
from .rq_private import set_state_locally
from .scheduler import SchedulerThread

T = TypeVar("T")


class LeanWorker(SimpleWorker):
    """See the module's text. :class:`tasklab.engine.worker.Worker` adds the per-job fast path."""

    scheduler_interval: float = defaults.SCHEDULER_INTERVAL
    #: Seconds between two worker heartbeats while jobs keep the worker busy.
    heartbeat_interval: float = defaults.WORKER_HEARTBEAT_INTERVAL
    _scheduler_thread: SchedulerThread | None = None
    #: Called on SIGTERM or SIGINT before RQ's warm shutdown; returning True means the signal
    #: was handled (the worker process tells its parent's death from a stop request with it).
    stop_signal_hook: Callable[[], bool] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._heartbeat_sent_at = -math.inf  # time.monotonic() of the last heartbeat sent
        self._heartbeat_expires_at = -math.inf  # when the worker key expires, by that clock
        self._stored_state: str | None = None  # the state last written to Redis
        self._not_suspended = False  # the last commit found no suspension; skip one check
        self._stopping = False  # asked to stop: take no next job
        self._scheduler_on_thread = False  # work() runs RQ's scheduler on a thread
        self.lease: LeaseKeeper | None = None  # from bootstrap() on
        self._outage_since: float | None = None  # time.monotonic() when Redis stopped answering

    # -- riding out an outage --

    def riding_out(self, action: Callable[[], T], what: str, *, stoppable: bool = True) -> T:
        """``action()``, tried again with backoff while Redis does not answer, until it does; the
        worker logs one line when the outage begins and one when it ends. Only for actions that may
        run twice (a write whose reply was lost is written again). Asked to stop meanwhile, a
        ``stoppable`` wait stops (RQ's :class:`StopRequested`, outside a job's run only): what the
        worker held is settled by its lease running out."""
        backoff = 0.0
        while True:
            try:
                result = action()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if stoppable and (self._stopping or self._stop_requested):
                    self.connection_lost()
                    raise StopRequested() from exc
                backoff = self.unreachable(exc, what, backoff)
                continue
            self.connection_back()
            return result

    def unreachable(self, exc: Exception, what: str, backoff: float) -> float:
        """After a call Redis did not answer: drop half-used connections, log the outage's start
        once, and sleep the next backoff, which is returned (pass 0.0 first)."""
        self.connection_lost()
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self.log.warning("Worker %s: Redis is unreachable (%s); %s once it answers", self.name, exc, what)
        backoff = min(max(backoff * 2, 0.1), defaults.RECONNECT_BACKOFF_MAX)
        time.sleep(backoff)  # the backoff between two tries
        return backoff

    def wait_for_redis(self, what: str) -> None:
        """Return once Redis answers (at once, mostly), for a write that must be made once: the
        outcome of a job. Not stopped by a stop request: the job's outcome is held until then."""
        self.riding_out(self.connection.ping, what, stoppable=False)

    def connection_lost(self) -> None:
        """A call failed because Redis did not answer: drop connections that may be half-used."""

    def connection_back(self) -> None:
        """Redis answered: log the end of the outage, if there was one."""
        if self._outage_since is not None:
            self.log.warning(
                "Worker %s: Redis answers again, after %.1f s", self.name, time.monotonic() - self._outage_since
            )
            self._outage_since = None

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

            def send() -> None:
                with self.connection.pipeline(transaction=False) as pipe:
                    super(LeanWorker, self).heartbeat(timeout, pipe)
                    worker_registration.register(self, pipe)
                    pipe.execute()

            self.riding_out(send, "its heartbeat goes")
        else:
            super().heartbeat(timeout, pipeline)
            # Listed again with each heartbeat: a Redis that came back empty, or lost the worker sets,
            # lists the worker again within a heartbeat, whatever noticed it or not.
            worker_registration.register(self, pipeline)
        self._heartbeat_sent_at = clock
        self._heartbeat_expires_at = clock + timeout

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        set_state_locally(self, state)
        if state != self._stored_state:
            if pipeline is None:
                self.riding_out(lambda: super(LeanWorker, self).set_state(state), f"it records its state {state}")
            else:
                super().set_state(state, pipeline)
            self._stored_state = state

    def register_birth(self) -> None:
        super().register_birth()
        self._stored_state = None  # a new worker hash, without a state

    def check_for_suspension(self, burst: bool) -> None:
        if self._stopping:  # RQ's wait for a resume ends only on its own stop flag
            return
        if self._not_suspended:  # read by the commit of the job that just ended
            self._not_suspended = False
            return
        self.riding_out(lambda: super(LeanWorker, self).check_for_suspension(burst), "it goes on")

    def run_maintenance_tasks(self) -> None:
        self.riding_out(super().run_maintenance_tasks, "it cleans RQ's registries")

    def _pubsub_exception_handler(self, exc: Exception, pubsub: Any, pubsub_thread: Any) -> None:
        """RQ's pubsub thread (commands such as a stop) tries again after a lost connection; its
        error is at DEBUG, since the loop and the lease thread log the outage once."""
        if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
            self.log.debug("Worker %s: pubsub: Redis is unreachable (%s); trying again", self.name, exc)
            time.sleep(defaults.RECONNECT_BACKOFF_MAX)  # the pause before the thread's next try
            return
        super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)

    # -- process life --

    def work(self, burst: bool = False, **options: Any) -> bool:  # type: ignore[override]  # RQ's keywords pass
        """RQ's work loop (RQ's options by keyword). With ``with_scheduler`` (not with ``burst``, where
        RQ enqueues the due jobs once), RQ's scheduler runs on a thread of this process, not a forked one."""
        with_scheduler = options.pop("with_scheduler", False)
        self._scheduler_on_thread = with_scheduler and not burst
        return super().work(burst, with_scheduler=with_scheduler and burst, **options)

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)  # registered: now it may hold a lease and scheduler locks
        self.lease = LeaseKeeper(self.connection, self.name, on_lost=self._registered_again, extend=self.extend_running)
        self.lease.renew()  # held before the first job is taken
        self.lease.start()
        if self._scheduler_on_thread:
            self._scheduler_thread = SchedulerThread(
                self.queues, self.connection, self.serializer, self.scheduler_interval
            )
            self._scheduler_thread.start()

    def stop_soon(self) -> None:
        """Take no more jobs: the loop ends at its next dequeue (also before work() has begun)."""
        self._stopping = True

    def handle_warm_shutdown_request(self) -> None:
        self._stopping = True  # the commit of the running job takes no next one
        super().handle_warm_shutdown_request()

    def request_stop(self, signum: int, frame: Any) -> None:
        """RQ's warm shutdown on SIGTERM or SIGINT, unless :attr:`stop_signal_hook` handles the signal."""
        if self.stop_signal_hook is not None and self.stop_signal_hook():
            return
        try:
            super().request_stop(signum, frame)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # RQ writes the request's date while a job runs; in an outage, from this signal handler,
            # that error would surface wherever the worker was. It stops after the job all the same.
            self._stop_requested = True
            self.log.warning("Worker %s: stopping after its job; Redis did not take the stop's date (%s)",
                             self.name, exc)  # fmt: skip

    def unsubscribe(self) -> None:
        # RQ joins its pubsub thread for up to a second; the process is about to exit anyway.
        # The (daemon) thread closes its connection when it stops: closing it under the thread
        # here made it log a traceback at every exit.
        if self.pubsub_thread:
            self.pubsub_thread.stop()

    def teardown(self) -> None:
        if self._scheduler_thread is not None:
            self._scheduler_thread.stop()
        if self.lease is not None:
            self.lease.stop()
        super().teardown()

    def extend_running(self, pipe: Pipeline) -> bool:
        """Queue the renewal of what the running job needs renewed (see :class:`tasklab.engine.worker.Worker`)."""
        return False

    def _registered_again(self) -> None:
        """The lease had run out (a freeze, a lost link) and whoever settled its jobs unregistered
        this worker: it registers again, as it goes on working."""
        for _ in range(5):  # the main thread's heartbeat may write the record between the two steps
            try:
                self.connection.delete(self.key)  # what its heartbeats wrote meanwhile, if any
                self.register_birth()
            except ValueError:  # RQ's "an active worker exists": our own heartbeat's fields
                continue
            except Exception:
                self.log.exception("Worker %s: could not register again after its lease ran out", self.name)
            self._heartbeat_expires_at = -math.inf  # the next heartbeat is due
            return

    def holds_lease(self) -> bool:
        """Whether this worker may take a job: its lease is known to be held (see :mod:`tasklab.engine.leases`).
        While it may have run out, the worker waits for a renewal instead, or for a stop request."""
        while self.lease is not None and not self.lease.valid():
            if self._stopping:
                return False
            self.lease.wait_valid(defaults.LEASE_RENEW_INTERVAL)
        return True

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """RQ's dequeue, once the lease is held; ``None`` (the loop ends) once asked to stop."""
        if self._stopping or not self.holds_lease():
            return None
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
