"""What a worker runs for one job: find the task's code version, call it, record the outcome.

Every tasklab job calls :func:`execute_task`. The job's meta names the task and its code
version, which :mod:`tasklab.code.loader` loads once per worker process. Around the call,
this runs Celery's lifecycle hooks, captures what the task prints, and stores the exception
so that ``result.get()`` can re-raise it with its own type.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, TypeVar

import redis
from rq import get_current_job
from rq.job import Job
from rq.results import Result

from .. import defaults
from ..code.loader import task_for
from ..code.serialization import Serializer, dumps
from ..core.hooks import ExceptionInfo, call_hook
from ..core.request import Request, request_stack
from ..core.retries import Decision, decide
from ..core.task import Task
from ..errors import (
    NotRegistered,
    SerializationError,
    SoftTimeLimitExceeded,
    TaskLabError,
    TaskRevokedError,
    TimeLimitExceeded,
)
from . import events, keys, reports
from .capture import OutputCapture
from .fence import owned
from .ratelimit import META_RATE, META_SLOT, take_start
from .records import expire, record_exception
from .rq_private import current_job, uncount_failed_job, worker_key
from .workflow import META_ERRBACKS, META_LINKS, callback_writes, has_callbacks

log = logging.getLogger("tasklab.runtime")

T = TypeVar("T")
SUCCESS, FAILURE = "SUCCESS", "FAILURE"  # the statuses after_return is called with
_PLAIN = (type(None), bool, int, float, str, bytes)


def execute_task(*args: Any, **kwargs: Any) -> Any:
    """Run the task named by the current job's meta (the ``func`` of every tasklab job)."""
    job = get_current_job()
    if job is None:
        raise TaskLabError("execute_task runs inside an RQ job only: submit the task with delay() or apply_async().")
    meta = job.meta
    attempt = int(meta.get(keys.META_RETRIES, 0))
    started = time.time()
    capture = OutputCapture()
    stack = request_stack()
    expires = expires_at(job)
    if expires is not None and started > expires:
        _revoke_expired(job, attempt, capture, started, expires)
    if meta.get(META_RATE):
        _take_rate_slot(job)
    with capture:
        try:
            task = _riding_out(job, lambda: task_for(meta[keys.META_VERSION], meta[keys.META_TASK]))
        except Exception as exc:
            job.retries_left = 0
            _record(job, attempt, capture, exc, started)
            raise
        parents = meta.get(keys.META_PARENTS)
        if parents:
            try:
                values = _riding_out(job, lambda: [parent_value(job.connection, parent) for parent in parents])
            except Exception as exc:
                job.retries_left = 0
                _record(job, attempt, capture, exc, started)
                raise
            args = ((values[0],) if meta.get(keys.META_MERGE) == "one" else (values,)) + tuple(args)
        request = _request_of(job, task, args, kwargs, attempt)
        try:
            _started(job)
        except Exception as exc:  # the start could not be written: fail the attempt, on the record
            job.retries_left = 0
            _record(job, attempt, capture, exc, started)
            raise
        stack.append(request)
        try:
            call_hook(task, "before_start", job.id, job.id, args, kwargs)
            try:
                with time_limits(meta.get(keys.META_SOFT_TIME_LIMIT), meta.get(keys.META_TIME_LIMIT), job):
                    retval = task(*args, **kwargs)
                if not isinstance(retval, _PLAIN):
                    _check_serialisable(task, retval)
            except Exception as exc:
                _failed(job, task, request, capture, exc, started)
                raise
            hooks = lambda: _success_hooks(task, job.id, retval, args, kwargs)  # noqa: E731
            if getattr(job, "_tl_finish_writes", None) is not None and _has_success_hooks(task):
                # tasklab's worker stores the result first, then runs them (see run_success_hooks),
                # so that a slow handler does not delay get(), as in Celery.
                job._tl_success_hooks = (hooks, request, attempt)  # type: ignore[attr-defined]
            else:
                hooks()
        finally:
            stack.pop()
            reports.reporter.discard(job.id)  # from now on, the state is the attempt's outcome
    _record(job, attempt, capture, None, started)
    return retval


def _hooks_pending(pipe: Any, job_id: str, attempt: int, ttl: int | None) -> None:
    """Queue the mark that the success hooks of ``attempt`` have yet to run (see run_success_hooks)."""
    pipe.hset(keys.output_key(job_id), keys.OUTPUT_HOOKS_PENDING, f"{attempt} {time.time()!r}")
    expire(pipe, keys.output_key(job_id), ttl)


def _has_success_hooks(task: Task) -> bool:
    return type(task).on_success is not Task.on_success or type(task).after_return is not Task.after_return


