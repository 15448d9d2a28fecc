"""Workflows after Celery's canvas: signatures, chains, groups and chords, run by RQ's dependencies.

A workflow is submitted whole. Every step becomes an RQ job with an id fixed in advance; a step
that follows others is a *deferred* job that depends on them (RQ's ``depends_on``), and its meta
names the jobs whose results it receives first (``keys.META_PARENTS``), which the worker running
it reads. Groups are also RQ groups (``rq.group.Group``). Once written, the workflow proceeds in
Redis and the workers alone; the kernel that submitted it may go away.

The order of the writes matters: RQ counts a dependency whose job hash is missing as met. So
the hashes of all steps go first (the deferred ones registered with their dependencies), and
only then are the first steps queued. Nothing can finish before everything is written, so no
WATCH is needed, and a 1,000-member chord is written in a few pipelined round trips.

When a step fails for good, RQ leaves the steps after it deferred forever. tasklab cancels them
(state REVOKED, the failed job's id in their meta under :data:`META_CAUSE`) from the failed
job's RQ failure callback, in the worker, and tells whoever waits on the workflow at once. The
waiting side does the same for a failure the callback cannot see (a worker lost, a step
revoked). ``get()`` raises the failed step's own exception with a note naming the step, as
Celery re-raises it from a chain's result, or :class:`~tasklab.errors.ChordError` naming the
member when the step was a member of a group whose results a later step collects.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
from rq.exceptions import InvalidJobOperation
from rq.group import Group
from rq.job import Job, JobStatus
from rq.results import Result
from rq.utils import as_text

from . import events, keys
from . import options as opts
from .errors import (
    CanvasError,
    ChordError,
    ConfigurationError,
    InsideTaskError,
    SerializationError,
    TaskError,
    TaskRevokedError,
    TimeoutError,
)
from .result import FAILURE, REVOKED, AsyncResult, ResultSet
from .serialization import Serializer
from .submit import BATCH, Prepared, enqueue, prepare
from .task import Task, current_request

log = logging.getLogger("tasklab.canvas")

#: Job meta of a workflow step: its number in submission order (from 1), and where it is ("step 2 of 3").
META_STEP = "tl_step"
META_WHERE = "tl_where"
#: Job meta of a step cancelled because a step before it failed: the failed job's id.
META_CAUSE = "tl_cause"
#: Options a signature or a workflow takes, as ``Task.apply_async`` does.
OPTIONS = frozenset({"countdown", "eta", "queue", "task_id"}) | opts.CALL_OPTIONS
_START_OPTIONS = ("countdown", "eta")
_FAILURE_CALLBACK = "tasklab.canvas.on_step_failure"
_NOTICE_TTL = 7 * 86400
#: Most jobs a step waits for directly. RQ checks every dependency of a step each time one of them
#: finishes, so a callback after N members costs O(N²); past this many, the step waits for join jobs
#: that wait for the members, in a tree, which costs O(N * _JOIN_FAN_IN).
_JOIN_FAN_IN = 32
_JOIN = "tasklab.canvas.join"
_FINAL = {Result.Type.SUCCESSFUL, Result.Type.FAILED, Result.Type.STOPPED, Result.Type.MAX_RETRIES_EXCEEDED}
_BAD_STATUSES = {JobStatus.FAILED.value, JobStatus.STOPPED.value, JobStatus.CANCELED.value}
_SLICE = 1.0  # longest single blocking read; between reads, statuses are checked for failures no callback reported
_PREVIOUS = object()  # stands for the previous step's result when checking a step's arguments


def failures_key(workflow_id: str) -> str:
    """Stream of the ids of a workflow's steps that failed for good, written by the workers."""
    return f"tasklab:workflow:{workflow_id}:failed"


# -- building: signatures and the three canvases --------------------------------------------


def _what(obj: Any) -> str:
    return getattr(obj, "__name__", None) or repr(obj)[:60]


