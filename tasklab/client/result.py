"""Results of submitted tasks, with Celery's names and states, read from RQ's records.

RQ appends each attempt's outcome to the job's result stream (``rq:results:<id>``);
:meth:`AsyncResult.get` blocks on that stream with ``XREAD`` rather than polling, and a
:class:`ResultSet` waits for many jobs with one ``XREAD`` over all their streams. States are
read from three fields of each job's hash, for a whole set in one pipelined round trip
(:func:`read_states`), since live views poll them.
"""

from __future__ import annotations

import asyncio
import functools
import html
import os
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.results import Result

from .. import defaults
from ..code.serialization import Serializer, loads
from ..core.app import App, default_app
from ..core.states import FAILURE, PENDING, RATE_LIMITED, READY_STATES, RETRY, REVOKED, STARTED, SUCCESS
from ..engine import events, keys
from ..engine.leases import settle_expired
from ..engine.reports import StateReport
from ..engine.workflow import META_CAUSE, META_LINKS
from ..errors import (
    IncompleteStream,
    ResultMissing,
    SignatureError,
    TaskError,
    TaskLabWarning,
    TaskRevokedError,
    TimeoutError,
)
from .progress import (
    COLOURS,
    WAITING_STATES,
    Progress,
    progress_html,
    progress_of,
    read_reported,
    read_states,
    unserved_hint,
    unserved_queues,
)
from .wait import FINAL, ResultStreams, refuse_inside_task

if TYPE_CHECKING:
    from .debug import Reproduction

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


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _warn_caller(message: str) -> None:
    """A :class:`TaskLabWarning` pointing at the first line outside tasklab (the wrappers between
    a result's method and its caller vary in depth)."""
    frame, level = sys._getframe(1), 2
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, TaskLabWarning, stacklevel=level)