def _success_hooks(task: Task, task_id: str, retval: Any, args: tuple, kwargs: dict) -> None:
    call_hook(task, "on_success", task_id, retval, task_id, args, kwargs)
    call_hook(task, "after_return", task_id, SUCCESS, retval, task_id, args, kwargs, None)


def run_success_hooks(job: Job) -> None:
    """Run the ``on_success`` and ``after_return`` hooks the runtime left for after the commit that
    stored ``job``'s result (tasklab's worker calls this then), with the task's request, and add
    what they print to the attempt's output (``AsyncResult.output`` waits for them)."""
    pending = getattr(job, "_tl_success_hooks", None)
    if pending is None:
        return
    job._tl_success_hooks = None  # type: ignore[attr-defined]
    hooks, request, attempt = pending
    capture, stack = OutputCapture(), request_stack()
    stack.append(request)
    try:
        with capture, current_job(job):
            hooks()
    finally:
        stack.pop()
        text = capture.text()
        key = keys.output_key(job.id)
        try:
            with job.connection.pipeline() as pipe:
                if text and job.result_ttl != 0:  # after what the attempt printed before
                    earlier = getattr(job, "_tl_attempt_text", "")
                    pipe.hset(key, str(attempt), (earlier + text)[-defaults.OUTPUT_LIMIT :])
                    expire(pipe, key, job.result_ttl)
                pipe.hdel(key, keys.OUTPUT_HOOKS_PENDING)
                pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError):
            log.warning("job %s: what its success hooks printed was not recorded (Redis did not answer)", job.id)


class RateLimited(TaskLabError):
    """Raised by the runtime to put a job back until its rate-limit slot (not a failure, nor a retry)."""


def _revoke_expired(job: Job, attempt: int, capture: OutputCapture, started: float, expires: float) -> None:
    """Revoke ``job`` instead of running it: it was not started before ``expires`` (Celery's
    ``expires``). Its history row is REVOKED, with the reason "expired"; ``get()`` raises
    :class:`TaskRevokedError`. The worker records the job STOPPED (state REVOKED) where it offers
    the hook for it (``job._tl_mark_stopped``); the result reads the state from the exception."""
    job.retries_left = 0
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(expires))
    exc = TaskRevokedError(f"Task {job.id} expired at {when} UTC before it started, so it was revoked (expires).")
    mark_stopped = getattr(job, "_tl_mark_stopped", None)
    if mark_stopped is not None:
        mark_stopped()
    _record(job, attempt, capture, exc, started, kind=events.REVOKED, reason="expired")
    raise exc


def _take_rate_slot(job: Job) -> None:
    """Start ``job`` only in a free slot of its task's rate limit (see :mod:`tasklab.engine.ratelimit`);
    else put it back, scheduled for its slot, through RQ's retry path without counting a retry or
    recording a failure, and raise :class:`RateLimited` for the worker to go on with its next job."""
    key, rate = job.meta[META_RATE]
    held = job.meta.get(META_SLOT)
    _ensure_started(job)  # before anything else about the attempt is written
    slot = take_start(job.connection, key, rate, held)
    if slot is None:
        if held is not None:
            job.meta.pop(META_SLOT, None)
            job.meta.pop(keys.META_HELD, None)
            job.save_meta()
        return
    job.meta[META_SLOT] = slot
    job.meta[keys.META_HELD] = "rate_limit"
    with job.connection.pipeline() as pipe:
        pipe.hset(job.key, "meta", Serializer.dumps(job.meta))  # signed as a job's, as WorkerJob.save_meta
        if job.worker_name:  # RQ's retry path counts a failed job for the worker: this is none
            uncount_failed_job(pipe, job.worker_name)
        pipe.execute()
    job.retries_left, job.retry_intervals = 1, [max(slot - time.time(), 0.001)]  # type: ignore[list-item]
    raise RateLimited(f"job {job.id} waits for its rate-limit slot at {slot:.3f} ({rate})")


@functools.cache
def _hostname() -> str:
    """This machine's name, asked once per process (a system call, else on each job)."""
    return socket.gethostname()


