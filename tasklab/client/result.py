"""Results of submitted tasks, with Celery's names and states, read from RQ's records.

RQ appends each attempt's outcome to the job's result stream (``rq:results:<id>``);
:meth:`AsyncResult.get` blocks on that stream with ``XREAD`` rather than polling, and a
:class:`ResultSet` waits for many jobs with one ``XREAD`` over all their streams.
"""

from __future__ import annotations

import asyncio
import functools
import html
import warnings
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.results import Result

from ..code.serialization import Serializer, loads
from ..core.app import App, default_app
from ..core.states import FAILURE, PENDING, RATE_LIMITED, READY_STATES, RETRY, REVOKED, STARTED, SUCCESS
from ..engine import events, keys
from ..engine.leases import settle_expired
from ..engine.workflow import META_CAUSE
from ..errors import ResultMissing, SignatureError, TaskError, TaskLabWarning, TaskRevokedError, TimeoutError
from .wait import FINAL, ResultStreams, refuse_inside_task

T = TypeVar("T")

_STATES = {
    JobStatus.QUEUED: PENDING,
    JobStatus.DEFERRED: PENDING,
    JobStatus.SCHEDULED: PENDING,
    JobStatus.STARTED: STARTED,
    JobStatus.FINISHED: SUCCESS,
    JobStatus.FAILED: FAILURE,
    JobStatus.STOPPED: REVOKED,
    JobStatus.CANCELED: REVOKED,
}


_KEPT = "The task's outcome is kept in Redis: ask again once it is back (lab.status() tells)."


def _reaching_redis(method: Callable[..., T]) -> Callable[..., T]:
    """``method`` of a result, whose Redis errors reach the user as the app's
    :class:`~tasklab.errors.RedisUnreachable` (after the app tried to bring Redis back)."""

    @functools.wraps(method)
    def reading(self: Any, *args: Any, **kwargs: Any) -> T:
        results = self if isinstance(self, ResultSet) else [self]
        if not results:
            return method(self, *args, **kwargs)
        return results[0].app.reaching_redis(lambda: method(self, *args, **kwargs), _KEPT)

    return reading


