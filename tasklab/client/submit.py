"""Turning task calls into RQ jobs: options resolved, arguments checked, pipelined enqueue.

Every call is checked (arguments fit the task, arguments serialise) before anything is
written, so a bad call in a ``map_async`` submits nothing and says which item and argument failed.
"""

from __future__ import annotations

import os
import re
import reprlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from rq import Callback
from rq.job import Job, JobStatus
from rq.rate_limit import RateLimit
from rq.results import Result

from .. import defaults
from ..code.serialization import Serializer, describe_unpicklable
from ..code.shipping import ship
from ..core import options as opts
from ..core.app import App
from ..core.signatures import Signature, callbacks_of
from ..core.signing import keyring
from ..core.task import Task, task_names_of_args
from ..engine import events, keys, transaction
from ..engine.queue import TaskQueue
from ..engine.ratelimit import META_RATE, META_SLOT, take_slots
from ..engine.ratelimit import key_for as ratelimit_key
from ..engine.rq_private import compressed_payload, queued_fields, utc_stamp
from ..engine.workflow import META_ERRBACKS, META_LINKS, parked
from ..errors import CanvasError, ConfigurationError, SerializationError
from .result import AsyncResult, ResultSet

#: The function every tasklab job calls; it finds the task from the job's meta.
EXECUTE = "tasklab.engine.execution.execute_task"
_SUBMIT_KEYS = {"countdown", "eta", "queue", "task_id"}
#: Per-call options that are no scalar, taken out before the others are checked.
_CALLBACK_KEYS = ("link", "link_error")
_PARENT_VALUE = object()  # stands for a parent's result when checking a step's arguments
_ERRBACK_ARGS = (object(), object(), object())  # stand for (request, exc, traceback)
#: RQ statuses of a job that is still to run or running: its id cannot be given to a new one.
_LIVE = {
    JobStatus.QUEUED.value, JobStatus.SCHEDULED.value, JobStatus.STARTED.value, JobStatus.DEFERRED.value,
    JobStatus.CREATED.value, "rate_limited",
}  # fmt: skip


#: Arguments as a job's description shows them: bounded in length and depth, whatever their size (a
#: deeply nested list would raise RecursionError in repr()), and a failing ``__repr__`` shown as its type.
_ARGUMENT_REPR = reprlib.Repr()
_ARGUMENT_REPR.maxlevel = 4
_ARGUMENT_REPR.maxstring = _ARGUMENT_REPR.maxother = 80


#: The types a per-call option can have; others are refused before a message shows them whole.
_SCALARS = (str, int, float, datetime)
_EXPECTED = {
    "countdown": "give a number of seconds (an int or a float)",
    "eta": "give a datetime",
    "time_limit": "give a number of seconds",
    "soft_time_limit": "give a number of seconds",
    "result_ttl": "give a whole number of seconds",
    "task_id": "give a string",
    "queue": "give a queue's name",
}


_SHORT_REPR = frozenset({type(None), bool, int, float})


def _argument_repr(value: Any) -> str:
    if type(value) in _SHORT_REPR or (type(value) is str and len(value) <= _ARGUMENT_REPR.maxstring):
        text = repr(value)
        if len(text) <= _ARGUMENT_REPR.maxother:
            return text
    return _ARGUMENT_REPR.repr(value)


def describe(name: str, args: tuple, kwargs: dict) -> str:
    """``name(arg, key=value)`` for RQ's job description, shortened."""
    parts = [_argument_repr(a) for a in args] + [f"{k}={_argument_repr(v)}" for k, v in kwargs.items()]
    text = f"{name}({', '.join(parts)})"
    return text if len(text) <= defaults.DESCRIPTION_MAX else text[: defaults.DESCRIPTION_MAX - 4] + "...)"


_WITHIN_A_YEAR = "give a datetime within a year from now (one in the past runs at once)."


def _due(countdown: float | None, eta: Any) -> datetime | None:
    if countdown is not None:
        return datetime.now(timezone.utc) + timedelta(seconds=opts.seconds("countdown", countdown, inclusive=True))
    if eta is not None:
        if not isinstance(eta, datetime):
            raise ConfigurationError(f"eta={eta!r}: expected a datetime.")
        try:
            due = eta if eta.tzinfo else eta.astimezone(timezone.utc)
            ahead = (due - datetime.now(timezone.utc)).total_seconds()
        except (OverflowError, ValueError, OSError) as exc:
            raise ConfigurationError(
                f"eta={eta!r} is invalid ({exc}): give a datetime within a year from now."
            ) from None
        if ahead > defaults.LONGEST_SECONDS:
            raise ConfigurationError(f"eta={eta!r} is more than a year ahead: give a datetime within a year from now.")
        return due
    return None


