"""The state a running task reports about itself (``self.update_state``), throttled.

A task may report in a tight loop, thousands of times a second. Each report is serialised at
once (so a meta that cannot travel fails where it was given), but Redis gets at most one write
per task every :data:`~tasklab.defaults.STATE_REPORT_INTERVAL` seconds: one thread per worker
process writes the latest report of each task when its interval comes, so the last report is
never lost while the task runs, and the task itself never waits for Redis. When the attempt
ends, a report not written yet is dropped: from then on the task's state is its outcome.

A report is one small key per job (:func:`~tasklab.engine.keys.report_key`), beside RQ's job
hash rather than in its meta, which the worker writes with the job's outcome: the two writers
never race. It holds the attempt it came from, so a later attempt does not show an earlier
one's progress.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from .. import defaults
from ..code.serialization import dumps, loads
from ..core.signing import RESULT
from ..errors import SerializationError, StateReportError
from . import keys

log = logging.getLogger("tasklab.runtime")


@dataclass(frozen=True)
class StateReport:
    """What a task last reported: its state, its meta, the attempt (``None``: reported for another
    task, attempt unknown) and when (epoch seconds)."""

    state: str
    meta: Any
    attempt: int | None
    at: float


def encode(state: str, meta: Any, attempt: int | None) -> bytes:
    """A report as stored (the state is checked by ``Task.update_state``); :class:`StateReportError`
    for a meta that cannot be serialised."""
    try:
        return dumps((state, meta, attempt, time.time()), RESULT)
    except Exception as exc:
        kind = f"{type(meta).__module__}.{type(meta).__qualname__}"
        raise StateReportError(
            f"update_state(meta=...): the meta (a {kind}) cannot be serialised ({exc}); report plain data, "
            "such as {'current': i, 'total': n}."
        ) from (exc if not isinstance(exc, SerializationError) else None)


def decode(blob: bytes | None, job_id: str) -> StateReport | None:
    """The report stored as ``blob`` (``None`` if there is none, or it cannot be read)."""
    if not blob:
        return None
    try:
        state, meta, attempt, at = loads(blob, f"the state reported by task {job_id}")
    except Exception:  # not ours, or signed with another key: as if there were none
        log.debug("unreadable state report of job %s", job_id, exc_info=True)
        return None
    return StateReport(state, meta, attempt, at)


class Reporter:
    """Writes the reports of the tasks running in this process, each at most once per ``interval``."""

    def __init__(self, interval: float = defaults.STATE_REPORT_INTERVAL) -> None:
        self.interval = interval
        self._lock = threading.Condition()
        self._pending: dict[str, tuple[redis.Redis, bytes]] = {}
        self._written: dict[str, float] = {}  # job id -> monotonic time of its last write
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def report(self, connection: redis.Redis, job_id: str, blob: bytes) -> None:
        """Have ``blob`` (from :func:`encode`) written as ``job_id``'s report: now if its last write
        was an interval ago or more, else when the interval is over (replacing an unwritten one)."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the writer thread stayed in the parent
                self._pending, self._written, self._thread, self._pid = {}, {}, None, os.getpid()
            self._pending[job_id] = (connection, blob)
            if self._thread is None:
                self._thread = threading.Thread(target=self._write_loop, name="tasklab-state-reports", daemon=True)
                self._thread.start()
            self._lock.notify()

    def discard(self, job_id: str) -> None:
        """Forget ``job_id``: its attempt ended, and a report not written yet never will be."""
        with self._lock:
            self._pending.pop(job_id, None)
            self._written.pop(job_id, None)

    def pending(self) -> int:
        """How many reports wait for their interval to end."""
        with self._lock:
            return len(self._pending)

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                due, wait = self._due(time.monotonic())
                if not due:
                    self._lock.wait(wait)
                    continue
            for job_id, (connection, blob) in due.items():
                try:
                    connection.set(keys.report_key(job_id), blob, ex=defaults.STATE_REPORT_TTL)
                except redis.RedisError as exc:  # the next report tries again; the task is not disturbed
                    log.debug("state report of job %s not written: %s", job_id, exc)
                except Exception:  # the writer goes on: a report is never worth a task's progress
                    log.exception("state report of job %s not written", job_id)

    def _due(self, now: float) -> tuple[dict[str, tuple[redis.Redis, bytes]], float | None]:
        """The reports to write now (marked written), and how long to wait for the next one to be due."""
        due, wait = {}, None
        for job_id in list(self._pending):
            ready_at = self._written.get(job_id, -self.interval) + self.interval
            if ready_at <= now:
                due[job_id] = self._pending.pop(job_id)
                self._written[job_id] = now
            else:
                wait = ready_at - now if wait is None else min(wait, ready_at - now)
        for job_id, written in list(self._written.items()):  # forget tasks idle for an interval
            if job_id not in self._pending and job_id not in due and now - written > self.interval:
                del self._written[job_id]
        return due, wait


#: The reporter of this process (one writer thread, started on the first report).
reporter = Reporter()


def reporter_for(connection: redis.Redis, job_id: str, attempt: int) -> Callable[[str | None, str, Any], None]:
    """``self.request``'s way to report a state for the attempt ``attempt`` of ``job_id``: a call
    ``(task_id, state, meta)``, where ``task_id`` ``None`` (or the job's own) means this attempt."""

    def report(task_id: str | None, state: str, meta: Any) -> None:
        own = task_id is None or task_id == job_id
        reporter.report(connection, job_id if own else str(task_id), encode(state, meta, attempt if own else None))

    return report
