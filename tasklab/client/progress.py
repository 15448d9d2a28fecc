"""Reading where many results are, cheaply: their states in one round trip, a set's progress, and
the queues no worker serves. Live views (badges, a set's bar, the monitor) poll these.

A job's state comes from three fields of its hash (status, meta, origin), read for a whole set in one
pipelined round trip (:func:`read_states`); a result that already holds its final outcome is not read.
"""

from __future__ import annotations

import html
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from rq.job import Job, JobStatus

from .. import defaults
from ..code.serialization import Serializer
from ..core.app import App
from ..core.states import FAILURE, PENDING, RATE_LIMITED, READY_STATES, RETRY, REVOKED, STARTED, SUCCESS
from ..engine import keys
from ..engine.reports import StateReport
from ..engine.reports import decode as decode_report
from ..engine.rq_private import workers_of_queue_key

#: States in which a job waits for a worker of its queue to take it.
WAITING_STATES = frozenset({PENDING, RETRY, RATE_LIMITED})
#: The order states are listed in: finished, running, waiting.
STATE_ORDER = (SUCCESS, FAILURE, REVOKED, STARTED, RETRY, RATE_LIMITED, PENDING)
COLOURS = {SUCCESS: "#2e7d32", FAILURE: "#c62828", REVOKED: "#6d4c41", STARTED: "#1565c0", RETRY: "#ef6c00"}
#: Statuses whose state depends on the job's meta (a retry, a rate limit, a workflow's cancelled step).
_META_STATUSES = {b"queued", b"scheduled", b"canceled"}


@dataclass(frozen=True)
class Progress:
    """Where the members of a :class:`ResultSet` were at one read (:meth:`ResultSet.progress`)."""

    states: tuple[str, ...]  # each member's state, in order
    queues: tuple[str | None, ...]  # the queue each member's job was sent to, where known
    unserved: frozenset[str] = frozenset()  # queues of waiting members that no live worker serves

    @property
    def total(self) -> int:
        return len(self.states)

    @property
    def done(self) -> int:
        return sum(state in READY_STATES for state in self.states)

    @property
    def ready(self) -> bool:
        return self.done == self.total

    @property
    def counts(self) -> dict[str, int]:
        """How many members are in each state they are in, finished ones first."""
        counts = {state: self.states.count(state) for state in STATE_ORDER}
        counts.update({state: self.states.count(state) for state in self.states if state not in counts})
        return {state: n for state, n in counts.items() if n}

    def unserved_of(self, state: str) -> list[str]:
        """The queues no live worker serves that members in ``state`` wait in."""
        return sorted({q for s, q in zip(self.states, self.queues, strict=True) if s == state and q in self.unserved})

    def summary(self) -> str:
        """``"50 tasks, 12 SUCCESS, 3 STARTED, 35 PENDING"``."""
        return ", ".join([f"{self.total} tasks"] + [f"{n} {state}" for state, n in self.counts.items()])

    def lines_html(self) -> str:
        """One line per state: its count, and for waiting members, the queues no worker serves."""
        lines = []
        for state, n in self.counts.items():
            notes = "".join(f" &mdash; {html.escape(unserved_hint(queue))}" for queue in self.unserved_of(state))
            colour = COLOURS.get(state, "#757575")
            lines.append(f'<div><b style="color:{colour};display:inline-block;width:9em">{state}</b> {n}{notes}</div>')
        return "".join(lines)


def read_states(results: Sequence[Any]) -> list[tuple[str, str | None]]:
    """The state of each of ``results`` (:class:`~tasklab.client.result.AsyncResult`) and the queue its
    job was sent to (``None`` if unknown), in one pipelined round trip for all of them: three fields of
    each job's hash, the meta decoded only where the state depends on it. Results that already hold
    their final outcome are not read. A running task's state is the one it reported, if it did
    (``self.update_state``), read in one more round trip for the running ones only."""
    return [(state, queue) for state, queue, _ in read_reported(results)]