def _expires_at(expires: Any) -> float:
    """``expires`` (seconds from now, or a datetime) as a timestamp."""
    if isinstance(expires, datetime):
        try:
            return (expires if expires.tzinfo else expires.astimezone(timezone.utc)).timestamp()
        except (OverflowError, ValueError, OSError) as exc:
            raise ConfigurationError(f"expires={expires!r} is invalid ({exc}): give a datetime.") from None
    return datetime.now(timezone.utc).timestamp() + opts.seconds("expires", expires)


def checked_task_id(task_id: Any) -> str:
    if not isinstance(task_id, str) or not re.fullmatch(defaults.TASK_ID_PATTERN, task_id):
        raise ConfigurationError(
            f"task_id={task_id!r} is invalid: expected a string of 1 to 128 letters, digits, '_' and '-' "
            "(RQ's job ids), such as str(uuid.uuid4())."
        )
    return task_id


@dataclass
class Batch:
    """Calls that differ only in their arguments, as RQ would write their jobs: one template of
    the hash, and each job's id, payload and description (see :meth:`TaskQueue.enqueue_batch`)."""

    fields: dict[str, Any]
    jobs: list[tuple[str, bytes, str]] = field(default_factory=list)


@dataclass
class Prepared:
    """Jobs built and checked for one task, not yet written to Redis: RQ's jobs, or a batch of
    calls with nothing of their own but their arguments (the common ``map``), built from a template."""

    app: App
    task: Task
    queue: TaskQueue
    jobs: list[Job]
    starts: list[datetime | None]  # when each may start: None for now
    one_at_a_time: bool  # RQ enqueues concurrency-limited jobs without a pipeline
    batch: Batch | None = None
    carried: tuple[Task, ...] = ()  # tasks the jobs take as their first argument, whose code they need too
    #: What the jobs' callbacks and errbacks submit when they are applied (code to store, queues to serve).
    linked: list[Prepared] = field(default_factory=list)
    #: Errbacks called in the worker (see :func:`_errback`): their code is stored with the jobs.
    called: list[Task] = field(default_factory=list)
    #: Ids of finished jobs whose records go before these are written (``task_id`` given again).
    replaces: list[str] = field(default_factory=list)

    def results(self) -> ResultSet:
        ignore = (self.batch.fields.get("result_ttl") if self.batch else None) == 0
        if self.batch is not None:
            return ResultSet(
                AsyncResult(job_id, self.app, task_name=self.task.name, ignore_result=ignore)
                for job_id, _, _ in self.batch.jobs
            )
        return ResultSet(
            AsyncResult(job.id, self.app, task_name=self.task.name, ignore_result=job.result_ttl == 0)
            for job in self.jobs
        )


def shipped(task: Task) -> Task:
    """``task``, given a code version if it has none yet: a task defined outside a ``%%task`` cell
    is shipped (by import path or by source) at its first submit; so is a subclass of a registered
    task, which inherits its parent's version."""
    if type(task).__dict__.get("_tl_version") is None:
        ship(type(task))
    return task


def submit_calls(app: App, task: Task, calls: list[tuple[tuple, dict]], call_options: dict[str, Any]) -> ResultSet:
    """Submit ``calls`` of ``task`` on ``app`` with ``call_options``; their results, in order."""
    prepared = prepare(app, task, calls, call_options)
    enqueue(prepared)
    return prepared.results()


