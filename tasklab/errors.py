"""Every error tasklab raises on purpose descends from :class:`TaskLabError`.

Messages name the thing, say what is wrong, and say what to do about it.
"""

from __future__ import annotations


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


class WorkerError(TaskLabError):
    """Raised when local worker processes cannot be started or managed."""
