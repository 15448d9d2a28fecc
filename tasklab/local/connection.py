"""Redis clients, made one way: short connect timeout, few retries, clear errors."""

from __future__ import annotations

import math
import re
import socket
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from .. import defaults
from ..errors import AuthenticationFailed, ConfigurationError, RedisUnreachable

_SCHEMES = ("redis", "rediss", "unix")
#: TCP keepalive: first probe after KEEPALIVE_AFTER idle seconds, then one a second, three at most;
#: and a user timeout for data that is never acknowledged.
_KEEPALIVE = {
    option: value
    for option, value in (
        (getattr(socket, "TCP_KEEPIDLE", None), defaults.KEEPALIVE_AFTER),
        (getattr(socket, "TCP_KEEPINTVL", None), 1),
        (getattr(socket, "TCP_KEEPCNT", None), 3),
        # Data sent but unacknowledged this long (ms) closes the connection: keepalive does not
        # probe while a command waits for its acknowledgement on a cut link.
        (getattr(socket, "TCP_USER_TIMEOUT", None), defaults.KEEPALIVE_AFTER * 2000),
    )
    if option is not None
}


def redact(url: str) -> str:
    """``url`` with any password (``user:password@``, ``?password=``) replaced by ``***``, for
    messages, reprs and logs."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not even a URL: show its scheme only
        return url.split("://", 1)[0] + "://***" if "://" in url else "***"
    netloc = parts.netloc
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = "&".join(
        f"{key}=***" if key.lower() == "password" else pair
        for pair in parts.query.split("&")
        if pair
        for key in [pair.split("=", 1)[0]]
    )
    if netloc == parts.netloc and query == parts.query:
        return url
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


#: How a Redis URL is written, for messages about one that is not.
_URL_FORM = (
    "Write it as redis://[[user]:password@]host[:port][/db], with a port from 1 to 65535 and a whole-number db "
    "(rediss://… for TLS), or unix:///path/to/socket[?db=N]."
)
#: Query arguments redis-py reads as numbers, and the least each may be: a socket takes no timeout
#: of 0 or below, nor one that is not finite.
_POSITIVE = {"socket_timeout": 0.0, "socket_connect_timeout": 0.0, "timeout": 0.0, "health_check_interval": -1.0,
             "socket_read_size": 0.0, "max_connections": 0.0}  # fmt: skip


def check_url(url: str) -> None:
    """A :class:`ConfigurationError` (with the URL redacted) unless ``url`` is a Redis URL redis-py can use.

    Everything that can be told without the server is checked here, before anything starts: the
    scheme, port, host name, db and the query's options (redis-py would raise ``ValueError`` or
    ``TypeError`` for them at the first command, or quietly use db 0 for a path that is no number).
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"url= is a {type(url).__name__}, not a string such as 'redis://host:6379/0'.")

    def invalid(reason: str) -> ConfigurationError:
        return ConfigurationError(f"{redact(url)!r} is not a valid Redis URL: {reason.rstrip('.')}. {_URL_FORM}")

    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid("it holds a lone surrogate character (such as '\\ud800'), which no URL can hold") from None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number, or out of range
    except ValueError as exc:
        raise invalid(str(exc)) from None
    scheme = parts.scheme if "://" in url else ""
    if scheme not in _SCHEMES:
        raise ConfigurationError(
            f"{redact(url)!r} is not a Redis URL. Use redis://host:port/db, rediss://… for TLS, "
            "or unix:///path/to/socket."
        )
    try:
        options = redis.connection.parse_url(url)
        # Made, not connected: an unknown option or a bad TLS flag is refused now.
        redis.ConnectionPool.from_url(url).make_connection()
    except TypeError as exc:  # an option no connection takes
        unknown = re.search(r"keyword argument '(\w+)'", str(exc))
        raise invalid(f"redis-py has no option {unknown.group(1) if unknown else exc!r}") from None
    except (ValueError, redis.RedisError) as exc:
        raise invalid(str(exc)) from None
    if scheme != "unix":
        if parts.hostname:
            try:
                parts.hostname.encode("idna")
            except UnicodeError:
                raise invalid(f"{parts.hostname!r} is not a host name") from None
        db_path = unquote(parts.path).strip("/")
        if db_path and not (db_path.isascii() and db_path.isdigit()):
            raise invalid(f"its path {parts.path!r} is not a database number")
    db = options.get("db", 0)
    if db < 0:
        raise invalid(f"db {db} is below 0")
    for option, least in _POSITIVE.items():
        value = options.get(option)
        if value is not None and not (math.isfinite(value) and value > least):
            raise invalid(f"{option}={value!r} is not a number above {least:g}")


