"""Submitting a workflow: every step's job hash first, then the first steps queued.

The order of the writes matters: RQ counts a dependency whose job hash is missing as met. So
the hashes of all steps go first (the deferred ones registered with their dependencies), and
only then are the first steps queued. Nothing can finish before everything is written, so no
WATCH is needed, and a 1,000-member chord is written in a few pipelined round trips.
"""

from __future__ import annotations

from typing import Any

from rq import Callback
from rq.group import Group
from rq.job import Job, JobStatus

from ... import defaults
from ...core import options as opts
from ...core.app import App
from ...core.signatures import signatures_of, with_args
from ...engine import events, keys
from ...engine.workflow import FAILURE_CALLBACK, JOIN, META_STEP, META_WHERE
from ...errors import CanvasError, ConfigurationError, SerializationError
from ..submit import Prepared, checked_task_id, enqueue, make_ready, prepare, shipped, take_id
from .plan import Plan, Step, new_id

_START_OPTIONS = ("countdown", "eta")
_PREVIOUS = object()  # stands for the previous step's result when checking a step's arguments


def submit_workflow(app: App, node: Any, args: tuple, kwargs: dict, options: dict[str, Any]) -> Any:
    """Submit the workflow ``node`` whole, on ``app``; the result of its last step(s)."""
    kind = type(node).__name__
    signatures = list(signatures_of(node))
    if not signatures:
        raise CanvasError(f"The {kind} is empty: give it at least one signature.")
    for sig in signatures:  # before planning, which names the steps by their tasks' names
        shipped(sig.task)
    given = options.pop("task_id", None)
    final = given or new_id()
    plan = Plan(app, kind, final, options)
    out = plan.add(with_args(node, args, kwargs), None, "", {}, final)
    # Ids the user gave (the workflow's, a step's own): as for one task, a live one is refused and a
    # finished one's records go first.
    for task_id in {given, *(sig.options.get("task_id") for sig in signatures)} - {None}:
        take_id(app, checked_task_id(task_id))
    _write(plan)
    return out.result


def _prepare_step(plan: Plan, step: Step) -> Prepared:
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
            task,
            [(sig.args, sig.kwargs)],
            options,
            meta=meta,
            depends_on=[list(step.depends_on)] if step.depends_on else None,
            job_ids=[step.id],
            on_failure=FAILURE_CALLBACK if step.children else None,
            # A later step starts when those it follows finish: its rate limit is held then, at its
            # start, by the worker (no slot taken now).
            applied_later=bool(step.parents),
        )
    except (SerializationError, ConfigurationError) as exc:
        raise type(exc)(f"In {plan.describe(step.id)}: {exc}") from exc
    (job,) = prepared.jobs
    if step.children and job.result_ttl == 0:  # the steps after it read its result
        job.result_ttl = opts.DEFAULTS["result_ttl"]
    job.group_id = step.group_id
    return prepared


def _join_jobs(plan: Plan, prepared: dict[str, Prepared]) -> list[tuple[Job, Any]]:
    jobs = []
    for join_id, (waits_for, step_id) in plan.joins.items():
        queue = prepared[step_id].queue
        meta = {keys.META_NAMESPACE: plan.app.namespace, keys.META_WORKFLOW: plan.id,
                META_WHERE: f"a join before {plan.by_id[step_id].where}"}  # fmt: skip
        job = queue.create_job(JOIN, job_id=join_id, depends_on=list[Any](waits_for), meta=meta, timeout=-1,
                               result_ttl=opts.DEFAULTS["result_ttl"],
                               description=f"join of {len(waits_for)} jobs of {plan.kind} {plan.id}",
                               on_failure=Callback(FAILURE_CALLBACK))  # fmt: skip
        jobs.append((job, queue))
    return jobs


def _write(plan: Plan) -> None:
    """Write every step's job hash, then queue the first steps (see the module's docstring)."""
    prepared = {step.id: _prepare_step(plan, step) for step in plan.steps}
    for p in prepared.values():  # code, workers, and those of their callbacks and errbacks
        make_ready(p)
    writes = [(prepared[s.id].jobs[0], prepared[s.id].queue, s.sig.task, bool(s.depends_on)) for s in plan.steps]
    writes += [(job, queue, None, True) for job, queue in _join_jobs(plan, prepared)]
    connection = plan.connection
    for first in range(0, len(writes), defaults.SUBMIT_BATCH):
        with connection.pipeline(transaction=False) as pipe:
            for job, queue, task, deferred in writes[first : first + defaults.SUBMIT_BATCH]:
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
            key = (type(p.task), p.queue.name, p.one_at_a_time)  # the parts of chunks: one task class
            if key in roots:
                roots[key].jobs.extend(p.jobs)
                roots[key].starts.extend(p.starts)
                roots[key].carried += p.carried
            else:
                roots[key] = Prepared(
                    p.app, p.task, p.queue, list(p.jobs), list(p.starts), p.one_at_a_time, carried=p.carried
                )
    for batch in roots.values():
        enqueue(batch)
