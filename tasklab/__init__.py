"""tasklab: background tasks from Jupyter notebooks, on RQ and Redis, with Celery's task model.

In a notebook, ``%load_ext tasklab``; in a script, ``lab = tasklab.connect()``.
"""

from __future__ import annotations

from typing import Any

from .client.result import AsyncResult, ResultSet
from .client.workflow import GroupResult
from .code.define import task
from .core.eager import EagerResult
from .core.request import Request
from .core.retries import retry_schedule
from .core.signatures import Signature, chain, chord, chunks, group, xmap, xstarmap
from .core.signatures import signature as _signature
from .core.task import Task, get_task_logger
from .errors import (
    ArgumentsError,
    AuthenticationFailed,
    CanvasError,
    CellError,
    ChordError,
    ConfigurationError,
    DataDirError,
    DebugError,
    IncompleteStream,
    InsideTaskError,
    MaxRetriesExceededError,
    NotRegistered,
    RedisBinaryNotFound,
    RedisUnreachable,
    ResultMissing,
    Retry,
    SerializationError,
    ServerError,
    SignatureError,
    SocketPathTooLong,
    SoftTimeLimitExceeded,
    StateReportError,
    TaskError,
    TaskLabError,
    TaskLabWarning,
    TaskRevokedError,
    TimeLimitExceeded,
    TimeoutError,
    WorkerError,
    WorkerLostError,
)
from .lab import Lab, connect, current_lab, register_cell

__version__ = "0.1.0"

__all__ = [
    # The lab: one Redis and the local workers
    "Lab",
    "connect",
    "current_lab",
    # Defining tasks
    "Task",
    "task",
    "register_cell",
    "Request",
    "get_task_logger",
    "retry_schedule",
    # Workflows (Celery's canvas)
    "signature",
    "Signature",
    "chain",
    "group",
    "chord",
    "chunks",
    "xmap",
    "xstarmap",
    # Results and what happened
    "AsyncResult",
    "ResultSet",
    "GroupResult",
    "EagerResult",
    "history",
    "stats",
    "monitor",
    # Errors
    "TaskLabError",
    "ArgumentsError",
    "AuthenticationFailed",
    "SignatureError",
    "CanvasError",
    "CellError",
    "ChordError",
    "ConfigurationError",
    "DataDirError",
    "DebugError",
    "IncompleteStream",
    "InsideTaskError",
    "NotRegistered",
    "RedisBinaryNotFound",
    "RedisUnreachable",
    "ResultMissing",
    "SerializationError",
    "ServerError",
    "SocketPathTooLong",
    "StateReportError",
    "TaskError",
    "TaskRevokedError",
    "TimeoutError",
    "WorkerError",
    # Failures and retries (Celery's names)
    "Retry",
    "MaxRetriesExceededError",
    "SoftTimeLimitExceeded",
    "TimeLimitExceeded",
    "WorkerLostError",
    "TaskLabWarning",
]


def signature(task: Any, args: Any = (), kwargs: dict[str, Any] | None = None, **options: Any) -> Signature:
    """``tasklab.signature(add, args=(2,), queue="io")``, or by name: ``tasklab.signature("tasks.add", ...)``,
    found among the current lab's tasks (see :meth:`Lab.signature`)."""
    if isinstance(task, str):
        return current_lab().signature(task, args, kwargs, **options)
    return _signature(task, args, kwargs, **options)


def history(**filters: Any) -> Any:
    """One row per task attempt of the current lab's Redis, as a DataFrame (``since=``, ``until=``, ``name=``)."""
    return current_lab().history(**filters)


def stats(**filters: Any) -> Any:
    """One row per task name: counts by state, retries, run-time mean/p50/p95, throughput."""
    return current_lab().stats(**filters)


def monitor(**options: Any) -> Any:
    """Show the live monitor of the current lab (see :meth:`Lab.monitor`)."""
    return current_lab().monitor(**options)


# The extension loads IPython's magics machinery and ipywidgets: only when a notebook asks for it.


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext tasklab``: register ``%%task`` and ``%tasklab``; nothing starts until used."""
    from .notebook.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext tasklab``: remove the magics and stop what tasklab started."""
    from .notebook.extension import unload_ipython_extension as unload

    unload(ipython)
