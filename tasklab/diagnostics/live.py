"""Where the unfinished tasks stand, kept up to date by reading only the events that are new.

A monitor counts tasks, not attempts: a finished task by its final state (read from the running
totals of :mod:`tasklab.engine.events`, whatever the length of the history), an unfinished one by
its current state, PENDING (queued, or due later), STARTED, or RETRY (its last attempt failed and
it waits for the next). Those current states are kept here, per task id, from the event stream:
once found (see :meth:`LiveTasks.update`), then from the events written since.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from ..engine import events

#: The state an event leaves its task in, if the task is not finished by it.
_LIVE = {events.SUBMITTED: "PENDING", events.STARTED: "STARTED", events.RETRY: "RETRY"}
#: Events after which a task is finished (a LOST event with ``next`` is a requeue: a retry).
_FINAL = {events.SUCCEEDED, events.FAILED, events.REVOKED, events.LOST}
#: Events read per round trip.
CHUNK = 2000


@dataclass
class LiveTask:
    """An unfinished task: its name, current state, and for a started one where and since when."""

    name: str
    state: str
    attempt: int = 0
    worker: str | None = None
    started: float | None = None  # epoch seconds


class LiveTasks:
    """The unfinished tasks of one namespace, by id (see the module's doc)."""

    def __init__(self, connection: redis.Redis, namespace: str, *, scan_limit: int = 100_000):
        self.connection = connection
        self.namespace = namespace
        self.scan_limit = scan_limit
        self.tasks: dict[str, LiveTask] = {}
        self._last: str | None = None  # the newest stream entry applied

    def update(self, unfinished: int) -> None:
        """Apply the events written since the last update. The first update reads the stream
        backwards until it has found ``unfinished`` tasks that have not finished (the running
        totals' count), or read ``scan_limit`` events: one read, as long as what runs now."""
        if self._last is None:
            self._find(unfinished)
            return
        while True:
            chunk = self.connection.xrange(events.STREAM, "(" + self._last, "+", count=CHUNK)
            for event in events.decode_all(chunk):
                self._apply(event)
            if chunk:
                self._last = chunk[-1][0].decode()
            if len(chunk) < CHUNK:
                return

    def _find(self, unfinished: int) -> None:
        seen: set[str] = set()
        end, read = "+", 0
        self._last = "0-0"
        while len(self.tasks) < unfinished and read < self.scan_limit:
            chunk = self.connection.xrevrange(events.STREAM, end, "-", count=CHUNK)
            if not chunk:
                break
            if read == 0:
                self._last = chunk[0][0].decode()
            read += len(chunk)
            for event in events.decode_all(chunk):  # newest first: a task's first event seen is its latest
                if event["ns"] != self.namespace or event["id"] in seen or event["e"] == events.DUPLICATE:
                    continue
                seen.add(event["id"])
                self._apply(event)
            end = "(" + chunk[-1][0].decode()
        if read == 0:
            newest = self.connection.xrevrange(events.STREAM, "+", "-", count=1)
            self._last = newest[0][0].decode() if newest else "0-0"

    def _apply(self, event: dict[str, Any]) -> None:
        if event["ns"] != self.namespace:
            return
        kind, task_id = event["e"], event["id"]
        if kind in _FINAL and not (kind == events.LOST and event.get("next")):
            self.tasks.pop(task_id, None)
            return
        state = "RETRY" if kind == events.LOST else _LIVE.get(kind)
        if state is None:  # a DUPLICATE: the task's outcome stands
            return
        task = self.tasks.get(task_id)
        if task is None:
            task = self.tasks[task_id] = LiveTask(event["t"], state)
        task.state = state
        if kind == events.STARTED:
            task.attempt, task.worker, task.started = int(event.get("n", 0)), event.get("w"), float(event["ts"])

    def count(self) -> dict[str, dict[str, int]]:
        """Unfinished tasks by name, then by state."""
        counts: dict[str, dict[str, int]] = {}
        for task in self.tasks.values():
            by_state = counts.setdefault(task.name, {})
            by_state[task.state] = by_state.get(task.state, 0) + 1
        return counts

    def running(self) -> list[tuple[str, LiveTask]]:
        """The started tasks, longest running first."""
        started = [(task_id, task) for task_id, task in self.tasks.items() if task.state == "STARTED"]
        return sorted(started, key=lambda item: item[1].started or 0)
