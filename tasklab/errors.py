"""Every error tasklab raises on purpose descends from :class:`TaskLabError`.

Messages name the thing, say what is wrong, and say what to do about it.
"""

from __future__ import annotations

import builtins


class TaskLabError(Exception):
    """Root of every error raised by tasklab."""


class TaskLabWarning(UserWarning):
    """Root of every warning issued by tasklab."""


class ConfigurationError(TaskLabError, ValueError):
    """Raised when an option or setting has a bad value."""


class ServerError(TaskLabError):
    """Raised when the embedded Redis server cannot be found, started or reached."""


class RedisBinaryNotFound(ServerError):
    """Raised when no redis-server (or valkey-server) binary is available for the embedded server."""


class DataDirError(ServerError):
    """Raised when the embedded server's data directory cannot be created or written."""


class SocketPathTooLong(ServerError):
    """Raised when the unix socket path would exceed the operating system's limit."""


class RedisUnreachable(TaskLabError, ConnectionError):
    """Raised when the Redis server at a URL does not answer."""


class AuthenticationFailed(RedisUnreachable):
    """Raised when a Redis server refuses the credentials the URL gives (or asks for some it gives none of)."""


class SignatureError(TaskLabError):
    """Raised when data or code read from Redis is unsigned, or signed with another key: it is not
    unpickled or run. See :mod:`tasklab.core.signing`."""


class WorkerError(TaskLabError):
    """Raised when local worker processes cannot be started or managed."""


class CellError(TaskLabError):
    """Raised when a task cell cannot be registered: a name it uses is not defined, an option
    does not fit the cell. Nothing from the cell is registered."""


class NotRegistered(TaskLabError, KeyError):
    """Raised when a job names a task, or a task version, that the registry does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ArgumentsError(TaskLabError, TypeError):
    """Raised at submit when the arguments do not fit the task's parameters; nothing is submitted."""


class SerializationError(TaskLabError, TypeError):
    """Raised at submit when an argument cannot be serialised, naming the argument."""


class TaskError(TaskLabError):
    """Raised by ``result.get()`` for a task exception that cannot be rebuilt in this process.

    ``exc_type`` is the remote exception's qualified type name and ``remote_traceback`` the
    worker's formatted traceback.
    """

    def __init__(self, exc_type: str, message: str, remote_traceback: str | None = None):
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.remote_traceback = remote_traceback


class CanvasError(TaskLabError, TypeError):
    """Raised when a signature, chain, group or chord cannot be submitted as written; nothing of it is submitted."""


class ChordError(TaskLabError):
    """Raised by a workflow's ``get()`` when a group member failed, so the step collecting its results never ran."""


class TimeoutError(TaskLabError, builtins.TimeoutError):
    """Raised by ``result.get(timeout=...)`` when the result is not ready in time."""


class ResultMissing(TaskLabError, LookupError):
    """Raised by ``result.get()`` when the task's job is not in this Redis: an unknown id, a result
    that expired or was forgotten, or a task that keeps no result (``ignore_result``)."""


class IncompleteStream(TaskLabError):
    """Raised by ``result.iterdeps()`` (and so ``collect()``) when a result in the tree is not ready yet."""


class InsideTaskError(TaskLabError, RuntimeError):
    """Raised when a task waits for another task's result, which can deadlock the workers."""


class TaskRevokedError(TaskLabError):
    """Raised by ``result.get()`` for a task that was revoked before or while it ran."""


class Retry(TaskLabError):
    """Raised by ``self.retry()`` inside a bound task to ask for another attempt (Celery's ``Retry``).

    ``exc`` is the exception that caused it, ``when`` the countdown in seconds, if given.
    """

    def __init__(self, message: str = "", exc: BaseException | None = None, when: float | None = None,
                 max_retries: int | None = None):  # fmt: skip
        super().__init__(message or (f"Retry in {when} s: {exc!r}" if when is not None else f"Retry: {exc!r}"))
        self.exc = exc
        self.when = when
        self.max_retries = max_retries


class MaxRetriesExceededError(TaskLabError):
    """Raised when ``self.retry()`` is called after the task's retries ran out and no ``exc`` was given."""


class SoftTimeLimitExceeded(TaskLabError):
    """Raised inside a task when its ``soft_time_limit`` passes, so that it can clean up."""


class TimeLimitExceeded(TaskLabError):
    """The failure of a task stopped by its hard ``time_limit``."""


class WorkerLostError(TaskLabError):
    """The failure of a task whose worker process died while running it."""


class StateReportError(TaskLabError, ValueError):
    """Raised by ``self.update_state()`` called outside a running task, or with a state or meta it cannot report."""


class DebugError(TaskLabError):
    """Raised by ``result.debug()`` when there is no failed attempt to re-run in the kernel, or re-running it could
    harm the kernel (its worker process died running it)."""