def _as_task(obj: Any) -> Task:
    if isinstance(obj, type) and issubclass(obj, Task):
        obj = obj.instance()
    if not isinstance(obj, Task):
        raise CanvasError(
            f"{_what(obj)} is not a tasklab task, so it cannot be part of a workflow. Define it in a %%task "
            "cell or with @tasklab.task, then use task.s(...)."
        )
    if type(obj).run is Task.run:
        raise CanvasError(f"{type(obj).__name__} has no run(): it is a base class, not a task.")
    return obj


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - OPTIONS
    if unknown:
        raise ConfigurationError(
            f"Unknown workflow option {', '.join(sorted(unknown))}; a signature or workflow takes "
            f"{', '.join(sorted(OPTIONS))}. Set other options on the task."
        )
    return {k: v for k, v in options.items() if v is not None}


def _node(obj: Any, where: str) -> Signature | _Canvas:
    if isinstance(obj, Signature | _Canvas):
        return obj
    if isinstance(obj, Task) or (isinstance(obj, type) and issubclass(obj, Task)):
        name = obj.name if isinstance(obj, Task) else obj.__name__
        raise CanvasError(f"{where} is the task {name} itself; give a signature: {name}.s(...) or {name}.si(...).")
    raise CanvasError(f"{where} is {_what(obj)}, not a signature of a tasklab task: write task.s(...).")


def _members(tasks: tuple[Any, ...]) -> tuple[Any, ...]:
    """Celery's forms: ``f(a, b)``, or one list or generator ``f([a, b])``."""
    if len(tasks) == 1 and not isinstance(tasks[0], Signature | _Canvas | str) and isinstance(tasks[0], Iterable):
        return tuple(tasks[0])
    return tasks


class Signature:
    """A task with partial arguments and options (Celery's signature): ``add.s(2)``, ``add.si(2, 2)``.

    Arguments given when it is applied come first, then the partial ones: ``add.s(2).delay(8)``
    runs ``add(8, 2)``; in a chain, the previous step's result is the first argument. An
    immutable signature (``si``) takes no more arguments and ignores the previous result.
    """

    def __init__(
        self,
        task: Any,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        immutable: bool = False,
    ):
        self.task = _as_task(task)
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = _check_options(dict(options or {}))
        self.immutable = immutable

    @property
    def name(self) -> str | None:
        return self.task.name

    def clone(self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any) -> Signature:
        """A copy with ``args`` before the partial ones, and ``kwargs`` and ``options`` over them."""
        args = tuple(args)
        if self.immutable and (args or kwargs):
            raise CanvasError(f"{self!r} is immutable and takes no more arguments; use {self.name}.s(...) for that.")
        return Signature(
            self.task, args + self.args, {**self.kwargs, **(kwargs or {})}, {**self.options, **options}, self.immutable
        )

    def set(self, **options: Any) -> Signature:
        """Set options (``queue``, ``countdown``, ...) on this signature; returns it."""
        self.options.update(_check_options(options))
        return self

    def apply_async(
        self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult:
        """Submit the task with ``args`` before the partial ones and ``kwargs`` over them."""
        sig = self.clone(args or (), kwargs, **options)
        return self.task.apply_async(sig.args, sig.kwargs, **sig.options)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, in this process, as Celery's ``sig()`` does."""
        sig = self.clone(args, kwargs)
        return sig.task(*sig.args, **sig.kwargs)

    def __or__(self, other: Any) -> chain:
        other = _node(other, "the right side of |")
        return chain(self, *(other.tasks if isinstance(other, chain) else (other,)))

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}.{'si' if self.immutable else 's'}({', '.join(parts)})"


def signature(
    task: Any,
    args: Iterable[Any] = (),
    kwargs: dict[str, Any] | None = None,
    immutable: bool = False,
    **options: Any,
) -> Signature:
    """``tasklab.signature(add, args=(2,), queue="io")``: what ``add.s(2).set(queue="io")`` gives."""
    if isinstance(task, Signature):
        return Signature(
            task.task,
            tuple(args) + task.args,
            {**task.kwargs, **(kwargs or {})},
            {**task.options, **options},
            immutable or task.immutable,
        )
    return Signature(task, args, kwargs, options, immutable)


