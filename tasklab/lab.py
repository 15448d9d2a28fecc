"""The lab: one Redis, the local workers, and everything tasklab started for this process.

``tasklab.connect()`` makes a lab and makes it the *current* one, which the module-level
functions use. ``lab.shutdown()`` (also run at interpreter exit) stops what the lab started.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from pathlib import Path

import redis
from rq import Queue

from . import defaults
from .connection import connect as connect_redis
from .connection import redact
from .errors import ConfigurationError
from .server import EmbeddedServer
from .status import ServerStatus, read_status
from .workers import WorkerPool

log = logging.getLogger("tasklab")


class Lab:
    """A connection to one Redis, with the embedded server and local workers it started.

    With no ``url`` (and no ``$TASKLAB_REDIS_URL``), it starts or joins the embedded server
    of ``data_dir`` (default ``./.tasklab``). With one, it uses that Redis and starts nothing.
    """

    def __init__(self, url: str | None = None, *, data_dir: str | os.PathLike[str] | None = None):
        self.data_dir = Path(
            data_dir or os.environ.get(defaults.DATA_DIR_ENV) or defaults.DATA_DIR
        ).absolute()
        url = url or os.environ.get(defaults.URL_ENV) or None
        self.server: EmbeddedServer | None = None
        if url is None:
            self.server = EmbeddedServer(self.data_dir).start()
            url = self.server.url
        self.url: str = url
        try:
            self.connection: redis.Redis = connect_redis(url, name=f"tasklab-lab-{os.getpid()}")
        except Exception:
            if self.server is not None:
                self.server.stop()
            raise
        self._pool: WorkerPool | None = None
        self._lock = threading.Lock()
        self._closed = False
        # A weak reference, so that a lab nobody holds can still be collected.
        ref = weakref.ref(self)
        atexit.register(lambda: (lab := ref()) is not None and lab.shutdown())

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._pool or ())} workers"
        return f"<Lab {redact(self.url)} ({state})>"

    @property
    def embedded(self) -> bool:
        """Whether this lab runs on the embedded server."""
        return self.server is not None

    def queue(self, name: str = defaults.QUEUE) -> Queue:
        """The RQ queue called ``name`` on this lab's Redis."""
        return Queue(name, connection=self.connection)

    def workers(self, n: int | None = None, *, queues: list[str] | None = None) -> WorkerPool:
        """Start or scale the local workers to ``n`` processes (default: one per CPU).

        Returns the :class:`~tasklab.workers.WorkerPool` once every new worker is ready.
        """
        self._check_open()
        with self._lock:
            if self._pool is None:
                self._pool = WorkerPool(
                    self.url, self.connection, self.data_dir / "logs", queues=queues or [defaults.QUEUE]
                )
            elif queues is not None and list(queues) != self._pool.queues:
                raise ConfigurationError(
                    f"The local workers serve {self._pool.queues}; to serve {list(queues)}, call "
                    "lab.workers(0) first and then lab.workers(n, queues=...)."
                )
            pool = self._pool
        return pool.scale(defaults.worker_count() if n is None else n)

    @property
    def pool(self) -> WorkerPool | None:
        """The local worker pool, or ``None`` if no worker was started."""
        return self._pool

    def worker_logs(self, tail: int | None = 50) -> dict[str, str]:
        """The end of each local worker's log file, by worker name."""
        return self._pool.logs(tail) if self._pool else {}

    def status(self) -> ServerStatus:
        """Server version, queues with their lengths, and workers, as one snapshot."""
        self._check_open()
        return read_status(self.connection, self.url)

    def shutdown(self) -> None:
        """Stop the local workers and drop this lab's hold on the embedded server."""
        global _current
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
        self.connection.close()
        if self.server is not None:
            self.server.stop()
        if _current is self:
            _current = None

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigurationError("This lab has been shut down; call tasklab.connect() for a new one.")

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


_current: Lab | None = None
_current_lock = threading.Lock()


def connect(url: str | None = None, *, data_dir: str | os.PathLike[str] | None = None) -> Lab:
    """Connect to Redis (the embedded server unless ``url`` is given) and make the lab current.

    A current lab for the same URL and data directory is returned as it is; one for another
    is shut down first.
    """
    global _current
    with _current_lock:
        if _current is not None and not _current._closed:
            wanted = url or os.environ.get(defaults.URL_ENV) or None
            same_dir = data_dir is None or Path(data_dir).absolute() == _current.data_dir
            if same_dir and ((wanted is None and _current.embedded) or wanted == _current.url):
                return _current
            _current.shutdown()
        _current = Lab(url, data_dir=data_dir)
        return _current


def current_lab(start: bool = True) -> Lab:
    """The current lab; with ``start``, connect with the defaults if there is none."""
    if _current is not None and not _current._closed:
        return _current
    if not start:
        raise ConfigurationError("No lab is connected; call tasklab.connect() first.")
    return connect()
