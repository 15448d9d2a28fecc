"""What a task needs from the side it runs on: the :class:`App` protocol.

A lab is the app in the kernel; a worker process has an app of its own, with the worker's
connection. Tasks and results are bound to their app when they are registered or made. Only
tasks and results made without one (a ``Task`` subclass used directly, ``AsyncResult(id)``)
use the *default app*, which :mod:`tasklab.lab` installs as "the current lab".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import redis

from ..errors import ConfigurationError

T = TypeVar("T")


class App(Protocol):
    """A lab, or a worker's app: where tasks are submitted and results read.

    ``task`` arguments are :class:`~tasklab.core.task.Task` objects (typed ``Any`` here because
    that module imports this one).
    """

    @property
    def namespace(self) -> str:
        """The namespace of task names jobs are submitted under."""
        ...

    @property
    def options(self) -> dict[str, Any]:
        """App-wide task option defaults (between a task's own options and the defaults)."""
        ...

    @property
    def connection(self) -> redis.Redis:
        """The Redis client results and jobs are read with."""
        ...

    def queue(self, name: str) -> Any:
        """The RQ queue called ``name``."""
        ...

    def submit(self, task: Any, calls: list[tuple[tuple, dict]], call_options: dict[str, Any]) -> Sequence[Any]:
        """Submit ``calls`` (``(args, kwargs)`` pairs) of ``task``; their results, in order."""
        ...

    def submit_workflow(self, node: Any, args: tuple, kwargs: dict, options: dict[str, Any]) -> Any:
        """Submit a chain, group or chord whole; the result of its last step(s)."""
        ...

    def publish(self, cell: Any) -> None:
        """Store a cell version (a ``CellVersion``) where workers load it from, if connected now."""
        ...

    def ensure_code(self, task: Any) -> None:
        """Make sure the code of ``task`` is stored where workers load it from."""
        ...

    def ensure_workers(self, queue: str | None = None) -> None:
        """Start workers if this app starts its own and none run yet; make sure ``queue`` is served
        (or warn that no worker serves it)."""
        ...

    def reaching_redis(self, action: Callable[[], T], what: str) -> T:
        """``action()``; when Redis does not answer, once more if the app could bring it back, else
        :class:`~tasklab.errors.RedisUnreachable` (never redis-py's own error), whose message ends
        with ``what`` (what became of the user's action, and what to do)."""
        ...


_default: App | None = None


def set_default_app(app: App | None) -> None:
    """Install the app of tasks and results made without one (done once, by :mod:`tasklab.lab`)."""
    global _default
    _default = app


def default_app() -> App:
    """The app of tasks and results made without one."""
    if _default is None:
        raise ConfigurationError("No tasklab app is installed; import tasklab, or bind the task to a lab.")
    return _default