class _Canvas:
    """What chains, groups and chords share: submitting, and ``|``."""

    options: dict[str, Any]

    def apply_async(
        self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult | GroupResult:
        """Submit the whole workflow. ``args`` and ``kwargs`` go to its first step(s); ``queue`` and the
        other options apply to every step that does not set its own, ``countdown``/``eta`` to the first
        steps, ``task_id`` names the result."""
        return _submit(self, tuple(args or ()), dict(kwargs or {}), {**self.options, **_check_options(options)})

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult | GroupResult:
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __or__(self, other: Any) -> _Canvas:
        other = _node(other, "the right side of |")
        return chain(self, *(other.tasks if isinstance(other, chain) else (other,)))


class chain(_Canvas):
    """Steps run one after the other, each receiving the previous result first: ``chain(a.s(1), b.s())``,
    also written ``a.s(1) | b.s()``. Its result is the last step's."""

    def __init__(self, *tasks: Any, **options: Any):
        self.tasks = tuple(_node(t, f"step {i} of the chain") for i, t in enumerate(_members(tasks), 1))
        self.options = _check_options(options)

    def __or__(self, other: Any) -> chain:
        other = _node(other, "the right side of |")
        return chain(*self.tasks, *(other.tasks if isinstance(other, chain) else (other,)), **self.options)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks)) if self.tasks else "chain()"


class group(_Canvas):
    """Members run in parallel: ``group(a.s(1), a.s(2))``, ``group(a.s(i) for i in range(10))``. Its result
    is a :class:`GroupResult`; ``group | callback`` is a chord."""

    def __init__(self, *tasks: Any, **options: Any):
        members = _members(tasks)
        if len(members) == 1 and isinstance(members[0], group):
            members = members[0].tasks
        self.tasks = tuple(_node(t, f"member {i} of the group") for i, t in enumerate(members, 1))
        self.options = _check_options(options)

    def __or__(self, other: Any) -> _Canvas:
        return chord(self, other)

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.tasks))})"


class chord(_Canvas):
    """A group, then a callback that receives the list of its results, in order: ``chord(header, callback)``,
    ``chord(header)(callback)`` or ``group(...) | callback``. Its result is the callback's."""

    def __init__(self, header: Any, body: Any = None, **options: Any):
        self.header = header if isinstance(header, group) else group(header)
        self.body = None if body is None else _node(body, "the chord's callback")
        self.options = _check_options(options)

    def __call__(self, body: Any = None, **options: Any) -> Any:
        """``chord(header)(callback)``: submit with ``callback``, as Celery does."""
        target = self if body is None else chord(self.header, body, **self.options)
        return target.apply_async(**options)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"


# -- compiling a workflow into steps ---------------------------------------------------------


@dataclass
class _Step:
    sig: Signature
    id: str
    number: int
    where: str  # "step 2 of 3", "member 4 of 10 of the header"
    defaults: dict[str, Any]  # options of the canvases around it; the signature's own win
    parents: tuple[str, ...] = ()  # the steps whose results it receives, in order
    joins: bool = False  # follows a group, so it receives the list of the group's results
    depends_on: tuple[str, ...] = ()  # RQ's dependencies: the parents, or join jobs over them
    group_id: str | None = None  # the RQ group whose member's result this step gives
    children: list[str] = field(default_factory=list)


@dataclass
class _Output:
    ids: list[str]
    many: bool  # a group's results rather than one step's
    result: Any


def _upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def _new_id() -> str:
    return str(uuid.uuid4())


def _with_args(node: Any, args: tuple, kwargs: dict) -> Any:
    """``node`` with ``args``/``kwargs`` given to its first step(s), as ``chain.delay(1)`` does."""
    if not args and not kwargs:
        return node
    if isinstance(node, Signature):
        return node.clone(args, kwargs)
    if isinstance(node, chain):
        return chain(_with_args(node.tasks[0], args, kwargs), *node.tasks[1:]) if node.tasks else node
    if isinstance(node, group):
        return group([_with_args(t, args, kwargs) for t in node.tasks])
    return chord(_with_args(node.header, args, kwargs), node.body)


def _signatures(node: Any) -> Iterator[Signature]:
    if isinstance(node, Signature):
        yield node
    elif isinstance(node, chord):
        yield from _signatures(node.header)
        if node.body is not None:
            yield from _signatures(node.body)
    else:
        for member in node.tasks:
            yield from _signatures(member)


