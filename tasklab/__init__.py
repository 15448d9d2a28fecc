"""tasklab: background tasks from Jupyter notebooks, on RQ and Redis, with Celery's task model.

In a notebook, ``%load_ext tasklab``; in a script, ``lab = tasklab.connect()``.
"""

from __future__ import annotations

from .errors import (
    ConfigurationError,
    DataDirError,
    RedisBinaryNotFound,
    RedisUnreachable,
    ServerError,
    SocketPathTooLong,
    TaskLabError,
    TaskLabWarning,
    WorkerError,
)
from .lab import Lab, connect, current_lab

__version__ = "0.1.0"

__all__ = [
    # The lab: one Redis and the local workers
    "Lab",
    "connect",
    "current_lab",
    # Errors
    "ConfigurationError",
    "DataDirError",
    "RedisBinaryNotFound",
    "RedisUnreachable",
    "ServerError",
    "SocketPathTooLong",
    "TaskLabError",
    "TaskLabWarning",
    "WorkerError",
]