def prepare(
    app: App,
    task: Task,
    calls: list[tuple[tuple, dict]],
    call_options: dict[str, Any],
    *,
    meta: dict[str, Any] | None = None,
    depends_on: list[list[str]] | None = None,
    job_ids: list[str] | None = None,
    on_failure: str | None = None,
    applied_later: bool = False,
) -> Prepared:
    """Build and check the jobs of ``calls``: options resolved, arguments bound and serialised.

    Writes nothing, so a bad call submits nothing. ``meta`` is added to every job's meta;
    ``depends_on[i]`` lists the job ids call ``i`` waits for (RQ dependencies); ``job_ids``
    fixes the ids (a workflow knows them before it submits); ``on_failure`` is the dotted path
    of RQ's failure callback of every job. When ``meta`` names parents whose results a job
    receives (``keys.META_PARENTS``), the arguments are checked with that value in front.
    ``applied_later`` jobs (callbacks, errbacks) take no rate-limit slot now: they take one when
    a worker starts them.
    """
    given = {k: v for k, v in call_options.items() if v is not None}
    links = callbacks_of(given.pop("link", None), "link")
    errbacks = callbacks_of(given.pop("link_error", None), "link_error")
    expires = given.pop("expires", None)
    not_per_call = set(given) - _SUBMIT_KEYS - opts.CALL_OPTIONS
    if not_per_call:
        raise ConfigurationError(
            f"{', '.join(sorted(not_per_call))} cannot be set per call; set it on the task. "
            f"Per call: {', '.join(sorted(_SUBMIT_KEYS | opts.CALL_OPTIONS | {'expires', *_CALLBACK_KEYS}))}."
        )
    for option, value in given.items():
        if not isinstance(value, _SCALARS):  # the checks below show the value whole, with repr()
            raise ConfigurationError(
                f"{option}={_ARGUMENT_REPR.repr(value)} is invalid: a {type(value).__name__} is no {option} value; "
                f"{_EXPECTED.get(option, 'give a string or a number')}."
            )
    call = opts.validate({k: v for k, v in given.items() if k in opts.CALL_OPTIONS}, where="call")
    if "queue" in given:
        call["queue"] = opts.validate({"queue": given["queue"]})["queue"]
    shipped(task)
    carried = _carried(task, calls)
    task_options = type(task).task_options()
    lab_options = app.options
    due = _due(given.get("countdown"), given.get("eta"))
    task_id = given.get("task_id")
    replaces: list[str] = []
    if task_id is not None:
        if len(calls) != 1:
            raise ConfigurationError("task_id names one job; it cannot be used with map_async or starmap_async.")
        job_ids = [checked_task_id(task_id)]
        replaces = _finished(app, task_id)
    if links or errbacks:
        if len(calls) != 1:
            raise ConfigurationError("link and link_error apply to one call; map_async and starmap_async take neither.")
        if links and (meta or {}).get(keys.META_WORKFLOW):
            raise CanvasError(
                f"link on {task.name}, a step of a workflow (or on the workflow): chain the callback after it "
                "instead, (workflow | callback.s()), which gives it the same value."
            )
        job_ids = job_ids or [new_job_id()]
    ignore = opts.resolve("ignore_result", call, task_options, lab_options)
    result_ttl = 0 if ignore else opts.resolve("result_ttl", call, task_options, lab_options)
    queue: TaskQueue = app.queue(opts.resolve("queue", call, task_options, lab_options))

    base_meta: dict[str, Any] = {
        keys.META_NAMESPACE: app.namespace,
        keys.META_TASK: task.name,
        keys.META_VERSION: task._tl_version,
    }
    for option, meta_key in (("time_limit", keys.META_TIME_LIMIT), ("soft_time_limit", keys.META_SOFT_TIME_LIMIT)):
        seconds = opts.resolve(option, call, task_options, lab_options)
        if seconds is not None:
            base_meta[meta_key] = seconds
    if opts.resolve("acks_late", call, task_options, lab_options):
        base_meta[keys.META_ACKS_LATE] = opts.resolve("max_retries", task_options, lab_options)
    if expires is not None and applied_later and not isinstance(expires, datetime):
        base_meta[keys.META_EXPIRES_AFTER] = opts.seconds("expires", expires)  # from when it is applied
    elif expires is not None:
        base_meta[keys.META_EXPIRES] = _expires_at(expires)
    rate = opts.resolve("rate_limit", task_options, lab_options)
    if rate is not None:  # applied by the worker, when a job is about to start
        base_meta[META_RATE] = [ratelimit_key(app.namespace, task.name or ""), rate]
    base_meta.update(meta or {})
    concurrency = opts.resolve("concurrency_limit", task_options, lab_options)
    limit = RateLimit(f"tasklab:{app.namespace}:{task.name}", concurrency) if concurrency else None
    plain = due is None and rate is None and limit is None and not applied_later
    if plain and not (depends_on or job_ids or on_failure):
        fields = _queued_fields(queue, result_ttl, base_meta)
        batch = _batch(task, calls, Batch(fields), 1 if base_meta.get(keys.META_PARENTS) else 0)
        return Prepared(app, task, queue, [], [], one_at_a_time=False, batch=batch, carried=carried)
    jobs: list[Job] = []
    receives = 1 if base_meta.get(keys.META_PARENTS) else 0
    for index, (args, kwargs) in enumerate(calls):
        task.signature_check((_PARENT_VALUE,) * receives + tuple(args), kwargs)
        job = queue.create_job(
            EXECUTE, args=args, kwargs=kwargs, timeout=-1, result_ttl=result_ttl, failure_ttl=defaults.FAILURE_TTL,
            description=describe(task.name or "", args, kwargs), job_id=job_ids[index] if job_ids else None,
            meta=dict(base_meta), rate_limit=limit,
            depends_on=list[Any](depends_on[index]) if depends_on else None,
            on_failure=Callback(on_failure) if on_failure else None,
        )  # fmt: skip
        try:
            job.data  # noqa: B018 - serialise now, so that a bad call submits nothing
        except Exception as exc:
            raise _unserialisable(task, args, kwargs, index if len(calls) > 1 else None, exc) from exc
        jobs.append(job)
    linked: list[Prepared] = []
    called: list[Task] = []
    if links or errbacks:
        (job,) = jobs
        if links:
            job.meta[META_LINKS] = [_link(app, job.id, sig, linked) for sig in links]
            if job.result_ttl == 0:  # the callbacks read the value
                job.result_ttl = opts.DEFAULTS["result_ttl"]
        if errbacks:
            job.meta[META_ERRBACKS] = [_errback(app, job.id, sig, linked, called) for sig in errbacks]
    starts: list[datetime | None] = [due] * len(jobs)
    if rate is not None and not applied_later and not (meta or {}).get(keys.META_PARENTS):
        starts = _rate_slots(queue, base_meta[META_RATE][0], rate, jobs, due)
    return Prepared(app, task, queue, jobs, starts, limit is not None, carried=carried, linked=linked, called=called,
                    replaces=replaces)  # fmt: skip