class _Plan:
    """A workflow compiled into its steps, in submission order, shared by the results that wait on it."""

    def __init__(self, app: Any, kind: str, workflow_id: str, options: dict[str, Any]):
        self.app = app
        self.kind = kind
        self.id = workflow_id
        self.options = options  # given to apply_async: for every step
        self.steps: list[_Step] = []
        self.by_id: dict[str, _Step] = {}
        self.groups: dict[str, list[str]] = {}
        self.joins: dict[str, tuple[list[str], str]] = {}  # join job id -> (what it waits for, the step it serves)
        self._join_trees: dict[tuple[str, ...], tuple[str, ...]] = {}

    @property
    def connection(self) -> redis.Redis:
        return self.app.connection

    def add(
        self, node: Any, incoming: _Output | None, where: str, options: dict[str, Any], final: str | None
    ) -> _Output:
        """Add the steps of ``node``, which follows ``incoming``; return what it gives the next step."""
        within = f" in {where}" if where else ""
        if isinstance(node, Signature):
            step_id = final or node.options.get("task_id") or _new_id()
            step = _Step(
                node,
                step_id,
                len(self.steps) + 1,
                where or "the task",
                options,
                tuple(incoming.ids) if incoming else (),
                bool(incoming and incoming.many),
            )
            step.depends_on = self._dependencies(step.parents, step_id)
            self.steps.append(step)
            self.by_id[step_id] = step
            for parent in step.parents:
                self.by_id[parent].children.append(step_id)
            result = WorkflowResult(
                step_id, self.app, task_name=node.name, plan=self, parent=incoming.result if incoming else None
            )
            return _Output([step_id], False, result)
        options = {**options, **{k: v for k, v in node.options.items() if k != "task_id"}}
        if isinstance(node, chain):
            if not node.tasks:
                raise CanvasError(f"The chain{within} is empty: give it at least one signature.")
            out = incoming
            for i, member in enumerate(node.tasks, 1):
                last = i == len(node.tasks)
                out = self.add(member, out, f"step {i} of {len(node.tasks)}{within}", options, final if last else None)
            assert out is not None
            return out
        if isinstance(node, group):
            return self._add_group(node, incoming, "", within, options, final)
        if node.body is None:
            raise CanvasError(
                f"The chord{within} has no callback: write chord(header, callback) or chord(header)(callback)."
            )
        header = self._add_group(node.header, incoming, " of the header", within, options, None)
        return self.add(node.body, header, f"the callback{within}", options, final)

    def _add_group(
        self, node: group, incoming: _Output | None, part: str, within: str, options: dict[str, Any], final: str | None
    ) -> _Output:
        options = {**options, **{k: v for k, v in node.options.items() if k != "task_id"}}
        count = len(node.tasks)
        if not count:
            raise CanvasError(f"The group{part}{within} is empty: give it at least one signature.")
        group_id = final or _new_id()
        outs = []
        for i, member in enumerate(node.tasks, 1):
            where = f"member {i} of {count}{part}{within}"
            out = self.add(member, incoming, where, options, None)
            if out.many:
                raise CanvasError(
                    f"{_upper(where)} ends in a group, so it gives several results where a group member gives "
                    "one; put those signatures in the outer group instead."
                )
            self.by_id[out.ids[0]].group_id = group_id
            outs.append(out)
        self.groups[group_id] = [out.ids[0] for out in outs]
        result = GroupResult(
            group_id, [out.result for out in outs], parent=incoming.result if incoming else None, plan=self
        )
        return _Output([out.ids[0] for out in outs], True, result)

    def _dependencies(self, parents: tuple[str, ...], step_id: str) -> tuple[str, ...]:
        """What a step after ``parents`` depends on in RQ: them, or a tree of join jobs over them."""
        if parents not in self._join_trees:
            level = list(parents)
            while len(level) > _JOIN_FAN_IN:
                above = []
                for first in range(0, len(level), _JOIN_FAN_IN):
                    join_id = _new_id()
                    self.joins[join_id] = (level[first : first + _JOIN_FAN_IN], step_id)
                    above.append(join_id)
                level = above
            self._join_trees[parents] = tuple(level)
        return self._join_trees[parents]

    # -- what the waiting side needs --

    def upstream(self, ids: Iterable[str]) -> list[str]:
        """``ids`` and every step they wait for, in submission order."""
        seen: set[str] = set()
        todo = [i for i in ids if i in self.by_id]
        while todo:
            step_id = todo.pop()
            if step_id not in seen:
                seen.add(step_id)
                step = self.by_id.get(step_id)
                todo.extend(step.depends_on + step.parents if step else self.joins[step_id][0])
        return [s.id for s in self.steps if s.id in seen] + [j for j in self.joins if j in seen]

    def describe(self, step_id: str) -> str:
        step = self.by_id.get(step_id)
        if step is None:
            return f"a join job of {self.kind} {self.id} (job {step_id})"
        return f"{step.where} of {self.kind} {self.id} (task {step.sig.name}, job {step.id})"

    def error(self, failed_id: str, targets: list[str]) -> BaseException:
        """The exception ``get()`` raises for the failure of ``failed_id``: the step's own, with a note,
        or a :class:`ChordError` when a step collecting a group's results lies between it and ``targets``."""
        exc = _step_exception(self.app, failed_id)
        between = set(self.upstream(targets))
        todo, join = list(self.by_id[failed_id].children) if failed_id in self.by_id else [], None
        while todo and join is None:
            step = self.by_id[todo.pop(0)]
            if step.id in between:
                join = step if step.joins else None
                todo.extend(step.children)
        where = self.describe(failed_id)
        if join is not None:
            error = ChordError(f"{_upper(where)} raised {exc!r}, so {join.where} (task {join.sig.name}) did not run.")
            error.__cause__ = exc
            return error
        note = f"tasklab: raised by {where}."
        if hasattr(exc, "add_note"):
            exc.add_note(note)
        else:  # Python 3.10
            exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
        return exc