def _request_of(job: Job, task: Task, args: tuple, kwargs: dict, attempt: int) -> Request:
    """``self.request`` for an attempt of ``job``, with what the job's record tells of it."""
    meta = job.meta
    parents = meta.get(keys.META_PARENTS) or ()
    limits = (meta.get(keys.META_TIME_LIMIT), meta.get(keys.META_SOFT_TIME_LIMIT))
    callbacks, errbacks = links_of(job)
    return Request(
        id=job.id, args=args, kwargs=kwargs, retries=attempt, worker=job.worker_name, queue=job.origin,
        version=task._tl_version, called_directly=False,
        hostname=f"{job.worker_name}@{_hostname()}" if job.worker_name else _hostname(),
        delivery_info={"exchange": "", "routing_key": job.origin, "queue": job.origin, "priority": None},
        group=job.group_id, root_id=meta.get(keys.META_WORKFLOW) or job.id,
        parent_id=parents[-1] if parents else None, is_eager=False, timelimit=limits, correlation_id=job.id,
        report_state=reports.reporter_for(job.connection, job.id, attempt),
        expires=_iso(expires_at(job)), callbacks=callbacks, errbacks=errbacks,
    )  # fmt: skip


def links_of(job: Job) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
    """``self.request``'s ``callbacks`` and ``errbacks``: the task and job id of each of the job's
    ``link`` and ``link_error`` (``None`` when it has none, as Celery's)."""
    links = [{"task": entry["task"], "id": entry["id"]} for entry in job.meta.get(META_LINKS) or ()]
    errbacks = [
        {"task": entry[1]["task"], "id": entry[1]["id"]} if entry[0] == "apply" else {"task": entry[2], "id": None}
        for entry in job.meta.get(META_ERRBACKS) or ()
    ]
    return links or None, errbacks or None


def expires_at(job: Job) -> float | None:
    """When ``job`` expires (a timestamp), if it does: given at submit, or for a callback given in
    seconds, counted from when it was applied (queued)."""
    meta = job.meta
    after = meta.get(keys.META_EXPIRES_AFTER)
    if after is not None and job.enqueued_at is not None:
        return float(job.enqueued_at.timestamp() + after)
    expires = meta.get(keys.META_EXPIRES)
    return float(expires) if expires is not None else None


def _iso(timestamp: float | None) -> str | None:
    """A timestamp as Celery's request shows times: ISO 8601, in UTC."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc).isoformat()


def _started(job: Job) -> None:
    """Make sure the job's start is in Redis, where it is written before the task runs.

    tasklab's worker sent it before the job began and left the reading of Redis's reply to
    now (``job._tl_confirm_start``), so that the task was got ready meanwhile; or it writes it
    only if the task is still running a moment later (``job._tl_write_start``: see
    :func:`_ensure_started`). On other RQ workers, the STARTED event is written here.
    """
    confirm = getattr(job, "_tl_confirm_start", None)
    if confirm is not None:
        confirm()
    elif not getattr(job, "_tl_started_written", False):
        with job.connection.pipeline(transaction=False) as pipe:
            start_writes(job, pipe, job.worker_name)
            pipe.execute()


def _ensure_started(job: Job) -> None:
    """Make sure the job's start is in Redis, before anything about the attempt is written but the
    success that tasklab's worker commits itself: a start the worker left unwritten, for a short
    task, is written now (``job._tl_write_start``)."""
    _started(job)
    write = getattr(job, "_tl_write_start", None)
    if write is not None:
        write()


def start_writes(job: Job, pipe: Any, worker_name: str | None, ts: float | None = None) -> None:
    """Queue the STARTED event of a tasklab job on ``pipe`` (tasklab's worker: in its own
    start transaction), at ``ts`` (default: now), and mark it written; nothing for other jobs."""
    meta = job.meta
    if keys.META_TASK not in meta:
        return
    events.emit_for(
        pipe, events.STARTED, job, n=int(meta.get(keys.META_RETRIES, 0)), w=worker_name, q=job.origin,
        v=meta.get(keys.META_VERSION), ts=ts,
    )  # fmt: skip
    job._tl_started_written = True  # type: ignore[attr-defined]


def defer_finish_writes(job: Job) -> None:
    """From now on, collect the writes of a successful attempt of ``job`` (its output and
    event) for the caller, tasklab's worker, to send with its finish transaction
    (:func:`finish_writes`), so that an attempt costs no round trip of its own. Other RQ
    workers don't, and the runtime writes them itself."""
    job._tl_finish_writes = []  # type: ignore[attr-defined]


def finish_writes(job: Job, pipe: Any) -> None:
    """Queue on ``pipe`` the writes a successful attempt left for the worker's finish transaction
    (kept until :func:`forget_finish_writes`: a finish that did not reach Redis is sent again)."""
    for write in getattr(job, "_tl_finish_writes", None) or ():
        write(pipe)


def forget_finish_writes(job: Job) -> None:
    """Forget the writes a successful attempt left: sent, or not to be sent (the job was settled
    meanwhile: see :func:`owned`)."""
    job._tl_finish_writes = None  # type: ignore[attr-defined]


