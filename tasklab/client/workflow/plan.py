"""Compiling a workflow into steps: one RQ job per signature, with ids fixed in advance.

A step that follows others depends on them (RQ's ``depends_on``) and receives their results
first; past :data:`~tasklab.defaults.JOIN_FAN_IN` parents, it waits for a tree of join jobs instead. The plan
also answers what the waiting side asks: which steps a result waits for, how to name a step,
and what ``get()`` raises when one fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from rq.job import Job, JobStatus
from rq.utils import as_text

from ... import defaults
from ...core.signatures import Signature, chain, group
from ...errors import CanvasError, ChordError, TaskError, TaskRevokedError, TimeoutError
from ..result import AsyncResult
from .results import GroupResult, WorkflowResult


@dataclass
class Step:
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


def upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def new_id() -> str:
    return str(uuid.uuid4())


class Plan:
    """A workflow compiled into its steps, in submission order, shared by the results that wait on it."""

    def __init__(self, app: Any, kind: str, workflow_id: str, options: dict[str, Any]):
        self.app = app
        self.kind = kind
        self.id = workflow_id
        self.options = options  # given to apply_async: for every step
        self.steps: list[Step] = []
        self.by_id: dict[str, Step] = {}
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
            step_id = final or node.options.get("task_id") or new_id()
            step = Step(
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
                last, step_options = i == len(node.tasks), options
                if isinstance(member, group) and len(member.tasks) == 1:  # unrolled to its member, as in Celery 5
                    step_options = {**options, **{k: v for k, v in member.options.items() if k != "task_id"}}
                    member = member.tasks[0]
                where = f"step {i} of {len(node.tasks)}{within}"
                out = self.add(member, out, where, step_options, final if last else None)
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
        group_id = final or new_id()
        outs = []
        for i, member in enumerate(node.tasks, 1):
            where = f"member {i} of {count}{part}{within}"
            out = self.add(member, incoming, where, options, None)
            if out.many:
                raise CanvasError(
                    f"{upper(where)} ends in a group, so it gives several results where a group member gives "
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
            while len(level) > defaults.JOIN_FAN_IN:
                above = []
                for first in range(0, len(level), defaults.JOIN_FAN_IN):
                    join_id = new_id()
                    self.joins[join_id] = (level[first : first + defaults.JOIN_FAN_IN], step_id)
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

    def describe(self, step_id: str, capital: bool = False) -> str:
        """The step, for messages: "step 2 of 3 of chain <id> (task add, job <id>)"."""
        step = self.by_id.get(step_id)
        if step is None:
            text = f"a join job of {self.kind} {self.id} (job {step_id})"
        else:
            text = f"{step.where} of {self.kind} {self.id} (task {step.sig.name}, job {step.id})"
        return upper(text) if capital else text

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
            error = ChordError(f"{upper(where)} raised {exc!r}, so {join.where} (task {join.sig.name}) did not run.")
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