def _step_exception(app: Any, job_id: str) -> BaseException:
    status = as_text(app.connection.hget(Job.key_for(job_id), "status"))
    if status == JobStatus.CANCELED.value:
        return TaskRevokedError(f"Task {job_id} was revoked before it ran.")
    try:  # the worker's failure callback reports a failure a moment before RQ records it
        exc = AsyncResult(job_id, app).get(timeout=10, propagate=False)
    except (TaskRevokedError, TimeoutError) as error:
        return error
    if isinstance(exc, BaseException):
        return exc
    return TaskError("unknown", f"job {job_id} was reported failed but finished with {exc!r}")


# -- submitting ------------------------------------------------------------------------------


def _submit(node: _Canvas, args: tuple, kwargs: dict, options: dict[str, Any]) -> Any:
    kind = type(node).__name__
    first = next(_signatures(node), None)
    if first is None:
        raise CanvasError(f"The {kind} is empty: give it at least one signature.")
    final = options.pop("task_id", None) or _new_id()
    plan = _Plan(first.task._app(), kind, final, options)
    out = plan.add(_with_args(node, args, kwargs), None, "", {}, final)
    _write(plan)
    return out.result


def _prepare_step(plan: _Plan, step: _Step) -> Prepared:
    sig, task = step.sig, step.sig.task
    options = {**plan.options, **step.defaults, **sig.options}
    options.pop("task_id", None)
    if step.parents:
        early = [name for name in _START_OPTIONS if sig.options.get(name) is not None]
        if early:
            raise CanvasError(
                f"{plan.describe(step.id)} sets {early[0]}, which only the first steps of a "
                "workflow can: the others start when the steps they follow finish."
            )
        for name in _START_OPTIONS:
            options.pop(name, None)
        if opts.resolve("rate_limit", type(task).task_options(), getattr(plan.app, "options", None)):
            raise CanvasError(
                f"{plan.describe(step.id)}: task {task.name} has a rate_limit, which tasklab applies "
                "when a job is submitted, so it can only be a first step of a workflow."
            )
    if step.children:
        options["ignore_result"] = False  # the steps after it read it
    meta: dict[str, Any] = {keys.META_WORKFLOW: plan.id, META_STEP: step.number, META_WHERE: step.where}
    receives = bool(step.parents) and not sig.immutable
    if receives:
        meta[keys.META_PARENTS] = list(step.parents)
        meta[keys.META_MERGE] = "list" if step.joins else "one"
    try:
        task.signature_check((_PREVIOUS,) * receives + sig.args, sig.kwargs)
    except TypeError as exc:
        what = "the list of the group's results" if step.joins else "the previous step's result"
        given = f" with {what} as its first argument" if receives else ""
        raise CanvasError(f"{plan.describe(step.id)} cannot be called{given}: {exc}") from None
    try:
        prepared = prepare(
            plan.app,
            plan.app.queue,
            task,
            [(sig.args, sig.kwargs)],
            options,
            meta=meta,
            depends_on=[list(step.depends_on)] if step.depends_on else None,
            job_ids=[step.id],
        )
    except (SerializationError, ConfigurationError) as exc:
        raise type(exc)(f"In {plan.describe(step.id)}: {exc}") from exc
    (job,) = prepared.jobs
    if step.children:
        if job.result_ttl == 0:
            job.result_ttl = opts.DEFAULTS["result_ttl"]
        # RQ's on_failure callback (Queue.create_job(on_failure=...)), set on a job already built.
        job._failure_callback_name = _FAILURE_CALLBACK
    job.group_id = step.group_id
    return prepared