def attempt_of(job: Job) -> int:
    """The number of the attempt ``job`` is (0 for the first)."""
    return int(job.meta.get(keys.META_RETRIES, 0))


def parent_value(connection: redis.Redis, job_id: str) -> Any:
    """The return value of the finished job ``job_id`` (a workflow step this job follows)."""
    for entry_id, payload in connection.xrevrange(Result.get_key(job_id), "+", "-"):
        result = Result.restore(job_id, entry_id.decode(), payload, connection, Serializer)
        if result.type == Result.Type.SUCCESSFUL:
            return result.return_value
    raise NotRegistered(f"The result of job {job_id}, which this step follows, is gone (expired or never stored).")


def _riding_out(job: Job, read: Callable[[], T]) -> T:
    """``read()`` (of the task's code, or of a parent's result), tried again once Redis answers
    when it did not, where tasklab's worker runs the job: an outage is no failure of the task."""
    while True:
        try:
            return read()
        except (redis.ConnectionError, redis.TimeoutError):
            if getattr(job, "_tl_wait_for_redis", None) is None:
                raise
            _wait_for_redis(job)


def _wait_for_redis(job: Job) -> None:
    """Return once Redis answers, where tasklab's worker runs the job (``job._tl_wait_for_redis``)."""
    wait = getattr(job, "_tl_wait_for_redis", None)
    if wait is not None:
        wait()


def _failed(job: Job, task: Task, request: Request, capture: OutputCapture, exc: Exception, started: float) -> None:
    """Run the hooks of a failed attempt and set up RQ to retry it or to fail the job for good.

    Returns normally, after which the caller re-raises ``exc`` for RQ: RQ retries a job while
    ``job.retries_left`` is positive, after ``job.retry_intervals`` seconds.
    """
    _ensure_started(job)  # a failure is recorded as RQ records it: of a started job
    _wait_for_redis(job)  # in an outage, the attempt's outcome is held until Redis answers
    if not owned(job):  # settled meanwhile: the worker records this outcome as a duplicate
        return
    options = type(task).task_options()
    decision = Decision(False, exc) if isinstance(exc, TimeLimitExceeded) else decide(options, exc, request.retries)
    reported = decision.exc
    einfo = ExceptionInfo(reported, type(reported), traceback.format_exc())
    args, kwargs = request.args, request.kwargs
    if decision.retry:
        call_hook(task, "on_retry", job.id, reported, job.id, args, kwargs, einfo)  # no after_return, as Celery
        job.meta[keys.META_RETRIES] = request.retries + 1
        job.save_meta()
        job.retries_left, job.retry_intervals = 1, [decision.delay]  # type: ignore[list-item]  # RQ takes floats
        log.info("job %s of %s: retry %d in %.2f s after %r", job.id, task.name, request.retries + 1,
                 decision.delay, reported)  # fmt: skip
        _record(job, request.retries, capture, reported, started, retry_at=time.time() + decision.delay)
        return
    job.retries_left = 0
    _call_errbacks(job, request, reported, einfo.traceback)
    call_hook(task, "on_failure", job.id, reported, job.id, args, kwargs, einfo)
    call_hook(task, "after_return", job.id, FAILURE, reported, job.id, args, kwargs, einfo)
    _record(job, request.retries, capture, reported, started)
    if reported is not exc:
        raise reported from exc


def _call_errbacks(job: Job, request: Request, exc: BaseException, traceback_text: str) -> None:
    """Call the errbacks of ``job`` that take ``(request, exc, traceback)``, here in the worker, as
    Celery does (what they print is in the failed task's output); an errback's own exception is
    logged. The others are submitted with the failure's record (see :func:`_record`)."""
    for errback in job.meta.get(META_ERRBACKS) or ():
        if errback[0] != "call":
            continue
        _, version, name, args, kwargs = errback
        try:
            task_for(version, name)(request, exc, traceback_text, *args, **kwargs)
        except Exception:
            log.exception("errback %s of job %s raised; the job's own failure stands", name, job.id)


