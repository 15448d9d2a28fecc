"""Results of workflows: a step's (and a chain's or chord's) result, and a group's results.

``get()`` blocks on the newest pending step's result stream and the workflow's failure
notices (see :mod:`tasklab.engine.workflow`), and raises as soon as a step the result waits
for fails: that step's exception, with a note naming it, or a :class:`~tasklab.errors.ChordError`
naming the group member that failed, as Celery does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rq.job import Job, JobStatus
from rq.results import Result
from rq.utils import as_text

from ...code.serialization import Serializer
from ...core.request import current_request
from ...core.states import FAILURE, REVOKED
from ...engine.workflow import META_CAUSE, cancel_downstream, failures_key
from ...errors import InsideTaskError, TimeoutError
from ..result import AsyncResult, ResultSet

_FINAL = {Result.Type.SUCCESSFUL, Result.Type.FAILED, Result.Type.STOPPED, Result.Type.MAX_RETRIES_EXCEEDED}
_BAD_STATUSES = {JobStatus.FAILED.value, JobStatus.STOPPED.value, JobStatus.CANCELED.value}
_SLICE = 1.0  # longest single blocking read; between reads, statuses are checked for failures no callback reported


@dataclass
class _Outcome:
    finals: dict[str, Result] = field(default_factory=dict)  # target id -> its final result
    stopped: dict[str, str] = field(default_factory=dict)  # target id -> the step whose failure stopped it
    failed: str | None = None  # the first step found failed or revoked, in submission order


def _refuse_inside_task() -> None:
    if current_request() is not None:
        raise InsideTaskError(
            "Never call result.get() within a task: the worker waits for jobs that may need this very worker. "
            "Make the waiting a later step of the workflow instead."
        )


def _wait(plan: Any, targets: list[str], timeout: float | None, stop_on_failure: bool = True) -> _Outcome:
    """Block until every target has its final result or was stopped by a failure, or, with
    ``stop_on_failure``, until a step the targets wait for fails; or until ``timeout``.

    Blocks on the newest pending target's result stream and the workflow's failure notices; after
    a quiet read, checks the statuses of the steps not known finished, for failures no notice
    reported (a lost worker, a revoked step).
    """
    connection = plan.connection
    deadline = None if timeout is None else time.monotonic() + timeout
    outcome = _Outcome()
    unknown = plan.upstream(targets)  # steps not known to have finished
    cursors = {t: "0-0" for t in dict.fromkeys(targets)}
    notices, notice_cursor = failures_key(plan.id), "0-0"

    handled: set[str] = set()

    def settle(target: str, cause: str) -> None:
        if target in cursors and target not in outcome.finals:
            outcome.stopped[target] = cause
            del cursors[target]

    def failure(step_id: str) -> None:
        if outcome.failed is None:
            outcome.failed = step_id
        if step_id not in handled:
            handled.add(step_id)
            for cancelled in cancel_downstream(connection, step_id):
                settle(cancelled, step_id)

    def take(response: Any) -> bool:
        nonlocal notice_cursor
        for stream, entries in response or ():
            name = as_text(stream)
            if name == notices:
                notice_cursor = as_text(entries[-1][0])
                for _, fields in entries:
                    step_id = as_text(fields[b"id"])
                    if step_id in plan.by_id and step_id in unknown:
                        failure(step_id)
                continue
            target = name[len(Result.get_key("")) :]
            for entry_id, payload in entries:
                if target not in cursors:
                    break
                cursors[target] = as_text(entry_id)
                result = Result.restore(target, as_text(entry_id), payload, connection, Serializer)
                if result.type in _FINAL:
                    outcome.finals[target] = result
                    del cursors[target]
                    if result.type != Result.Type.SUCCESSFUL:
                        failure(target)
        return bool(response)

    def check_statuses() -> None:
        with connection.pipeline(transaction=False) as pipe:
            for step_id in unknown:
                pipe.hget(Job.key_for(step_id), "status")
            statuses = [as_text(s) for s in pipe.execute()]
        bad = [i for i, s in zip(unknown, statuses, strict=True) if s in _BAD_STATUSES]
        ready = [i for i, s in zip(unknown, statuses, strict=True) if s == JobStatus.READY_TO_ENQUEUE.value]
        if ready:
            _enqueue_ready(plan.app, ready)
        unknown[:] = [i for i, s in zip(unknown, statuses, strict=True) if s != JobStatus.FINISHED.value]
        causes = {}
        for job in Job.fetch_many([i for i in bad if i not in outcome.finals], connection, serializer=Serializer):
            if job is not None and job.get_status(refresh=False) == JobStatus.CANCELED:
                causes[job.id] = job.meta.get(META_CAUSE)
        for step_id in bad:
            cause = causes[step_id] if causes.get(step_id) in plan.by_id else step_id
            failure(cause)
            settle(step_id, cause)

    check = True
    while True:
        pending = list(cursors)
        for first in range(0, len(pending), 500):
            take(connection.xread({Result.get_key(t): cursors[t] for t in pending[first : first + 500]}))
        take(connection.xread({notices: notice_cursor}))
        if check and (outcome.failed is None or not stop_on_failure):
            check_statuses()
            check = False
        if not cursors or (stop_on_failure and outcome.failed is not None):
            return outcome
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return outcome
        block = _SLICE if remaining is None else max(0.001, min(remaining, _SLICE))
        newest = list(cursors)[-1]
        streams = {Result.get_key(newest): cursors[newest], notices: notice_cursor}
        check = not take(connection.xread(streams, block=max(1, int(block * 1000))))
        if outcome.failed is not None:
            check = True  # the stopped targets settle by their status


def _enqueue_ready(app: Any, job_ids: list[str]) -> None:
    """Queue steps whose dependencies are met but that RQ left in its ready registry.

    RQ 3.0 moves a dependent whose dependencies are met to the ready registry and then queues it,
    but skips it when another worker changed that registry in between (two steps becoming ready
    at once), leaving it to worker maintenance, which runs every ten minutes. A waiting ``get()``
    queues it instead, with RQ's own ``ReadyJobRegistry.enqueue_jobs``, which never queues twice.
    """
    by_queue: dict[str, list[str]] = {}
    for job in Job.fetch_many(job_ids, app.connection, serializer=Serializer):
        if job is not None:
            by_queue.setdefault(job.origin, []).append(job.id)
    for name, ids in by_queue.items():
        app.queue(name).ready_job_registry.enqueue_jobs(ids)


class WorkflowResult(AsyncResult):
    """The result of a step of a workflow, and of a chain or chord: its last step's (as in Celery).

    ``parent`` is the result of what came before (an :class:`AsyncResult` or a :class:`GroupResult`).
    ``get()`` raises as soon as a step this one waits for fails: that step's exception, with a note
    naming it, or a :class:`~tasklab.errors.ChordError` naming the group member that failed.
    """

    def __init__(self, id: str, app: Any = None, *, task_name: str | None = None, plan: Any = None, parent: Any = None):
        super().__init__(id, app, task_name=task_name)
        self.parent = parent
        self._plan = plan

    @property
    def state(self) -> str:
        """As :attr:`AsyncResult.state`, except FAILURE when a step before it failed, so it never ran."""
        state = super().state
        if state == REVOKED:
            job = self._job()
            if job is not None and job.meta.get(META_CAUSE):
                return FAILURE
        return state

    status = state

    def get(self, timeout: float | None = None, propagate: bool = True, interval: float | None = None) -> Any:
        if self._plan is None:
            return super().get(timeout, propagate, interval)
        _refuse_inside_task()
        outcome = _wait(self._plan, [self.id], timeout, stop_on_failure=True)
        if outcome.failed is not None:
            exc = self._plan.error(outcome.failed, [self.id])
            if propagate:
                raise exc
            return exc
        final = outcome.finals.get(self.id)
        if final is None:
            raise TimeoutError(
                f"{self._plan.describe(self.id, capital=True)} did not finish within {timeout} s (state {self.state})."
            )
        self._final = final
        return final.return_value

    wait = get


class GroupResult(ResultSet):
    """The results of a group's members, in order (Celery's GroupResult): ``get()`` is the list of their values.

    ``id`` is the group's id, also the RQ group's name (``rq.group.Group.fetch(id, connection)``).
    """

    def __init__(self, id: str, results: Iterable[AsyncResult] = (), *, parent: Any = None, plan: Any = None):
        super().__init__(results)
        self.id = id
        self.parent = parent
        self._plan = plan

    @property
    def results(self) -> list[AsyncResult]:
        return list(self)

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self)}]>"

    def get(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Every member's value, in order. A failure (of a member, or of a step before the group) is
        raised as soon as it is known; with ``propagate=False`` it takes the member's place instead."""
        if self._plan is None:
            return super().get(timeout, propagate)
        _refuse_inside_task()
        ids = [r.id for r in self]
        outcome = _wait(self._plan, ids, timeout, stop_on_failure=propagate)
        if propagate and outcome.failed is not None:
            raise self._plan.error(outcome.failed, ids)
        values = []
        for result in self:
            final = outcome.finals.get(result.id)
            if result.id in outcome.stopped or (final is not None and final.type != Result.Type.SUCCESSFUL):
                values.append(self._plan.error(outcome.stopped.get(result.id, result.id), [result.id]))
            elif final is None:
                pending = sum(r.id not in outcome.finals and r.id not in outcome.stopped for r in self)
                raise TimeoutError(
                    f"{pending} of {len(self)} members of group {self.id} did not finish within {timeout} s."
                )
            else:
                result._final = final
                values.append(final.return_value)
        return values

    join = get