def _callback_job(app: App, sig: Signature, what: str, meta: dict[str, Any], args: tuple) -> Prepared:
    """The job of a callback or errback, built and checked now, applied later by a worker."""
    early = [name for name in ("countdown", "eta") if sig.options.get(name) is not None]
    if early:
        raise CanvasError(f"The {what} {sig!r} sets {early[0]}: a {what} is applied when the task ends; leave it out.")
    shipped(sig.task)
    try:
        prepared = prepare(app, sig.task, [(args, sig.kwargs)], sig.options, meta=meta, applied_later=True)
    except (SerializationError, ConfigurationError) as exc:
        raise type(exc)(f"In the {what} {sig!r}: {exc}") from exc
    if prepared.one_at_a_time:
        raise CanvasError(
            f"The {what} {sig!r} runs a task with a concurrency_limit, which RQ applies when a job is queued by "
            "the kernel: submit it from the task itself instead."
        )
    return prepared


def _link(app: App, parent_id: str, sig: Signature, linked: list[Prepared]) -> dict[str, Any]:
    """A link callback of job ``parent_id``: its job, receiving the parent's value as a chain step does."""
    meta = {} if sig.immutable else {keys.META_PARENTS: [parent_id], keys.META_MERGE: "one"}
    prepared = _callback_job(app, sig, "link callback", meta, sig.args)
    linked.append(prepared)
    return parked(prepared.jobs[0], prepared.queue.name, sig.task.name)


def _errback(app: App, parent_id: str, sig: Signature, linked: list[Prepared], called: list[Task]) -> tuple:
    """An errback of job ``parent_id``, as Celery applies it: a task taking ``(request, exc,
    traceback)`` is called in the worker, another is submitted with ``parent_id`` first."""
    task = shipped(sig.task)
    try:
        task.signature_check(_ERRBACK_ARGS + sig.args, sig.kwargs)
    except TypeError:
        pass
    else:
        called.append(task)
        return ("call", task._tl_version, task.name, sig.args, sig.kwargs)
    try:
        task.signature_check((parent_id, *sig.args), sig.kwargs)
    except TypeError as exc:
        raise CanvasError(
            f"The errback {sig!r} takes neither (request, exc, traceback) nor the failed task's id first: {exc}"
        ) from None
    prepared = _callback_job(app, sig, "errback", {}, (parent_id, *sig.args))
    linked.append(prepared)
    return ("apply", parked(prepared.jobs[0], prepared.queue.name, task.name))


def take_id(app: App, task_id: str) -> None:
    """Let a new task take ``task_id`` (given by the user): refused with :class:`ConfigurationError`
    while a task of that id has not finished; a finished one's records deleted."""
    for finished in _finished(app, task_id):
        forget_finished(app, finished)