def join() -> None:
    """What a join job runs: nothing. It finishes once the jobs it depends on have finished."""


def _join_jobs(plan: _Plan, prepared: dict[str, Prepared]) -> list[tuple[Job, Any]]:
    jobs = []
    for join_id, (waits_for, step_id) in plan.joins.items():
        queue = prepared[step_id].queue
        meta = {keys.META_NAMESPACE: plan.app.namespace, keys.META_WORKFLOW: plan.id,
                META_WHERE: f"a join before {plan.by_id[step_id].where}"}  # fmt: skip
        job = queue.create_job(_JOIN, job_id=join_id, depends_on=waits_for, meta=meta, timeout=-1,
                               result_ttl=opts.DEFAULTS["result_ttl"],
                               description=f"join of {len(waits_for)} jobs of {plan.kind} {plan.id}")  # fmt: skip
        job._failure_callback_name = _FAILURE_CALLBACK
        jobs.append((job, queue))
    return jobs


def _write(plan: _Plan) -> None:
    """Write every step's job hash, then queue the first steps (see the module's docstring)."""
    prepared = {step.id: _prepare_step(plan, step) for step in plan.steps}
    for task in {id(p.task): p.task for p in prepared.values()}.values():
        plan.app.ensure_code(task)
    writes = [(prepared[s.id].jobs[0], prepared[s.id].queue, s.sig.task, bool(s.depends_on)) for s in plan.steps]
    writes += [(job, queue, None, True) for job, queue in _join_jobs(plan, prepared)]
    connection = plan.connection
    for first in range(0, len(writes), BATCH):
        with connection.pipeline(transaction=False) as pipe:
            for job, queue, task, deferred in writes[first : first + BATCH]:
                if not deferred:
                    job.set_status(JobStatus.CREATED, pipeline=pipe)
                    job.save(pipeline=pipe)
                    continue
                job.set_status(JobStatus.DEFERRED, pipeline=pipe)
                job.register_dependency(pipeline=pipe)
                job.save(pipeline=pipe)
                job.cleanup(ttl=job.ttl, pipeline=pipe)
                pipe.sadd(queue.redis_queues_keys, queue.key)
                if task is None:
                    continue
                events.emit(
                    pipe,
                    events.SUBMITTED,
                    job.id,
                    task.name,
                    job.meta[keys.META_NAMESPACE],
                    q=queue.name,
                    v=task._tl_version,
                    wf=plan.id,
                )
            pipe.execute()
    with connection.pipeline(transaction=False) as pipe:
        for group_id, ids in plan.groups.items():
            pipe.sadd(Group.get_key(group_id), *ids)
            pipe.sadd(Group.REDIS_GROUP_KEY, group_id)
        pipe.execute()
    roots: dict[tuple, Prepared] = {}
    for step in plan.steps:
        p = prepared[step.id]
        if not step.parents:
            key = (id(p.task), p.queue.name, p.one_at_a_time)
            if key in roots:
                roots[key].jobs.extend(p.jobs)
                roots[key].starts.extend(p.starts)
            else:
                roots[key] = Prepared(p.app, p.task, p.queue, list(p.jobs), list(p.starts), p.one_at_a_time)
    for batch in roots.values():
        enqueue(batch)