def make_client(
    url: str,
    *,
    name: str | None = None,
    retries: int = 2,
    socket_timeout: float | None = None,
    on_connect: Callable[[], None] | None = None,
) -> redis.Redis:
    """A client for ``url`` that fails fast when the server is gone.

    Connecting gives up after :data:`defaults.CONNECT_TIMEOUT` seconds. Reads wait
    ``socket_timeout`` seconds at most (none by default: blocking reads wait for results); over
    TCP, keepalive probes find a dead peer within :data:`defaults.KEEPALIVE_AFTER` seconds plus a
    few more, and a connection idle for :data:`defaults.HEALTH_CHECK_INTERVAL` is checked before
    use. ``retries=0`` suits commands after which the server closes the connection (SHUTDOWN).
    ``on_connect()`` is called after each new connection is made (the first, and each one made again
    after the server was lost: it may have restarted, and lost data).
    """
    check_url(url)
    scheme = urlsplit(url).scheme
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries) if retries else Retry(NoBackoff(), 0)
    options: dict[str, object] = {}
    if scheme != "unix":
        options.update(socket_keepalive=True, socket_keepalive_options=_KEEPALIVE)
    if on_connect is not None:
        options["redis_connect_func"] = _notifying(on_connect)
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=defaults.CONNECT_TIMEOUT,
        socket_timeout=socket_timeout,
        health_check_interval=defaults.HEALTH_CHECK_INTERVAL,
        retry=retry,
        client_name=name,
        **options,
    )


def _notifying(callback: Callable[[], None]) -> Callable[[redis.connection.AbstractConnection], None]:
    def connected(connection: redis.connection.AbstractConnection) -> None:
        connection.on_connect()  # what redis-py does when no function is given
        callback()

    return connected


def connect(url: str, *, name: str | None = None, on_connect: Callable[[], None] | None = None) -> redis.Redis:
    """A client for ``url`` that has answered PING; else :class:`RedisUnreachable`, or its subclass
    :class:`AuthenticationFailed` when the server refused the credentials, or :class:`ConfigurationError`
    when it has no database of the URL's number. See :func:`make_client` for ``on_connect``."""
    client = make_client(url, name=name, on_connect=on_connect)
    # Asked with a deadline: a server that accepts but never answers fails within CONNECT_TIMEOUT.
    probe = make_client(url, retries=0, socket_timeout=defaults.CONNECT_TIMEOUT)
    shown = redact(url)
    try:
        probe.ping()
        client.ping()  # its connection opens now, named (a server lease is a named connection)
    except (redis.AuthenticationError, redis.exceptions.AuthenticationWrongNumberOfArgsError) as exc:
        # Before ConnectionError: redis-py's AuthenticationError is one.
        client.close()
        raise AuthenticationFailed(
            f"Redis at {shown} refused the credentials ({exc}). Check the password (and user name) in the "
            "URL: redis://:PASSWORD@host:port/db or redis://USER:PASSWORD@host:port/db."
        ) from exc
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        client.close()
        raise RedisUnreachable(
            f"Cannot reach Redis at {shown} ({exc}). Check that the server is running and the "
            "URL is right, or call tasklab.connect() with no URL to use the embedded server."
        ) from exc
    except redis.ResponseError as exc:  # connecting selects the URL's db: the server may not have it
        client.close()
        db = redis.connection.parse_url(url).get("db", 0)
        if db and "DB index is out of range" in str(exc):
            raise ConfigurationError(
                f"Redis at {shown} has no database {db} ({exc}). A server has databases 0 to 15 unless its "
                "`databases` setting gives more: use one of those in the URL (redis://host:port/0)."
            ) from None
        raise RedisUnreachable(
            f"Redis at {shown} answered with an error ({exc}). Check that the URL names a Redis server that "
            "lets this client in."
        ) from None
    except redis.RedisError as exc:  # an answer that is not Redis's protocol: another service listens there
        client.close()
        raise RedisUnreachable(
            f"The server at {shown} does not speak Redis's protocol ({exc}): another service (a web server?) "
            "listens there. Check the URL's host and port (Redis listens on 6379 unless set otherwise)."
        ) from None
    finally:
        probe.close()
    return client
