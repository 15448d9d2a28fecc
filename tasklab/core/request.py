"""``self.request``: what a running task knows about its job, kept per thread of a worker."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    """What a running task knows about its job (``self.request`` in a bound task).

    The fields after ``called_directly`` have Celery's names and meanings; one tasklab cannot
    know is ``None``: ``eta`` (the due time is not kept once a job is queued), ``origin`` (the
    sender is not recorded), ``chord`` (a header member does not know its callback). ``expires``
    is an ISO 8601 date, and ``callbacks``/``errbacks`` name the task's ``link``/``link_error``
    (``{"task": name, "id": job id}``; an errback called in the worker has no job id: ``None``).
    """

    id: str | None = None
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    retries: int = 0
    worker: str | None = None
    queue: str | None = None
    version: str | None = None
    called_directly: bool = True
    #: Celery's node name of the worker, ``<worker name>@<host>``.
    hostname: str | None = None
    #: Where the job came from: ``{"exchange": "", "routing_key": <queue>, "queue": <queue>, ...}``.
    delivery_info: dict | None = None
    #: The id of the group the task is a member of (a workflow's group or chord header).
    group: str | None = None
    #: The id of the workflow the task is a step of, or the task's own id when it was sent alone.
    root_id: str | None = None
    #: The id of the step whose result the task receives (for a chord's callback: the last member's).
    parent_id: str | None = None
    eta: str | None = None
    expires: str | None = None
    #: True when run by :meth:`Task.apply` in the calling process, False on a worker.
    is_eager: bool = False
    #: The job's time limits in seconds, ``(hard, soft)``, each None when not set.
    timelimit: tuple[float | None, float | None] | None = None
    #: As Celery: the task's id.
    correlation_id: str | None = None
    origin: str | None = None
    chord: Any = None
    callbacks: list | None = None
    errbacks: list | None = None
    #: How ``self.update_state`` reports on a worker: a call ``(task_id, state, meta)`` the worker
    #: sets up (throttled, see :mod:`tasklab.engine.reports`); ``None`` in an eager run, which keeps
    #: no state.
    report_state: Callable[[str | None, str, Any], None] | None = field(default=None, repr=False, compare=False)


_local = threading.local()


def request_stack() -> list[Request]:
    """The requests of the tasks running on this thread, innermost last (the worker pushes and pops)."""
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def current_request() -> Request | None:
    """The request of the task running on this thread of a worker, if any."""
    stack = request_stack()
    return stack[-1] if stack else None