def _finished(app: App, task_id: str) -> list[str]:
    """``[task_id]`` if a finished job has that id (its records are replaced by the new one's), ``[]`` if
    none has; a :class:`ConfigurationError` if a job of that id is still to run or running."""
    status = app.connection.hget(Job.key_for(task_id), "status")
    if status is None:  # gone (ignore_result, forgotten), though some of its records may be left
        left = app.connection.exists(Result.get_key(task_id), keys.output_key(task_id), keys.exception_key(task_id))
        return [task_id] if left else []
    if status.decode() in _LIVE:
        raise ConfigurationError(
            f"task_id={task_id!r} names a task that has not finished (RQ status {status.decode()}): a new task cannot "
            "take its id. Wait for it, revoke it (AsyncResult(id).revoke()), or give another id."
        )
    return [task_id]


#: The hash fields of plain jobs (see _queued_fields), by what they are made of: at most a few hundred.
_FIELDS: dict[tuple[str, int | None, bytes | None, str], dict[str, Any]] = {}


def _queued_fields(queue: TaskQueue, result_ttl: int | None, meta: dict[str, Any]) -> dict[str, Any]:
    """The hash fields but ``data`` and ``description`` of a plain job of ``queue`` (see
    :func:`~tasklab.engine.rq_private.queued_fields`), dated now. RQ's ``create_job`` and ``to_dict``, which
    make them, took about 30 µs of a ``delay()``'s 400; every call of a task with the same options gives the
    same fields but the dates, so they are made once (the meta signed with the key in use) and dated anew."""
    key = (queue.key, result_ttl, keyring.signing_key, repr(meta))
    fields = _FIELDS.get(key)
    if fields is None:
        fields = queued_fields(
            queue, EXECUTE, timeout=-1, result_ttl=result_ttl, failure_ttl=defaults.FAILURE_TTL, meta=meta
        )
        if keys.META_EXPIRES not in meta:  # a date of its own: made anew for the next call anyway
            if len(_FIELDS) >= 256:
                _FIELDS.clear()
            _FIELDS[key] = fields
    stamp = utc_stamp(datetime.now(timezone.utc))
    return {**fields, "created_at": stamp, "enqueued_at": stamp}


def _carried(task: Task, calls: list[tuple[tuple, dict]]) -> tuple[Task, ...]:
    """The tasks the calls of ``task`` (a built-in map task) take as their first argument, shipped:
    they travel by reference to their code version, which the workers load."""
    if not type(task)._tl_takes_task:
        return ()
    found = {id(args[0]): args[0] for args, _ in calls if args and isinstance(args[0], Task)}
    return tuple(shipped(member) for member in found.values())


def _batch(task: Task, calls: list[tuple[tuple, dict]], batch: Batch, receives: int) -> Batch:
    """``batch`` with the jobs of ``calls``, each checked against the task's signature (with a parent's
    value in front when the jobs receive one) and serialised as RQ's ``Job.data`` would be."""
    name = task.name or ""
    check, out = task.signature_check, batch.jobs
    for index, (args, kwargs) in enumerate(calls):
        check((_PARENT_VALUE,) * receives + tuple(args), kwargs)
        try:
            payload = compressed_payload(Serializer.dumps((EXECUTE, None, args, kwargs)))
        except Exception as exc:
            raise _unserialisable(task, args, kwargs, index if len(calls) > 1 else None, exc) from exc
        out.append((new_job_id(), payload, describe(name, args, kwargs)))
    return batch


def new_job_id() -> str:
    """A random job id, as RQ's (``str(uuid.uuid4())``), made faster."""
    bits = (int.from_bytes(os.urandom(16), "big") & _UUID4_CLEAR) | _UUID4_SET
    text = f"{bits:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


#: The bits that make 128 random bits a version-4 UUID (RFC 4122): cleared, then set.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def _unserialisable(task: Task, args: tuple, kwargs: dict, index: int | None, exc: Exception) -> SerializationError:
    """The error of a call whose arguments cannot be serialised: which argument, and what to do."""
    detail = (
        describe_unpicklable(args, kwargs, task_names_of_args(task)) or f"the arguments cannot be serialised: {exc}"
    )
    where = f" (item {index})" if index is not None else ""
    advice = (
        ""  # tasklab's own refusal (an open file, nesting too deep) says what to do
        if isinstance(exc, SerializationError)
        else " Pass plain data (numbers, strings, lists, dicts, arrays, objects of classes defined in a "
        "%%task cell or an importable module) and open files, connections and locks inside the task."
    )
    return SerializationError(f"Cannot submit {task.name}{where}: {detail}.{advice}")


