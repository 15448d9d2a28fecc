"""``self.request``: what a running task knows about its job, kept per thread of a worker."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Request:
    """What a running task knows about its job (``self.request`` in a bound task)."""

    id: str | None = None
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    retries: int = 0
    worker: str | None = None
    queue: str | None = None
    version: str | None = None
    called_directly: bool = True


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
