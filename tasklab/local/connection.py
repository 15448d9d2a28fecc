"""Redis clients, made one way: short connect timeout, few retries, clear errors."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from .. import defaults
from ..errors import AuthenticationFailed, ConfigurationError, RedisUnreachable

_SCHEMES = ("redis", "rediss", "unix")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def make_client(url: str, *, name: str | None = None, retries: int = 2) -> redis.Redis:
    """A client for ``url`` that fails fast when the server is gone.

    Reads have no timeout (blocking reads wait for results); connecting gives up after
    :data:`defaults.CONNECT_TIMEOUT` seconds. ``retries=0`` suits commands after which the
    server is expected to close the connection, such as SHUTDOWN.
    """
    if urlsplit(url).scheme not in _SCHEMES:
        raise ConfigurationError(
            f"{redact(url)!r} is not a Redis URL. Use redis://host:port/db, rediss://… for TLS, "
            "or unix:///path/to/socket."
        )
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries) if retries else Retry(NoBackoff(), 0)
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=defaults.CONNECT_TIMEOUT,
        socket_timeout=None,
        retry=retry,
        client_name=name,
    )


def connect(url: str, *, name: str | None = None) -> redis.Redis:
    """A client for ``url`` that has answered PING; else :class:`RedisUnreachable`, or its subclass
    :class:`AuthenticationFailed` when the server refused the credentials."""
    client = make_client(url, name=name)
    try:
        client.ping()
    except (redis.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError) as exc:
        # Before ConnectionError: redis-py's AuthenticationError is one.
        client.close()
        raise AuthenticationFailed(
            f"Redis at {redact(url)} refused the credentials ({exc}). Check the password (and user name) in the "
            "URL: redis://:PASSWORD@host:port/db or redis://USER:PASSWORD@host:port/db."
        ) from exc
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        client.close()
        raise RedisUnreachable(
            f"Cannot reach Redis at {redact(url)} ({exc}). Check that the server is running and the "
            "URL is right, or call tasklab.connect() with no URL to use the embedded server."
        ) from exc
    return client