@contextlib.contextmanager
def time_limits(soft: float | None, hard: float | None, job: Job | None = None) -> Iterator[None]:
    """Raise ``SoftTimeLimitExceeded`` after ``soft`` seconds and ``TimeLimitExceeded`` after ``hard``.

    Uses SIGALRM, so it works on the main thread, where a worker runs its jobs. With ``job``,
    the hard deadline is also published on the worker's record, and the supervisor of the
    worker process kills it if the task outlives the deadline anyway (stuck in C code, or
    swallowing the exception).
    """
    if soft is not None and hard is not None and soft >= hard:
        soft = None
    if soft is None and hard is None:
        yield
        return
    started = time.monotonic()
    soft_fired = False

    def on_alarm(signum: int, frame: Any) -> None:
        nonlocal soft_fired
        elapsed = time.monotonic() - started
        if soft is not None and not soft_fired:
            soft_fired = True
            if hard is not None:
                signal.setitimer(signal.ITIMER_REAL, max(hard - elapsed, 0.001))
            raise SoftTimeLimitExceeded(f"soft time limit ({soft:g} s) exceeded")
        raise TimeLimitExceeded(f"time limit ({hard:g} s) exceeded")

    worker = worker_key(job.worker_name) if job is not None and job.worker_name else None
    if worker and hard is not None:
        job.connection.hset(worker, keys.WORKER_DEADLINE, repr(time.time() + hard))  # type: ignore[union-attr]
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, soft if soft is not None else hard)  # type: ignore[arg-type]  # one is set
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if worker and hard is not None:
            job.connection.hdel(worker, keys.WORKER_DEADLINE)  # type: ignore[union-attr]


def _check_serialisable(task: Task, retval: Any) -> None:
    try:
        dumps(retval)
    except Exception as exc:
        kind = f"{type(retval).__module__}.{type(retval).__qualname__}"
        raise SerializationError(
            f"Task {task.name} returned a {kind}, which cannot be serialised ({exc}); return plain data instead."
        ) from exc


def _record(
    job: Job,
    attempt: int,
    capture: OutputCapture,
    exc: BaseException | None,
    started: float,
    retry_at: float | None = None,
    *,
    kind: str | None = None,
    reason: str | None = None,
) -> None:
    """In one round trip: the attempt's output, the final exception, the attempt's event, and what
    follows the final outcome (callbacks, submitted errbacks), in one transaction when there is any.
    ``kind`` and ``reason`` override the event's kind and exception name (a job revoked at start)."""
    text = capture.text()
    ttl = (job.failure_ttl or defaults.FAILURE_TTL) if exc is not None else job.result_ttl
    kind = kind or (events.SUCCEEDED if exc is None else events.RETRY if retry_at is not None else events.FAILED)
    run_s = round(time.time() - started, 6)
    deferred = getattr(job, "_tl_finish_writes", None)
    if exc is None and deferred is not None:  # the worker sends them with the job's success
        deferred.append(lambda pipe: _write_attempt(pipe, job, attempt, text, ttl, None, kind, run_s, None))
        if getattr(job, "_tl_success_hooks", None) is not None and ttl != 0:  # their output is to follow
            job._tl_attempt_text = text  # type: ignore[attr-defined]
            deferred.append(lambda pipe: _hooks_pending(pipe, job.id, attempt, ttl))
        return
    _ensure_started(job)  # also when the task did not get to run
    if not owned(job):
        return
    with job.connection.pipeline(transaction=has_callbacks(job)) as pipe:
        _write_attempt(pipe, job, attempt, text, ttl, exc, kind, run_s, retry_at, reason)
        pipe.execute()


def _write_attempt(
    pipe: Any,
    job: Job,
    attempt: int,
    text: str,
    ttl: int | None,
    exc: BaseException | None,
    kind: str,
    run_s: float,
    retry_at: float | None,
    reason: str | None = None,
) -> None:
    """Queue on ``pipe``: the attempt's output, the final exception, the attempt's event, and after a
    final outcome what follows it (see :func:`tasklab.engine.workflow.callback_writes`)."""
    if text and ttl != 0:
        pipe.hset(keys.output_key(job.id), str(attempt), text)
        expire(pipe, keys.output_key(job.id), ttl)
    if exc is not None and retry_at is None:
        record_exception(job, exc, pipe)
    # An attempt whose start the worker never wrote (a short task) has no STARTED event: this one
    # says where it ran, as that one would; for a first attempt, its SUBMITTED event says it already.
    unstarted = getattr(job, "_tl_start_skipped", False) and attempt > 0
    events.emit_for(
        pipe, kind, job, totals=getattr(job, "_tl_totals", None), n=attempt, run=run_s, w=job.worker_name,
        x=reason or (type(exc).__name__ if exc is not None else None),
        msg=str(exc)[:200] if exc is not None else None, next=repr(retry_at) if retry_at is not None else None,
        q=job.origin if unstarted else None, v=job.meta.get(keys.META_VERSION) if unstarted else None,
    )  # fmt: skip
    if retry_at is None and kind != events.REVOKED:
        callback_writes(job, pipe, succeeded=exc is None)
