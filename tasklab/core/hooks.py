"""Calling a task's lifecycle hooks, as a worker and an eager run (``task.apply()``) both do."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any


@dataclass
class ExceptionInfo:
    """Celery's ``einfo``: the exception, its type and the formatted traceback."""

    exception: BaseException
    type: type[BaseException]
    traceback: str

    def __str__(self) -> str:
        return self.traceback


def call_hook(task: Any, hook: str, task_id: str, *args: Any) -> None:
    """Run a lifecycle hook of ``task`` (a :class:`tasklab.Task`); its exception is logged with the
    task id and changes no outcome."""
    try:
        getattr(task, hook)(*args)
    except Exception:
        logging.getLogger(f"tasklab.task.{task.name}").exception(
            "%s hook of task %s (job %s) raised; the task's own outcome stands", hook, task.name, task_id
        )