def make_ready(prepared: Prepared) -> None:
    """What ``prepared``'s jobs need in Redis before they are written: the code of their task, of the
    tasks they carry (a map's) and of their callbacks and errbacks (and theirs), workers for their
    queues, and no records left of the finished tasks whose ids they take again."""
    for linked in [prepared, *_linked(prepared)]:
        for task in (linked.task, *linked.carried, *linked.called):
            linked.app.ensure_code(task)
        linked.app.ensure_workers(linked.queue.name)
        for task_id in linked.replaces:
            forget_finished(linked.app, task_id)


def enqueue(prepared: Prepared) -> None:
    """Write prepared jobs to Redis: queued, or scheduled for their start, in pipelined batches."""
    make_ready(prepared)
    queue, jobs, starts = prepared.queue, prepared.jobs, prepared.starts
    if prepared.batch is not None:
        task, namespace = prepared.task, prepared.app.namespace
        fields, pending = prepared.batch.fields, prepared.batch.jobs
        first = 0
        while first < len(pending):  # at most SUBMIT_BATCH jobs, and about a megabyte, per call
            last, size = first, 0
            while last < len(pending) and last - first < defaults.SUBMIT_BATCH and size < defaults.SUBMIT_BATCH_BYTES:
                size += len(pending[last][1])
                last += 1
            queue.enqueue_batch(fields, pending[first:last], task=task.name or "", namespace=namespace,
                                version=task._tl_version or "")  # fmt: skip
            first = last
        return
    if prepared.one_at_a_time:
        for job, start in zip(jobs, starts, strict=True):
            _enqueue(queue, job, start, None)
        return
    for first in range(0, len(jobs), defaults.SUBMIT_BATCH):
        with queue.connection.pipeline() as pipe:
            for job, start in zip(
                jobs[first : first + defaults.SUBMIT_BATCH], starts[first : first + defaults.SUBMIT_BATCH], strict=True
            ):
                _enqueue(queue, job, start, pipe)
            transaction.execute(queue.connection, pipe)  # as pipe.execute(), with less Python


def _rate_slots(queue: TaskQueue, key: str, rate: str, jobs: list[Job], due: datetime | None) -> list[datetime | None]:
    """When each job may start: ``due`` (or now), pushed later by the task's rate limit. Each job
    holds its slot (:data:`~tasklab.engine.ratelimit.META_SLOT`), which the worker checks at its start."""
    slots = take_slots(queue.connection, key, rate, len(jobs))
    now = datetime.now(timezone.utc)
    starts: list[datetime | None] = []
    for job, slot in zip(jobs, slots, strict=True):
        start = datetime.fromtimestamp(slot, timezone.utc)
        job.meta[META_SLOT] = slot
        if start > now and (due is None or start > due):
            job.meta[keys.META_HELD] = "rate_limit"
        starts.append(max(start, due) if due else (start if start > now else None))
    return starts


def _linked(prepared: Prepared) -> list[Prepared]:
    """The callbacks and errbacks of ``prepared``'s jobs, and theirs, depth first."""
    found = []
    for linked in prepared.linked:
        found += [linked, *_linked(linked)]
    return found


def forget_finished(app: App, task_id: str) -> None:
    """Delete what a finished task left under ``task_id``: its job, result, output, exception and
    events, so that a new task submitted with that id starts afresh (``get()`` waits for it)."""
    connection = app.connection
    created = connection.hget(Job.key_for(task_id), "created_at")
    AsyncResult(task_id, app).forget()
    since = None
    if created is not None:
        since = datetime.fromisoformat(created.decode().replace("Z", "+00:00")).timestamp()
    events.forget(connection, task_id, since)


def _enqueue(queue: TaskQueue, job: Job, start: datetime | None, pipe: Any) -> None:
    if start is None:
        queue.enqueue_job(job, pipeline=pipe)
    else:
        queue.schedule_job(job, start, pipeline=pipe)
    meta = job.meta
    target = pipe if pipe is not None else queue.connection.pipeline(transaction=False)
    events.emit(
        target, events.SUBMITTED, job.id, meta[keys.META_TASK], meta[keys.META_NAMESPACE], q=queue.name,
        v=meta.get(keys.META_VERSION), at=repr(start.timestamp()) if start is not None else None,
        wf=meta.get(keys.META_WORKFLOW),
    )  # fmt: skip
    if pipe is None:
        target.execute()
