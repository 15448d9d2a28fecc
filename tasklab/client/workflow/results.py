"""Results of workflows: a step's (and a chain's or chord's) result, and a group's results.

``get()`` blocks on the newest pending step's result stream and the workflow's failure
notices (see :mod:`tasklab.engine.workflow`), and raises as soon as a step the result waits
for fails: that step's exception, with a note naming it, or a :class:`~tasklab.errors.ChordError`
naming the group member that failed, as Celery does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rq.group import Group
from rq.job import Job, JobStatus
from rq.results import Result
from rq.utils import as_text

from ...code.serialization import Serializer
from ...core.states import FAILURE, REVOKED
from ...engine.leases import settle_expired
from ...engine.workflow import META_CAUSE, cancel_downstream, failures_key
from ...errors import TimeoutError
from ..result import AsyncResult, ResultSet
from ..wait import ResultStreams, refuse_inside_task

_BAD_STATUSES = {JobStatus.FAILED.value, JobStatus.STOPPED.value, JobStatus.CANCELED.value}


@dataclass
class _Outcome:
    finals: dict[str, Result] = field(default_factory=dict)  # target id -> its final result
    stopped: dict[str, str] = field(default_factory=dict)  # target id -> the step whose failure stopped it
    failed: str | None = None  # the first step found failed or revoked, in submission order


def _wait(plan: Any, targets: list[str], timeout: float | None, stop_on_failure: bool = True) -> _Outcome:
    """Block until every target has its final result or was stopped by a failure, or, with
    ``stop_on_failure``, until a step the targets wait for fails; or until ``timeout``.

    Reads the targets' result streams and the workflow's failure notices (see
    :class:`~tasklab.client.wait.ResultStreams`); first, and after a quiet read, checks the
    statuses of the steps not known finished, for failures no notice reported (a lost worker,
    a revoked step).
    """
    connection = plan.connection
    outcome = _Outcome()
    unknown = plan.upstream(targets)  # steps not known to have finished
    streams = ResultStreams(connection, dict.fromkeys(targets), notices=failures_key(plan.id))
    handled: set[str] = set()

    def settle(target: str, cause: str) -> None:
        if target in streams.pending:
            outcome.stopped[target] = cause
            streams.drop(target)

    def failure(step_id: str) -> None:
        if outcome.failed is None:
            outcome.failed = step_id
        if step_id not in handled:
            handled.add(step_id)
            for cancelled in cancel_downstream(connection, step_id):
                settle(cancelled, step_id)

    def on_final(target: str, result: Result) -> None:
        outcome.finals[target] = result
        if result.type != Result.Type.SUCCESSFUL:
            failure(target)

    def on_notice(fields: dict[bytes, bytes]) -> None:
        step_id = as_text(fields[b"id"])
        if step_id in plan.by_id and step_id in unknown:
            failure(step_id)

    def check_statuses() -> None:
        settle_expired(connection)  # jobs of workers that were lost, wherever they ran
        with connection.pipeline(transaction=False) as pipe:
            for step_id in unknown:
                pipe.hget(Job.key_for(step_id), "status")
            statuses = [as_text(s) for s in pipe.execute()]
        bad = [i for i, s in zip(unknown, statuses, strict=True) if s in _BAD_STATUSES]
        ready = [i for i, s in zip(unknown, statuses, strict=True) if s == JobStatus.READY_TO_ENQUEUE.value]
        if ready:
            _enqueue_ready(plan.app, ready)
        unknown[:] = [i for i, s in zip(unknown, statuses, strict=True) if s != JobStatus.FINISHED.value]
        causes: dict[str, str | None] = {}
        for job in Job.fetch_many([i for i in bad if i not in outcome.finals], connection, serializer=Serializer):
            if job is not None and job.get_status(refresh=False) == JobStatus.CANCELED:
                causes[job.id] = job.meta.get(META_CAUSE)
        for step_id in bad:
            found = causes.get(step_id)
            cause = found if found is not None and found in plan.by_id else step_id
            failure(cause)
            settle(step_id, cause)

    streams.wait(
        timeout,
        done=lambda: not streams.pending or (stop_on_failure and outcome.failed is not None),
        check=check_statuses,
        check_first=True,
        on_final=on_final,
        on_notice=on_notice,
        recheck=lambda: outcome.failed is not None,  # the stopped targets settle by their status
    )
    return outcome


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

    def _state_from(self, status: JobStatus | None, meta: dict[str, Any]) -> str:
        """As for any result, except FAILURE when a step before it failed, so it never ran (its job
        was cancelled, with that step in its meta)."""
        state = super()._state_from(status, meta)
        return FAILURE if state == REVOKED and meta.get(META_CAUSE) else state

    def get(self, timeout: float | None = None, propagate: bool = True) -> Any:
        if self._plan is None:
            return super().get(timeout, propagate)
        refuse_inside_task("Make the waiting a later step of the workflow instead.")
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
    def children(self) -> list[AsyncResult]:
        """The members, as Celery's ``GroupResult.children``."""
        return list(self)

    def forget(self) -> None:
        """Delete every member's job and results, and the group's record, from Redis."""
        super().forget()
        if self:
            with self[0].connection.pipeline(transaction=False) as pipe:
                pipe.delete(Group.get_key(self.id))
                pipe.srem(Group.REDIS_GROUP_KEY, self.id)
                pipe.execute()

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self)}]>"

    # IPython prints a class's own __repr__ before an inherited _repr_pretty_: show the counts, not the ids.
    _repr_pretty_ = ResultSet._repr_pretty_

    def _title(self) -> str:
        return f"GroupResult {self.id}"

    def get(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """Every member's value, in order. A failure (of a member, or of a step before the group) is
        raised as soon as it is known; with ``propagate=False`` it takes the member's place instead."""
        if self._plan is None:
            return super().get(timeout, propagate)
        refuse_inside_task("Make the waiting a later step of the workflow instead.")
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