# -- failures: in the worker, and on the waiting side ---------------------------------------


def on_step_failure(job: Job, connection: redis.Redis, *exc_info: Any) -> None:
    """RQ's failure callback of a workflow step that others follow; runs in the worker.

    Once the step has failed for good, the steps after it can never run: cancel them and tell
    whoever waits on the workflow. Never raises, since RQ would record that instead of the
    step's own failure.
    """
    if job.retries_left:  # another attempt follows
        return
    try:
        cancel_downstream(connection, job.id)
        workflow = job.meta.get(keys.META_WORKFLOW)
        if workflow:
            with connection.pipeline(transaction=False) as pipe:
                pipe.xadd(failures_key(workflow), {"id": job.id}, maxlen=1000, approximate=True)
                pipe.expire(failures_key(workflow), _NOTICE_TTL)
                pipe.execute()
    except Exception:
        log.exception("could not cancel the workflow steps after failed job %s", job.id)


def cancel_downstream(connection: redis.Redis, job_id: str) -> list[str]:
    """Cancel every deferred job waiting, directly or through others, for ``job_id``, which failed or was
    revoked; return their ids. They become REVOKED, with ``job_id`` in their meta (:data:`META_CAUSE`)."""
    cancelled: list[str] = []
    seen, frontier = {job_id}, [job_id]
    while frontier:
        with connection.pipeline(transaction=False) as pipe:
            for parent in frontier:
                pipe.smembers(Job.dependents_key_for(parent))
            found = {as_text(i) for members in pipe.execute() for i in members} - seen
        seen |= found
        frontier = sorted(found)
        jobs = [j for j in Job.fetch_many(frontier, connection, serializer=Serializer) if j is not None]
        waiting = [j for j in jobs if j.get_status(refresh=False) == JobStatus.DEFERRED]
        with connection.pipeline() as pipe:
            for job in waiting:
                job.meta[META_CAUSE] = job_id
                pipe.hset(job.key, "meta", Serializer.dumps(job.meta))
                try:
                    if not job.has_rate_limit:
                        job.cancel(pipeline=pipe)
                except InvalidJobOperation:  # cancelled meanwhile
                    continue
                cancelled.append(job.id)
                if keys.META_TASK not in job.meta:  # a join job, not a task
                    continue
                events.emit(
                    pipe,
                    events.REVOKED,
                    job.id,
                    job.meta.get(keys.META_TASK, job.func_name),
                    job.meta.get(keys.META_NAMESPACE, "default"),
                    wf=job.meta.get(keys.META_WORKFLOW),
                )
            pipe.execute()
        for job in waiting:
            if job.has_rate_limit:  # RQ cancels these outside a caller's pipeline only
                with contextlib.suppress(InvalidJobOperation):
                    job.cancel()
    return cancelled


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


def _wait(plan: _Plan, targets: list[str], timeout: float | None, stop_on_failure: bool = True) -> _Outcome:
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


# -- results -------------------------------------------------------------------------------


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

    def __init__(
        self, id: str, app: Any = None, *, task_name: str | None = None, plan: _Plan | None = None, parent: Any = None
    ):
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
                f"{_upper(self._plan.describe(self.id))} did not finish within {timeout} s (state {self.state})."
            )
        self._final = final
        return final.return_value

    wait = get


class GroupResult(ResultSet):
    """The results of a group's members, in order (Celery's GroupResult): ``get()`` is the list of their values.

    ``id`` is the group's id, also the RQ group's name (``rq.group.Group.fetch(id, connection)``).
    """

    def __init__(self, id: str, results: Iterable[AsyncResult] = (), *, parent: Any = None, plan: _Plan | None = None):
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