class AsyncResult:
    """The outcome of one submitted task, by id: ``tasklab.AsyncResult(id)`` works for any id."""

    def __init__(
        self, id: str, app: App | None = None, *, task_name: str | None = None, ignore_result: bool | None = None
    ):
        self.id = id
        self.task_name = task_name
        self._app = app
        self._final: Result | None = None
        self._ignored = ignore_result  # None: not known yet (read from the job by get())

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
        """PENDING, STARTED, RETRY, SUCCESS, FAILURE or REVOKED; while the task runs, the state it reported
        with ``self.update_state`` (such as PROGRESS), if it did. Unknown ids are PENDING, as in Celery."""
        ((state, _),) = read_states([self])
        if state == FAILURE and self._expired():
            return REVOKED
        return state

    def _expired(self) -> bool:
        """Whether the job was revoked at its start because it had expired (``expires``), which a
        worker without the hook to record it STOPPED records FAILED, with a TaskRevokedError."""
        recorded = self.connection.hget(keys.exception_key(self.id), "type")
        return recorded is not None and recorded.decode().rsplit(".", 1)[-1] == TaskRevokedError.__name__

    def _state_from(self, status: JobStatus | None, meta: dict[str, Any]) -> str:
        """The state of this result's job, from its RQ status (``None``: no such job) and its meta
        (read only for the statuses of :data:`_META_STATUSES`, else empty)."""
        if status == JobStatus.RATE_LIMITED or (
            status == JobStatus.SCHEDULED and meta.get(keys.META_HELD) == "rate_limit"
        ):
            return RATE_LIMITED
        if status in (JobStatus.SCHEDULED, JobStatus.QUEUED) and meta.get(keys.META_RETRIES):
            return RETRY
        return PENDING if status is None else _STATES.get(status, PENDING)

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
        """The return value once successful, the exception once failed; while the task runs, the meta it
        last reported with ``self.update_state`` (as Celery's), else ``None``."""
        final = self._latest_final()
        if final is None:
            ((state, _, report),) = read_reported([self])
            if report is not None or state not in READY_STATES:
                return report.meta if report is not None else None
            final = self._latest_final()  # it finished meanwhile
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
        """What the last attempt printed (stdout, stderr, task loggers), bounded. A task's
        ``on_success`` and ``after_return`` run once its result is stored: what they print is
        waited for, up to :data:`~tasklab.defaults.HOOKS_OUTPUT_WAIT` seconds."""
        key = keys.output_key(self.id)
        data = self.connection.hgetall(key)
        while (marker := data.get(keys.OUTPUT_HOOKS_PENDING.encode())) is not None:
            # Waited for from the moment the result was stored: a worker that died meanwhile left the mark.
            stored = float(marker.split()[-1]) if len(marker.split()) > 1 else 0.0
            if time.time() > stored + defaults.HOOKS_OUTPUT_WAIT:
                break
            time.sleep(defaults.HOOKS_OUTPUT_POLL)  # the worker deletes the mark once the hooks end
            data = self.connection.hgetall(key)
        attempts = {int(field): text for field, text in data.items() if field.isdigit()}
        if not attempts:
            return ""
        return attempts[max(attempts)].decode(errors="replace")

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
        ``propagate=False`` a failed task's exception is returned instead of raised. A task run
        with ``ignore_result=True`` keeps no result: ``None`` is returned at once, as in Celery.
        """
        refuse_inside_task()
        if _ignoring([self])[0]:
            return None  # as Celery: nothing to wait for
        (final,) = _wait_final([self], timeout)
        if final is None:
            if self._job() is None or self._result_gone():
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
            "for: the id is unknown here, its result expired (result_ttl), was forgotten, or was evicted by the "
            "server at its memory limit, or the task keeps none (ignore_result=True). Celery would wait for ever; "
            "check the id and the lab it was submitted to."
        )

    def _result_gone(self) -> bool:
        """Whether the task ended but its result is no longer in Redis (expired, or evicted)."""
        return _ended_without_result(self.connection.hget(Job.key_for(self.id), "status"),
                                     self.connection.exists(Result.get_key(self.id)))  # fmt: skip

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

    # -- callbacks (Celery's children) --

    @property
    @_reaching_redis
    def children(self) -> list[AsyncResult]:
        """The results of the callbacks applied when this task succeeded (``link=``), in order, as
        Celery's ``children``; empty while it has not succeeded, and for a task without callbacks."""
        job = self._job()
        if job is None or job.get_status(refresh=False) != JobStatus.FINISHED:
            return []
        links = job.meta.get(META_LINKS) or ()
        return [AsyncResult(entry["id"], self._app, task_name=entry["task"]) for entry in links]

    def iterdeps(self, intermediate: bool = False) -> Iterator[tuple[AsyncResult | None, AsyncResult]]:
        """``(parent, result)`` for this result and its children, theirs and so on, in Celery's order
        (breadth first). A result not ready yet raises :class:`IncompleteStream` unless ``intermediate``."""
        stack: deque[tuple[AsyncResult | None, AsyncResult]] = deque([(None, self)])
        while stack:
            parent, node = stack.popleft()
            yield parent, node
            if node.ready():
                stack.extend((node, child) for child in node.children)
            elif not intermediate:
                raise IncompleteStream(
                    f"Task {node.id} is {node.state}, so its callbacks are not known yet: wait for it (get()), or "
                    "pass intermediate=True."
                )

    def collect(self, intermediate: bool = False, **kwargs: Any) -> Iterator[tuple[AsyncResult, Any]]:
        """``(result, value)`` for this result and then its callbacks' (see :attr:`children`), waiting for
        each with ``get(**kwargs)``, as Celery's ``collect``."""
        for _, node in self.iterdeps(intermediate=intermediate):
            yield node, node.get(**kwargs)

    def __await__(self) -> Any:
        return asyncio.get_running_loop().run_in_executor(None, self.get).__await__()

    # -- control --

    @_reaching_redis
    def revoke(self, terminate: bool = False) -> None:
        """Cancel a job that has not started: it never runs and becomes REVOKED.

        With ``terminate``, a running job is stopped too: the process running it is killed by
        its supervisor (within about 0.2 s) and restarted, and the job becomes REVOKED.
        Revoking a finished job (or a running one without ``terminate``) does nothing, and
        warns with a :class:`~tasklab.errors.TaskLabWarning` saying why.
        """
        refused = self._revoke(terminate)
        if refused is not None:
            _warn_caller(refused)

    def _revoke(self, terminate: bool) -> str | None:
        """Revoke as :meth:`revoke` does; why nothing was done, or ``None`` if it was."""
        job = self._job()
        if job is None:
            return f"Task {self.id} does not exist; nothing to revoke."
        status = job.get_status(refresh=False)
        if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.RATE_LIMITED):
            job.cancel()
            with self.connection.pipeline(transaction=False) as pipe:
                events.emit_for(pipe, events.REVOKED, job, n=job.meta.get(keys.META_RETRIES, 0))
                if terminate and status == JobStatus.QUEUED:
                    # A short task runs queued, its start unwritten: its worker is stopped too, if it runs it.
                    pipe.sadd(keys.TERMINATE_KEY, self.id)
                    pipe.expire(keys.TERMINATE_KEY, 3600)
                pipe.execute()
            return None
        if status == JobStatus.STARTED and terminate:
            with self.connection.pipeline() as pipe:
                pipe.sadd(keys.TERMINATE_KEY, self.id)
                pipe.expire(keys.TERMINATE_KEY, 3600)
                pipe.execute()
            return None
        if status == JobStatus.STARTED:
            return (
                f"Task {self.id} is running (STARTED): nothing was revoked. revoke() cancels a job that has not "
                "started; revoke(terminate=True) stops a running one."
            )
        state = self._state_from(status, job.meta)
        if status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            return (
                f"Task {self.id} already finished ({state}): nothing to revoke, and it stays {state}; "
                "only a job that has not finished can be revoked."
            )
        return f"Task {self.id} is {state} (RQ status {status.value}): it cannot be revoked now; try again shortly."

    @_reaching_redis
    def forget(self) -> None:
        """Delete the job and its results from Redis."""
        job = self._job()
        if job is not None:
            job.delete()
        self.connection.delete(  # the result stream too: its job may be gone (expired, evicted) while it is not
            Result.get_key(self.id), keys.output_key(self.id), keys.exception_key(self.id), keys.report_key(self.id)
        )
        self._final = None

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The static state badge; with ``%load_ext tasklab``, a kernel shows a live one instead."""
        return {"text/plain": repr(self), "text/html": self._repr_html_()}

    def _repr_html_(self) -> str:
        state, badge, report = self._badge()
        pair = progress_of(report.meta) if report is not None else None
        return badge if pair is None else badge + " " + progress_html(state, *pair)

    @_reaching_redis
    def _badge(self) -> tuple[str, str, StateReport | None]:
        """This result's state, its badge's HTML (which says so when no worker serves its queue), and
        what the task reported while it runs (``None`` if nothing)."""
        ((state, queue, report),) = read_reported([self])
        unserved = unserved_queues(self.app, [queue]) if queue and state in WAITING_STATES else []
        name = f"{html.escape(self.task_name)} " if self.task_name else ""
        note = f" &mdash; {html.escape(unserved_hint(unserved[0]))}" if unserved else ""
        return (
            state,
            (
                f'<span style="font-family:monospace">{name}<code>{html.escape(self.id)}</code> '
                f'<b style="color:{COLOURS.get(state, "#757575")}">{html.escape(state)}</b>{note}</span>'
            ),
            report,
        )

    # -- debugging --

    @_reaching_redis
    def reproduce(self) -> Reproduction:
        """Run the failed attempt again in this process, without a debugger: its exact code version,
        arguments and attempt number, no worker, nothing written to Redis. The
        :class:`~tasklab.client.debug.Reproduction` says whether it failed the same way, differently, or
        not at all, and holds the exception and the raising frame's ``locals``. :class:`DebugError` if
        the task has not failed, its record is gone, or its worker died running it."""
        from .debug import reproduce  # with the worker's runtime, which a kernel loads only to debug

        return reproduce(self)

    def debug(self) -> None:
        """Re-run the failed attempt in this process (see :meth:`reproduce`), say what came of it, and
        stop in IPython's debugger at the exception, as ``%debug`` does (``p x``, ``up``, ``c``, ``q``);
        when it succeeds here, there is nothing to stop at, and the line says so."""
        reproduction = self.reproduce()
        print(reproduction.summary())
        if reproduction.exception is not None:
            reproduction.debug()


class ResultSet(list):
    """A list of :class:`AsyncResult`, waited for together.

    A notebook shows it as its progress: a count per state and a bar (live in a kernel with
    ``%load_ext tasklab``), not as a list of ids.
    """

    def __init__(self, results: Iterable[AsyncResult] = ()):
        super().__init__(results)

    @_reaching_redis
    def get(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Every value, in order; the first failure is raised unless ``propagate=False``."""
        ignored = _ignoring(list(self))
        waited = [result for result, ignores in zip(self, ignored, strict=True) if not ignores]
        finals = _wait_final(waited, timeout) if waited else []
        values: list[Any] = []
        waited_finals = iter(finals)
        for result, ignores in zip(self, ignored, strict=True):
            if ignores:
                values.append(None)
                continue
            final = next(waited_finals)
            if final is None and (result._job() is None or result._result_gone()):
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

    def join(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float | None = None,
        callback: Callable[[str, Any], None] | None = None,
        **_: Any,
    ) -> list[Any] | None:
        """Celery's ``join``: every value, in order, as :meth:`get`. With ``callback``, it is called as
        ``callback(task_id, value)`` for each member, in order, and nothing is returned. ``interval``
        (Celery's polling period) is accepted and unused: the results are waited for without polling."""
        values = self.get(timeout, propagate)
        if callback is None:
            return values
        for result, value in zip(self, values, strict=True):
            callback(result.id, value)
        return None

    #: Celery's ``join_native``: tasklab's ``join`` already waits on every result at once.
    join_native = join

    def iter_native(self, timeout: float | None = None) -> Iterator[tuple[str, Any]]:
        """``(task_id, value)`` of each member as it finishes, in the order they finish (Celery's
        ``iter_native`` yields the same pairs, with the result's metadata for a value). A failure is
        raised when it is met; :class:`TimeoutError` if ``timeout`` seconds pass first."""
        refuse_inside_task()
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = {result.id: result for result in self}
        while pending:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            finished = _wait_first(list(pending.values()), left)
            if not finished:
                raise TimeoutError(f"{len(pending)} of {len(self)} tasks did not finish within {timeout} s.")
            for result in finished:
                del pending[result.id]
                yield result.id, result.get(timeout=0)

    @_reaching_redis
    def states(self) -> list[str]:
        """Each member's state, in order, read in one round trip."""
        return [state for state, _ in read_states(self)]

    @property
    def results(self) -> list[AsyncResult]:
        """The members, as Celery's ``ResultSet.results``."""
        return list(self)

    def ready(self) -> bool:
        """Whether every member has finished (SUCCESS, FAILURE or REVOKED)."""
        return all(state in READY_STATES for state in self.states())

    def waiting(self) -> bool:
        """Whether any member has not finished yet (Celery's ``waiting``): ``not ready()``."""
        return not self.ready()

    def completed_count(self) -> int:
        """How many members succeeded (Celery counts only successes as completed)."""
        return self.states().count(SUCCESS)

    def successful(self) -> bool:
        """Whether every member succeeded."""
        return all(state == SUCCESS for state in self.states())

    def failed(self) -> bool:
        """Whether any member failed."""
        return FAILURE in self.states()

    def add(self, result: AsyncResult) -> None:
        """Add ``result`` unless it is a member already (Celery's ``add``)."""
        if result not in self:
            self.append(result)

    def update(self, results: Iterable[AsyncResult]) -> None:
        """Add each of ``results`` that is not a member already (Celery's ``update``)."""
        for result in results:
            self.add(result)

    def discard(self, result: AsyncResult) -> None:
        """Remove ``result`` if it is a member (Celery's ``discard``); ``remove`` raises if it is not."""
        if result in self:
            self.remove(result)

    @_reaching_redis
    def maybe_throw(self, callback: Callable[[str, Any], None] | None = None, propagate: bool = True) -> None:
        """Raise the exception of the first member (in order) that failed or was revoked, without waiting
        for the others (Celery's ``maybe_throw``); with ``callback``, call ``callback(task_id, value)``
        for each member that succeeded first. Nothing is raised with ``propagate=False``."""
        for result, state in zip(self, self.states(), strict=True):
            if state == SUCCESS and callback is not None:
                callback(result.id, result.get(timeout=0))
            elif state in (FAILURE, REVOKED) and propagate:
                result.get(timeout=0)  # raises the member's exception

    maybe_reraise = maybe_throw

    @property
    def supports_native_join(self) -> bool:
        """As Celery asks of a backend: ``join_native`` waits on every member at once (tasklab's always does)."""
        return True

    @_reaching_redis
    def forget(self) -> None:
        """Delete every member's job and results from Redis (see :meth:`AsyncResult.forget`)."""
        for result in self:
            result.forget()

    @_reaching_redis
    def revoke(self, terminate: bool = False) -> None:
        """Revoke every member that has not finished (see :meth:`AsyncResult.revoke`); warns once,
        saying how many were left as they were and why."""
        refused = [reason for reason in (r._revoke(terminate) for r in self) if reason is not None]
        if len(refused) == 1:
            _warn_caller(refused[0])
        elif refused:
            _warn_caller(f"{len(refused)} of {len(self)} tasks were not revoked; the first: {refused[0]}")

    @_reaching_redis
    def progress(self, since: Progress | None = None) -> Progress:
        """Where the members are: each one's state, read in one round trip, and the queues of the
        waiting ones that no live worker serves. Given an earlier ``progress`` of this set, only the
        members that had not finished then are read again."""
        if since is not None and len(since.states) != len(self):
            since = None
        states = list(since.states) if since is not None else [PENDING] * len(self)
        queues: list[str | None] = list(since.queues) if since is not None else [None] * len(self)
        todo = [i for i, state in enumerate(states) if since is None or state not in READY_STATES]
        for i, (state, queue) in zip(todo, read_states([self[i] for i in todo]), strict=True):
            states[i], queues[i] = state, queue or queues[i]
        waiting = {queue for state, queue in zip(states, queues, strict=True) if queue and state in WAITING_STATES}
        unserved = frozenset(unserved_queues(self[0].app, waiting)) if waiting else frozenset()
        return Progress(tuple(states), tuple(queues), unserved)

    def _shown(self, progress: Progress) -> dict[str, Any]:
        """The display of ``progress``; IPython asks for its text once more right after (a set is a
        list, whose text it renders itself), and :meth:`_repr_pretty_` then takes this one."""
        self._tl_shown = (time.monotonic(), progress)
        return self._bundle(progress)

    def _title(self) -> str:
        return type(self).__name__

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """Counts per state, as text and as static HTML; with ``%load_ext tasklab``, a kernel shows a
        live view instead."""
        return self._shown(self.progress())

    def _repr_html_(self) -> str:
        return self._bundle(self.progress())["text/html"]

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's plain text (it would print a list's items, whatever the bundle says): the progress
        just shown, if it was (:data:`~tasklab.defaults.SAME_DISPLAY`), else read now."""
        shown = self.__dict__.pop("_tl_shown", None)
        fresh = shown is not None and time.monotonic() - shown[0] < defaults.SAME_DISPLAY
        printer.text(self._bundle(shown[1] if fresh else self.progress())["text/plain"])

    def _bundle(self, progress: Progress) -> dict[str, Any]:
        title = html.escape(self._title())
        static = (
            f'<div style="font-family:monospace"><b>{title}</b>: {progress.done} of {progress.total} finished<br>'
            f'<progress value="{progress.done}" max="{max(progress.total, 1)}" style="width:300px"></progress>'
            f"{progress.lines_html()}</div>"
        )
        return {"text/plain": f"<{self._title()}: {progress.summary()}>", "text/html": static}


def _ignoring(results: list[AsyncResult]) -> list[bool]:
    """Whether each result's job keeps no result (``ignore_result=True``, which submits it with
    ``result_ttl`` 0), so that ``get()`` returns ``None`` at once, as Celery's does.

    A result made by a submit knows; another reads its job's ``result_ttl`` once, in one round trip for
    all, while the job is in Redis (a finished job that keeps no result is deleted, and its id can no
    longer be told from an unknown one).
    """
    unknown = [r for r in results if r._ignored is None]
    if unknown:
        with unknown[0].connection.pipeline(transaction=False) as pipe:
            for result in unknown:
                pipe.hget(Job.key_for(result.id), "result_ttl")
            for result, ttl in zip(unknown, pipe.execute(), strict=True):
                if ttl is not None:
                    result._ignored = int(ttl) == 0
    return [bool(r._ignored) for r in results]


def _ended_without_result(status: bytes | None, stored: int) -> bool:
    """A job that ended (its result and status are written together) whose result is gone: it expired,
    or the server evicted it at its memory limit. Nothing will bring it back."""
    return status in (b"finished", b"failed") and not stored


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
            gone = (status is None and not results) or _ended_without_result(status, results)
            if status in (b"canceled", b"stopped") or gone:
                streams.drop(job_id)

    streams.wait(timeout, check=drop_revoked)
    known.update(streams.finals)
    return [known.get(r.id) for r in results]


def _wait_first(results: list[AsyncResult], timeout: float | None) -> list[AsyncResult]:
    """Block until at least one of ``results`` has a final outcome (or was revoked before it ran, or
    keeps none), or ``timeout`` passes; those that have, in the order they finished (none: timed out)."""
    ignored = [r for r, ignores in zip(results, _ignoring(results), strict=True) if ignores]
    done = ignored + [r for r in results if r._final is not None and r not in ignored]
    if done:
        return done
    streams = ResultStreams(results[0].connection, [r.id for r in results])
    by_id = {r.id: r for r in results}
    finished: list[AsyncResult] = []

    def on_final(job_id: str, final: Result) -> None:
        by_id[job_id]._final = final
        finished.append(by_id[job_id])

    def check() -> None:
        settle_expired(streams.connection)
        with streams.connection.pipeline(transaction=False) as pipe:
            for job_id in streams.pending:
                pipe.hget(Job.key_for(job_id), "status")
                pipe.exists(Result.get_key(job_id))
            replies = pipe.execute()
        for job_id, status, stored in zip(list(streams.pending), replies[::2], replies[1::2], strict=True):
            if (
                status in (b"canceled", b"stopped")
                or (status is None and not stored)
                or (_ended_without_result(status, stored))
            ):
                streams.drop(job_id)
                finished.append(by_id[job_id])

    streams.wait(timeout, done=lambda: bool(finished), check=check, check_first=True, on_final=on_final)
    return finished