class AsyncResult:
    """The outcome of one submitted task, by id: ``tasklab.AsyncResult(id)`` works for any id."""

    def __init__(self, id: str, app: App | None = None, *, task_name: str | None = None):
        self.id = id
        self.task_name = task_name
        self._app = app
        self._final: Result | None = None

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def app(self) -> App:
        """The app this result reads from: the one it was made with, else the default (the current lab)."""
        return self._app if self._app is not None else default_app()

    @property
    def connection(self) -> redis.Redis:
        return self.app.connection

    def _job(self) -> Job | None:
        try:
            return Job.fetch(self.id, connection=self.connection, serializer=Serializer)
        except NoSuchJobError:
            return None

    # -- state --

    @property
    @_reaching_redis
    def state(self) -> str:
        """PENDING, STARTED, RETRY, SUCCESS, FAILURE or REVOKED. Unknown ids are PENDING, as in Celery."""
        if self._final is not None:
            return self._state_of(self._final)
        job = self._job()
        if job is None:
            return PENDING
        status = job.get_status(refresh=False)
        if status in (JobStatus.SCHEDULED, JobStatus.QUEUED) and job.meta.get(keys.META_RETRIES):
            return RETRY
        if status == JobStatus.RATE_LIMITED or (
            status == JobStatus.SCHEDULED and job.meta.get(keys.META_HELD) == "rate_limit"
        ):
            return RATE_LIMITED
        return _STATES.get(status, PENDING)

    status = state

    @staticmethod
    def _state_of(result: Result) -> str:
        if result.type == Result.Type.SUCCESSFUL:
            return SUCCESS
        if result.type == Result.Type.STOPPED:
            return REVOKED
        return FAILURE

    def ready(self) -> bool:
        return self.state in READY_STATES

    def successful(self) -> bool:
        return self.state == SUCCESS

    def failed(self) -> bool:
        return self.state == FAILURE

    @property
    @_reaching_redis
    def retries(self) -> int:
        job = self._job()
        return int(job.meta.get(keys.META_RETRIES, 0)) if job else 0

    @property
    @_reaching_redis
    def eta(self) -> datetime | None:
        """When a scheduled job (a countdown, or a retry waiting out its delay) is due to run."""
        job = self._job()
        if job is None or job.get_status(refresh=False) != JobStatus.SCHEDULED:
            return None
        try:
            return self.app.queue(job.origin).scheduled_job_registry.get_scheduled_time(job)
        except NoSuchJobError:  # enqueued since
            return None

    @property
    @_reaching_redis
    def date_done(self) -> datetime | None:
        job = self._job()
        return job.ended_at if job and self.ready() else None

    @property
    @_reaching_redis
    def result(self) -> Any:
        """The return value once successful, the exception once failed, else ``None``."""
        final = self._latest_final()
        if final is None:
            return None
        if final.type == Result.Type.SUCCESSFUL:
            return final.return_value
        return self._exception(final)

    info = result

    @property
    @_reaching_redis
    def traceback(self) -> str | None:
        """The worker's traceback of a failed task, from the first frame of the task's own code."""
        final = self._latest_final()
        if final is None or final.type == Result.Type.SUCCESSFUL:
            return None
        trimmed = self.connection.hget(keys.exception_key(self.id), "traceback")
        return trimmed.decode() if trimmed else final.exc_string

    @property
    @_reaching_redis
    def output(self) -> str:
        """What the last attempt printed (stdout, stderr, task loggers), bounded."""
        data = self.connection.hgetall(keys.output_key(self.id))
        if not data:
            return ""
        last = max(data, key=lambda attempt: int(attempt))
        return data[last].decode(errors="replace")

    # -- waiting --

    def _latest_final(self) -> Result | None:
        if self._final is None:
            for entry_id, payload in reversed(self.connection.xrange(Result.get_key(self.id), "-", "+")):
                result = Result.restore(self.id, entry_id.decode(), payload, self.connection, Serializer)
                if result.type in FINAL:
                    self._final = result
                    break
        return self._final

    @_reaching_redis
    def get(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """Wait for the task to finish and return its value, or raise its exception.

        Raises :class:`tasklab.TimeoutError` if ``timeout`` seconds pass first. With
        ``propagate=False`` a failed task's exception is returned instead of raised.
        """
        refuse_inside_task()
        (final,) = _wait_final([self], timeout)
        if final is None:
            if self._job() is None:
                raise self._missing()
            if self.state == REVOKED:
                cause = self._cause()
                if cause is not None and propagate:
                    raise cause
                raise TaskRevokedError(f"Task {self.id} was revoked.")
            raise TimeoutError(f"Task {self.id} did not finish within {timeout} s (state {self.state}).")
        if final.type == Result.Type.SUCCESSFUL:
            return final.return_value
        exc = self._exception(final)
        if propagate:
            raise exc
        return exc

    wait = get

    def _missing(self) -> ResultMissing:
        return ResultMissing(
            f"Task {self.id} is not in this lab's Redis, so it has no result to wait "
            "for: the id is unknown here, its result expired (result_ttl) or was forgotten, or the task keeps "
            "none (ignore_result=True). Celery would wait for ever; check the id and the lab it was submitted to."
        )

    def _cause(self) -> BaseException | None:
        """For a workflow step cancelled because an earlier step failed: that step's exception."""
        job = self._job()
        cause_id = job.meta.get(META_CAUSE) if job is not None else None
        if not cause_id:
            return None
        exc = AsyncResult(cause_id, self._app).result
        if not isinstance(exc, BaseException):
            return None
        if hasattr(exc, "add_note"):
            exc.add_note(f"Task {self.id} did not run: the workflow step {cause_id} before it failed.")
        return exc

    def _exception(self, final: Result) -> BaseException:
        if final.type == Result.Type.STOPPED:
            return TaskRevokedError(f"Task {self.id} was stopped while it ran.")
        data = self.connection.hgetall(keys.exception_key(self.id))
        lines = (final.exc_string or "").strip().splitlines()
        last_type, _, last_message = (lines[-1] if lines else "Exception").partition(": ")
        type_name = data.get(b"type", last_type.encode()).decode()
        message = data.get(b"message", last_message.encode()).decode()
        remote = data.get(b"traceback", b"").decode() or final.exc_string or ""
        exc: BaseException | None = None
        if b"pickled" in data:
            try:
                exc = loads(data[b"pickled"], f"the exception of task {self.id}")
            except SignatureError as refused:  # not unpickled: someone else wrote it
                return refused
            except Exception:
                exc = None
        if not isinstance(exc, BaseException):
            return TaskError(type_name, message, remote)
        if remote and hasattr(exc, "add_note"):
            exc.add_note(f"\nRemote traceback (task {self.id}):\n{remote.rstrip()}")
        return exc

    def __await__(self) -> Any:
        return asyncio.get_running_loop().run_in_executor(None, self.get).__await__()

    # -- control --

    @_reaching_redis
    def revoke(self, terminate: bool = False) -> None:
        """Cancel a job that has not started: it never runs and becomes REVOKED.

        With ``terminate``, a running job is stopped too: the process running it is killed by
        its supervisor (within about 0.2 s) and restarted, and the job becomes REVOKED.
        Revoking a finished job does nothing and warns.
        """
        job = self._job()
        if job is None:
            warnings.warn(f"Task {self.id} does not exist; nothing to revoke.", TaskLabWarning, stacklevel=2)
            return
        status = job.get_status(refresh=False)
        if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.RATE_LIMITED):
            job.cancel()
            with self.connection.pipeline(transaction=False) as pipe:
                events.emit_for(pipe, events.REVOKED, job, n=job.meta.get(keys.META_RETRIES, 0))
                pipe.execute()
            return
        if status == JobStatus.STARTED and terminate:
            with self.connection.pipeline() as pipe:
                pipe.sadd(keys.TERMINATE_KEY, self.id)
                pipe.expire(keys.TERMINATE_KEY, 3600)
                pipe.execute()
            return
        warnings.warn(
            f"Task {self.id} is {_STATES.get(status, status)}; only a job that has not finished can be revoked"
            + ("." if terminate else " (a running one with terminate=True)."),
            TaskLabWarning,
            stacklevel=2,
        )

    @_reaching_redis
    def forget(self) -> None:
        """Delete the job and its results from Redis."""
        job = self._job()
        if job is not None:
            job.delete()
        self.connection.delete(keys.output_key(self.id), keys.exception_key(self.id))

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The static state badge; with ``%load_ext tasklab``, a kernel shows a live one instead."""
        return {"text/plain": repr(self), "text/html": self._repr_html_()}

    def _repr_html_(self) -> str:
        state = self.state
        colour = {SUCCESS: "#2e7d32", FAILURE: "#c62828", REVOKED: "#6d4c41", STARTED: "#1565c0"}.get(state, "#757575")
        name = f"{html.escape(self.task_name)} " if self.task_name else ""
        return (
            f'<span style="font-family:monospace">{name}<code>{html.escape(self.id)}</code> '
            f'<b style="color:{colour}">{state}</b></span>'
        )


class ResultSet(list):
    """A list of :class:`AsyncResult`, waited for together."""

    def __init__(self, results: Iterable[AsyncResult] = ()):
        super().__init__(results)

    @_reaching_redis
    def get(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Every value, in order; the first failure is raised unless ``propagate=False``."""
        finals = _wait_final(list(self), timeout)
        values = []
        for result, final in zip(self, finals, strict=True):
            if final is None and result._job() is None:
                raise result._missing()
            if final is None:
                pending = sum(f is None for f in finals)
                raise TimeoutError(f"{pending} of {len(self)} tasks did not finish within {timeout} s.")
            result._final = final
            if final.type == Result.Type.SUCCESSFUL:
                values.append(final.return_value)
            else:
                exc = result._exception(final)
                if propagate:
                    raise exc
                values.append(exc)
        return values

    join = get

    def ready(self) -> bool:
        return all(r.ready() for r in self)

    def completed_count(self) -> int:
        return sum(r.successful() for r in self)

    def successful(self) -> bool:
        return all(r.successful() for r in self)

    def failed(self) -> bool:
        return any(r.failed() for r in self)

    def revoke(self) -> None:
        for r in self:
            r.revoke()


def _wait_final(results: list[AsyncResult], timeout: float | None) -> list[Result | None]:
    """Block until each result has a final outcome or ``timeout`` passes; ``None`` where it didn't.

    A job revoked before it ran never gets one: it is no longer waited for (its state says why).
    """
    known = {r.id: r._final for r in results if r._final is not None}
    if len(known) == len(results):
        return [r._final for r in results]
    streams = ResultStreams(results[0].connection, [r.id for r in results if r._final is None])

    def drop_revoked() -> None:
        """Stop waiting for jobs that will never have a result: revoked, or not in Redis at all."""
        settle_expired(streams.connection)  # jobs of workers that were lost, wherever they ran
        pending = list(streams.pending)
        with streams.connection.pipeline(transaction=False) as pipe:
            for job_id in pending:
                pipe.hget(Job.key_for(job_id), "status")
                pipe.exists(Result.get_key(job_id))
            replies = pipe.execute()
        for job_id, status, results in zip(pending, replies[::2], replies[1::2], strict=True):
            if status in (b"canceled", b"stopped") or (status is None and not results):
                streams.drop(job_id)

    streams.wait(timeout, check=drop_revoked)
    known.update(streams.finals)
    return [known.get(r.id) for r in results]