def read_reported(results: Sequence[Any]) -> list[tuple[str, str | None, StateReport | None]]:
    """:func:`read_states`, with what each running task last reported (``None`` for the others)."""
    found: list[tuple[str, str | None, StateReport | None]] = [(PENDING, None, None)] * len(results)
    todo = []
    for i, result in enumerate(results):
        if result._final is not None:
            found[i] = (result._state_of(result._final), None, None)
        else:
            todo.append(i)
    if not todo:
        return found
    replies = _pipelined(
        results, todo, lambda pipe, result: pipe.hmget(Job.key_for(result.id), "status", "meta", "origin")
    )
    running = [i for i in todo if replies[i][0] == b"started"]
    reported = (
        _pipelined(results, running, lambda pipe, result: pipe.get(keys.report_key(result.id))) if running else {}
    )
    for i in todo:
        status, meta, origin = replies[i]
        report = decode_report(reported.get(i), results[i].id)
        decoded: dict[str, Any] = {}
        if (status in _META_STATUSES or report is not None) and meta:
            try:
                decoded = Serializer.loads(meta)
            except Exception:  # as RQ does with a meta it cannot read
                decoded = {}
        try:
            job_status = JobStatus(status.decode()) if status else None
        except ValueError:
            job_status = None
        state = results[i]._state_from(job_status, decoded)
        if report is not None and report.attempt not in (None, int(decoded.get(keys.META_RETRIES, 0))):
            report = None  # an earlier attempt's
        found[i] = (report.state if report is not None else state, origin.decode() if origin else None, report)
    return found


def _pipelined(results: Sequence[Any], indices: list[int], command: Callable[[Any, Any], Any]) -> dict[int, Any]:
    """``command(pipe, result)`` for each of ``results`` at ``indices``, one round trip per Redis
    (results of several labs are each read from their own); the replies by index."""
    by_connection: dict[int, list[int]] = {}
    for i in indices:
        by_connection.setdefault(id(results[i].connection), []).append(i)
    replies: dict[int, Any] = {}
    for group in by_connection.values():
        with results[group[0]].connection.pipeline(transaction=False) as pipe:
            for i in group:
                command(pipe, results[i])
            replies.update(zip(group, pipe.execute(), strict=True))
    return replies


def progress_of(meta: Any, current: str = "current", total: str | float = "total") -> tuple[float, float] | None:
    """``(done, of)`` from a reported meta: its ``current`` key's number, out of its ``total`` key's (or
    of ``total`` itself, a number); ``None`` unless both are numbers and the total is positive."""
    if not isinstance(meta, dict):
        return None
    done, of = meta.get(current), meta.get(total) if isinstance(total, str) else total
    if not (_number(done) and _number(of)) or not of > 0 or done != done:  # NaN is not a number of steps
        return None
    return float(done), float(of)


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def running_progress(results: Sequence[Any]) -> dict[str, tuple[str, float, float]]:
    """Of ``results`` (of running tasks, such as the ones the monitor's workers run), those whose task
    reported a ``current``/``total`` pair: by id, the state reported and ``(done, of)``."""
    found = {}
    for result, (state, _, report) in zip(results, read_reported(results), strict=True):
        pair = progress_of(report.meta) if report is not None else None
        if pair is not None:
            found[result.id] = (state, *pair)
    return found


def progress_html(state: str, done: float, of: float, width: int = 120) -> str:
    """A small progress bar with its numbers, for tables (the monitor's)."""
    return (
        f'<progress value="{min(done, of):g}" max="{of:g}" style="width:{width}px"></progress> '
        f"{done:g}/{of:g} {html.escape(state)}"
    )


_served_lock = threading.Lock()
_served: weakref.WeakKeyDictionary[Any, dict[str, tuple[float, bool]]] = weakref.WeakKeyDictionary()


def unserved_queues(app: App, queues: Iterable[str], *, max_age: float | None = None) -> list[str]:
    """Those of ``queues`` that no live worker serves (RQ's set of the queue's workers is empty),
    sorted. Live views poll this, so each queue is asked about at most once every ``max_age``
    seconds per app (:data:`~tasklab.defaults.UNSERVED_CHECK_INTERVAL` unless given), in one
    pipelined round trip for the queues due, and the answer is remembered in between; ``max_age=0``
    asks now (a submit, which has just started workers for its queue)."""
    now = time.monotonic()
    max_age = defaults.UNSERVED_CHECK_INTERVAL if max_age is None else max_age
    names = sorted(set(queues))
    with _served_lock:
        known = _served.setdefault(app, {})
        due = [q for q in names if q not in known or now - known[q][0] >= max_age]
    if due:
        with app.connection.pipeline(transaction=False) as pipe:
            for queue in due:
                pipe.scard(workers_of_queue_key(queue))
            counts = pipe.execute()
        with _served_lock:
            known.update({queue: (now, n > 0) for queue, n in zip(due, counts, strict=True)})
    return [q for q in names if not known[q][1]]


def unserved_hint(queue: str) -> str:
    """What to do about a queue no worker serves, in one line."""
    return (
        f"no worker serves queue {queue!r}: start one with lab.workers(n, queues=[..., {queue!r}]) "
        f"or `tasklab worker --queues {queue}`"
    )
