"""Waiting for results: one ``XREAD`` loop over the jobs' result streams, for every kind of result.

RQ appends each attempt's outcome to the job's result stream (``rq:results:<id>``). A wait reads
every pending stream without blocking (:data:`~tasklab.defaults.XREAD_STREAMS` at a time), then
blocks on the newest pending job's stream, since jobs finish roughly in the order they were
submitted, for at most :data:`~tasklab.defaults.WAIT_SLICE` seconds. After a blocking read in
which nothing arrived, the caller's ``check`` looks for jobs that will never get a result
(revoked, cancelled, lost): a few round trips for a whole batch, none while results flow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import redis
from rq.results import Result
from rq.utils import as_text

from .. import defaults
from ..code.serialization import Serializer
from ..core.request import current_request
from ..errors import InsideTaskError

#: Result types after which a job has no more attempts.
FINAL = frozenset({Result.Type.SUCCESSFUL, Result.Type.FAILED, Result.Type.STOPPED, Result.Type.MAX_RETRIES_EXCEEDED})


def refuse_inside_task(
    instead: str = "Chain the tasks instead (task.s() | other.s()), or return the result's id.",
) -> None:
    """Raise :class:`InsideTaskError` when called from a running task: waiting there can deadlock."""
    if current_request() is not None:
        raise InsideTaskError(
            "Never call result.get() within a task: the worker waits for a job that may need this very "
            f"worker, and the pool can deadlock. {instead}"
        )


class ResultStreams:
    """The final results of ``job_ids`` as they arrive, with any ``notices`` stream read beside them."""

    def __init__(self, connection: redis.Redis, job_ids: Iterable[str], notices: str | None = None) -> None:
        self.connection = connection
        self.pending: dict[str, str] = {job_id: "0-0" for job_id in job_ids}  # job id -> cursor, in order
        self.finals: dict[str, Result] = {}
        self._notices = notices
        self._notice_cursor = "0-0"

    def drop(self, job_id: str) -> None:
        """Stop waiting for ``job_id`` (it will never have a result)."""
        self.pending.pop(job_id, None)

    def wait(
        self,
        timeout: float | None,
        *,
        done: Callable[[], bool] | None = None,
        check: Callable[[], None] | None = None,
        check_first: bool = False,
        on_final: Callable[[str, Result], None] | None = None,
        on_notice: Callable[[dict[bytes, bytes]], None] | None = None,
        recheck: Callable[[], bool] | None = None,
    ) -> None:
        """Read until nothing is pending, ``done()`` says so, or ``timeout`` passes.

        ``check()`` runs after a blocking read that brought nothing (and first, with
        ``check_first``, or after one for which ``recheck()`` is true); ``on_final`` sees each
        final result, ``on_notice`` each entry of the notices stream.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        quiet = check_first
        finished = done or (lambda: not self.pending)
        while True:
            if len(self.pending) > 1 or self._notices is not None:
                # One job alone is read by the blocking read below, which returns at once if it is done.
                self._read_all(on_final, on_notice)
            if quiet and check is not None and not finished():
                check()
            if finished():
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            block = defaults.WAIT_SLICE if remaining is None else max(0.001, min(remaining, defaults.WAIT_SLICE))
            newest = next(reversed(self.pending))
            streams = {Result.get_key(newest): self.pending[newest]}
            if self._notices is not None:
                streams[self._notices] = self._notice_cursor
            arrived = self._take(self.connection.xread(streams, block=max(1, int(block * 1000))), on_final, on_notice)
            quiet = not arrived or (recheck is not None and recheck())

    def _read_all(self, on_final: Any, on_notice: Any) -> None:
        pending = list(self.pending)
        for first in range(0, len(pending), defaults.XREAD_STREAMS):
            batch = pending[first : first + defaults.XREAD_STREAMS]
            self._take(self.connection.xread({Result.get_key(i): self.pending[i] for i in batch}), on_final, on_notice)
        if self._notices is not None:
            self._take(self.connection.xread({self._notices: self._notice_cursor}), on_final, on_notice)

    def _take(self, response: Any, on_final: Any, on_notice: Any) -> bool:
        prefix = len(Result.get_key(""))
        for stream, entries in response or ():
            name = as_text(stream)
            if name == self._notices:
                self._notice_cursor = as_text(entries[-1][0])
                for _, fields in entries:
                    if on_notice is not None:
                        on_notice(fields)
                continue
            job_id = name[prefix:]
            if job_id not in self.pending:
                continue
            final = None
            for entry_id, payload in entries:  # the newest final outcome counts (a task_id may be reused)
                result = Result.restore(job_id, as_text(entry_id), payload, self.connection, Serializer)
                if result.type in FINAL:
                    final = result
            self.pending[job_id] = as_text(entries[-1][0])
            if final is not None:
                self.finals[job_id] = final
                del self.pending[job_id]
                if on_final is not None:
                    on_final(job_id, final)
        return bool(response)
