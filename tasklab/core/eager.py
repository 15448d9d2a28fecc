"""Running a task in the calling process (``task.apply()``, Celery's eager mode), and its result.

No Redis, no lab and no worker: the task runs at once on the calling thread, with
``self.request.is_eager`` True and the lifecycle hooks called as a worker calls them. What a
worker adds is left out: time limits, output capture, and waiting between retries (a retry,
from ``self.retry()`` or ``autoretry_for``, runs again at once, up to ``max_retries``, as
Celery's eager retries do). The outcome is kept in an :class:`EagerResult`; nothing is stored.
"""

from __future__ import annotations

import socket
import traceback
import uuid
from typing import Any

from . import states
from .hooks import ExceptionInfo, call_hook
from .request import Request, request_stack
from .retries import decide

#: A :class:`tasklab.Task` (not imported: task.py imports this module).
Task = Any


class EagerResult:
    """The outcome of :meth:`Task.apply`, with the surface of Celery's ``EagerResult``."""

    def __init__(
        self,
        id: str,
        state: str,
        value: Any,
        traceback: str | None = None,
        retries: int = 0,
        request: Request | None = None,
    ):
        self.id = id
        self.state = state
        self._value = value
        self.traceback = traceback
        self.retries = retries
        #: The request the task ran with (an errback taking ``(request, exc, traceback)`` gets it).
        self.request = request
        #: The results of the callbacks applied after it succeeded (``link``), in an eager lab.
        self.children: list[EagerResult] = []

    @property
    def result(self) -> Any:
        """The return value, or the exception the task failed with."""
        return self._value

    def get(self, timeout: float | None = None, propagate: bool = True, **_: Any) -> Any:
        """The return value; the task's exception is raised with ``propagate``, else returned.
        ``timeout`` is accepted for Celery's signature: the run is already over."""
        if self.state == states.FAILURE and propagate:
            raise self._value
        return self._value

    def ready(self) -> bool:
        return True

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id} {self.state}>"


class EagerResultSet(list):
    """The :class:`EagerResult` of each call of a ``map`` in an eager lab, with ``ResultSet``'s ``get``."""

    def get(self, timeout: float | None = None, propagate: bool = True, **_: Any) -> list[Any]:
        """Every value, in order; the first failure is raised unless ``propagate=False``."""
        return [result.get(propagate=propagate) for result in self]

    join = get

    def ready(self) -> bool:
        return True

    def successful(self) -> bool:
        return all(result.successful() for result in self)

    def failed(self) -> bool:
        return any(result.failed() for result in self)

    def completed_count(self) -> int:
        return sum(result.successful() for result in self)


def apply_eagerly(task: Task, args: tuple, kwargs: dict, task_id: str | None = None, retries: int = 0) -> EagerResult:
    """Run ``task`` in this process until it succeeds or fails for good (see the module's docstring)."""
    task_id = task_id or str(uuid.uuid4())
    options = type(task).task_options()
    stack = request_stack()
    while True:
        request = eager_request(task, args, kwargs, task_id, retries)
        stack.append(request)
        try:
            call_hook(task, "before_start", task_id, task_id, args, kwargs)
            try:
                retval = task(*args, **kwargs)
            except Exception as exc:
                decision = decide(options, exc, retries)
                reported = decision.exc
                einfo = ExceptionInfo(reported, type(reported), traceback.format_exc())
                if decision.retry:
                    call_hook(task, "on_retry", task_id, reported, task_id, args, kwargs, einfo)
                    retries += 1
                    continue
                call_hook(task, "on_failure", task_id, reported, task_id, args, kwargs, einfo)
                call_hook(task, "after_return", task_id, states.FAILURE, reported, task_id, args, kwargs, einfo)
                return EagerResult(task_id, states.FAILURE, reported, einfo.traceback, retries, request)
            call_hook(task, "on_success", task_id, retval, task_id, args, kwargs)
            call_hook(task, "after_return", task_id, states.SUCCESS, retval, task_id, args, kwargs, None)
            return EagerResult(task_id, states.SUCCESS, retval, None, retries, request)
        finally:
            stack.pop()


def eager_request(task: Task, args: tuple, kwargs: dict, task_id: str, retries: int) -> Request:
    """``self.request`` of a run of ``task`` in this process (``is_eager``; it keeps no state it reports)."""
    options = type(task).task_options()
    return Request(
        id=task_id, args=args, kwargs=kwargs, retries=retries, version=task._tl_version, called_directly=False,
        hostname=socket.gethostname(), delivery_info={"is_eager": True}, root_id=task_id, is_eager=True,
        timelimit=(options.get("time_limit"), options.get("soft_time_limit")), correlation_id=task_id,
    )  # fmt: skip
