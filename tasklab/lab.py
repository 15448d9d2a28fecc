"""The lab: one Redis, the local workers, and everything tasklab started for this process.

``tasklab.connect()`` makes a lab and makes it the *current* one. The current lab is looked up
only here, at the top: by the magics, by module-level ``@tasklab.task`` and ``tasklab.history()``,
and through :data:`current_app`, the default app of tasks and results made without one.
``lab.shutdown()`` (also run at interpreter exit) stops what the lab started.
"""

from __future__ import annotations

import atexit
import difflib
import logging
import math
import os
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import redis

from . import defaults
from .client.progress import unserved_queues
from .client.result import AsyncResult
from .client.submit import submit_calls
from .client.workflow import submit_workflow
from .code import cells, define
from .code.define import task as task_decorator
from .code.loader import install as install_loader
from .code.loader import task_for
from .code.store import CODE_KEY, TASKS_KEY, CodeRegistry
from .code.version import CellVersion
from .core import options as opts
from .core import signing
from .core.app import App, set_default_app
from .core.eager import EagerResult, EagerResultSet
from .core.signatures import Signature, callbacks_of, signature
from .core.task import Task
from .engine.queue import TaskQueue
from .errors import ConfigurationError, NotRegistered, RedisUnreachable, TaskLabError, TaskLabWarning
from .local.connection import check_url, redact
from .local.connection import connect as connect_redis
from .local.pool import WorkerPool
from .local.server import EmbeddedServer
from .local.status import ServerStatus, read_status

log = logging.getLogger("tasklab")
T = TypeVar("T")
_NOT_SUBMITTED = "Nothing was submitted by this call; try again once it is back (lab.status() tells)."
_PARTLY = (
    "The call may have been submitted in part, or whole; once Redis is back (lab.status() tells), look at "
    "lab.history() before submitting again."
)


class Lab:
    """A connection to one Redis, with the embedded server and local workers it started.

    With no ``url`` (and no ``$TASKLAB_REDIS_URL``), it starts or joins the embedded server
    of ``data_dir`` (default ``./.tasklab``). With one, it uses that Redis and starts nothing.

    ``namespace`` keeps this lab's task names apart from other notebooks' on the same Redis
    (default: the notebook's or script's name). On the embedded server, local workers start
    at the first submit unless ``autostart_workers=False`` or ``workers()`` was called.
    With ``eager=True`` (Celery's ``task_always_eager``), ``delay`` and ``apply_async`` run the
    task at once in this process, as ``task.apply()`` does, and return an ``EagerResult``.
    Other keyword arguments are lab-wide task option defaults (``queue="io"``).

    Jobs, code, results and exceptions are signed with the deployment's key and checked before
    they are run or unpickled (see :mod:`tasklab.core.signing`). The embedded server makes its
    own; with a ``url``, give the lab and its workers the same one: ``secret=``, ``$TASKLAB_SECRET``
    or a key file. ``insecure=True`` does without, and warns.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        namespace: str | None = None,
        autostart_workers: bool = True,
        secret: str | None = None,
        insecure: bool = False,
        eager: bool = False,
        **task_defaults: Any,
    ):
        self.data_dir = Path(data_dir or os.environ.get(defaults.DATA_DIR_ENV) or defaults.DATA_DIR).absolute()
        url = url or os.environ.get(defaults.URL_ENV) or None
        if url is not None:
            check_url(url)  # before anything is started, and without the password in its message
        self.secret = _the_key(url, self.data_dir, secret, insecure)
        self.insecure = self.secret is None
        self.server: EmbeddedServer | None = None
        if url is None:
            self.server = EmbeddedServer(self.data_dir).start()
            url = self.server.url
        self.url: str = url
        self._connects = 0  # connections made to Redis; each new one may find it restarted empty
        self._verified_at = 0  # the count when the published code was last known to be there
        try:
            self.connection: redis.Redis = connect_redis(
                url, name=f"tasklab-lab-{os.getpid()}", on_connect=self._connected
            )
        except Exception:
            if self.server is not None:
                self.server.stop()
            raise
        self.namespace = namespace or default_namespace()
        self.options = opts.validate(task_defaults, where="lab")
        self.autostart_workers = autostart_workers
        if not isinstance(eager, bool):
            raise ConfigurationError(f"eager={eager!r} is invalid: give True (run tasks in this process) or False.")
        self.eager = eager
        self.registry = CodeRegistry(self.connection)
        self._queues: dict[str, TaskQueue] = {}
        self._published: set[str] = set()
        self._queues_pinned = False  # the local workers' queues were given: they serve no other
        self._served_checked: dict[str, float] = {}  # queue -> when it was last checked for a worker
        self._pool: WorkerPool | None = None
        self._lock = threading.Lock()
        self._recover_lock = threading.Lock()
        self._closed = False
        if not cells.has_loader():  # so that this process can load code versions other labs stored
            install_loader(_fetch_code, current_app)
        _show_results_live()
        # A weak reference, so that a lab nobody holds can still be collected.
        ref = weakref.ref(self)
        atexit.register(_shutdown_if_alive, ref)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._pool or ())} workers"
        return f"<Lab {redact(self.url)} ({state})>"

    @property
    def embedded(self) -> bool:
        """Whether this lab runs on the embedded server."""
        return self.server is not None

    def queue(self, name: str = defaults.QUEUE) -> TaskQueue:
        """The RQ queue called ``name`` on this lab's Redis (an ``rq.Queue``)."""
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = TaskQueue(name, connection=self.connection)
        return queue

    # -- tasks --

    def task(self, fn: Any = None, **options: Any) -> Any:
        """``@lab.task`` / ``@lab.task(**options)``: like ``@tasklab.task``, submitting to this lab."""
        return task_decorator(fn, app=self, **options)

    def publish(self, cell: CellVersion) -> None:
        """Store ``cell`` (and the cells it depends on) here and make it current for its names."""
        self._check_open()
        with self.connection.pipeline() as pipe:
            for code in cells.closure(cell.version):
                if code.version not in self._published or code is cell:
                    self.registry.push(code, self.namespace, pipe)
            pipe.execute()
        self._published.update(c.version for c in cells.closure(cell.version))

    def _connected(self) -> None:
        self._connects += 1

    def _verify_published(self) -> None:
        """After a new connection to Redis: if the code this lab published is gone (Redis came back
        empty), forget it was published, so that it is published again."""
        # Taking a connection from the pool makes it again if the server closed it (a restart),
        # without a round trip; the count then tells.
        pool = self.connection.connection_pool
        pool.release(pool.get_connection())
        seen = self._connects
        if seen == self._verified_at:
            return
        published = sorted(self._published)
        if published:
            with self.connection.pipeline(transaction=False) as pipe:
                for version in published:
                    pipe.exists(CODE_KEY.format(version))
                missing = sum(1 for found in pipe.execute() if not found)
            if missing:
                log.warning(
                    "tasklab: Redis at %s came back without %d of this lab's code versions; publishing them again",
                    redact(self.url), missing,
                )  # fmt: skip
                self._published.clear()
        self._verified_at = seen

    def ensure_code(self, task: Task) -> None:
        """Make sure the code of ``task`` is in this lab's Redis before a job needs it (again, if
        Redis restarted without it)."""
        self._verify_published()
        version = task._tl_version
        if version is None or version in self._published:
            return
        if not self._published:  # first use: every cell made so far, so the latest is current
            for code in cells.local_cells():
                self.publish(code)
        if version not in self._published and cells.cell(version) is not None:
            self.publish(cells.cell(version))  # type: ignore[arg-type]
        self._published.add(version)

    def ensure_workers(self, queue: str | None = None) -> None:
        """On the embedded server, start the local workers at the first submit. Local workers serve
        every queue the lab's jobs go to, unless their queues were given (``workers(n, queues=...)``);
        a job sent to a queue no live worker serves is warned about."""
        if self._pool is None and self.embedded and self.autostart_workers:
            started = self.workers()
            print(f"tasklab: Redis at {redact(self.url)}, {len(started)} local workers (logs: lab.worker_logs())")
        if queue is None:
            return
        pool = self._pool
        if pool is not None and not self._queues_pinned and len(pool) and queue not in pool.queues:
            with self._lock:
                if queue not in pool.queues:
                    pool.serve([*pool.queues, queue])
                    print(f"tasklab: the local workers now serve the queues {', '.join(pool.queues)}")
        self._warn_if_unserved(queue)

    def _warn_if_unserved(self, queue: str) -> None:
        """Warn, at most once every few seconds per queue, when no worker serves ``queue``."""
        now = time.monotonic()
        if now - self._served_checked.get(queue, -math.inf) < defaults.UNSERVED_CHECK_INTERVAL:
            return
        self._served_checked[queue] = now
        if unserved_queues(self, [queue], max_age=0):  # the live views' answer is refreshed too
            warnings.warn(
                f"No worker serves the queue {queue!r}: its jobs wait, PENDING, until one does. Start one: "
                f"lab.workers(n, queues=[..., {queue!r}]) here, or `tasklab worker --queues {queue}` elsewhere.",
                TaskLabWarning,
                stacklevel=2,
            )

    def submit(self, task: Task, calls: list[tuple[tuple, dict]], call_options: dict[str, Any]) -> Sequence[Any]:
        """Submit ``calls`` (``(args, kwargs)`` pairs) of ``task``; used by ``delay`` and friends. An
        eager lab runs them here instead, one after the other (see :meth:`_apply_eagerly`)."""
        self._check_open()
        if self.eager:
            return EagerResultSet(self._apply_eagerly(task, args, kwargs, call_options) for args, kwargs in calls)
        return self.reaching_redis(
            lambda: submit_calls(self, task, calls, call_options), _NOT_SUBMITTED, idempotent=False
        )

    def _apply_eagerly(self, task: Task, args: tuple, kwargs: dict, options: dict[str, Any]) -> EagerResult:
        """Run one call of ``task`` here, as ``task.apply()``, then its callbacks (``link``) with its
        value, or its errbacks (``link_error``), eagerly too: what ``delay`` does in an eager lab."""
        task.signature_check(args, kwargs)
        result = task.apply(args, kwargs, task_id=options.get("task_id"))
        if result.successful():
            for sig in callbacks_of(options.get("link"), "link"):
                value_first = () if sig.immutable else (result.result,)
                result.children.append(self._apply_eagerly(sig.task, value_first + sig.args, sig.kwargs, sig.options))
            return result
        for sig in callbacks_of(options.get("link_error"), "link_error"):
            try:  # as a worker does (see tasklab.engine.execution): (request, exc, traceback), else the task's id
                sig.task.signature_check((result, result.result, result.traceback, *sig.args), sig.kwargs)
            except TypeError:
                self._apply_eagerly(sig.task, (result.id, *sig.args), sig.kwargs, sig.options)
            else:
                sig.task(result.request, result.result, result.traceback, *sig.args, **sig.kwargs)
        return result

    # -- Celery's app API --

    def signature(
        self,
        task: Any,
        args: Any = (),
        kwargs: dict[str, Any] | None = None,
        immutable: bool = False,
        **options: Any,
    ) -> Signature:
        """A signature of ``task``: a task, a signature, or a task's name (``"tasks.add"``), found among
        this lab's tasks (:meth:`task_named`), as Celery's ``app.signature``."""
        if isinstance(task, str):
            task = self.task_named(task)
        return signature(task, args, kwargs, immutable, **options)

    def send_task(self, name: str, args: Any = None, kwargs: dict[str, Any] | None = None, **options: Any) -> Any:
        """Submit the task called ``name`` (see :meth:`task_named`) with ``args``, ``kwargs`` and
        ``apply_async``'s options, as Celery's ``app.send_task``; its result."""
        return self.signature(name, args or (), kwargs, **options).apply_async()

    def AsyncResult(self, id: str) -> AsyncResult:
        """The result of the task ``id`` in this lab's Redis, as Celery's ``app.AsyncResult``."""
        if not isinstance(id, str) or not id:
            raise ConfigurationError(f"AsyncResult({id!r}): give a task id, the string result.id.")
        return AsyncResult(id, self)

    def task_named(self, name: str) -> Task:
        """The task called ``name``: the version this lab's namespace has current in Redis (``%%task``
        cells), else a task of this process with that name (``@tasklab.task``, ``Task`` subclasses);
        :class:`NotRegistered` if there is none."""
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"A task name is a non-empty string, not {name!r}.")
        version = self.reaching_redis(
            lambda: self.connection.hget(TASKS_KEY.format(self.namespace), name), "Ask again once it is back."
        )
        if version is not None:
            try:
                return task_for(version.decode(), name)
            except TaskLabError:
                pass  # its code cannot be loaded here: look among this process's tasks
        found = _tasks_named(name)
        if found is None:
            known = _nearest_first(name, {*self.registry.current(self.namespace), *_task_names()})
            listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "") if known else "none"
            raise NotRegistered(
                f"No task is called {name!r} in this lab (namespace {self.namespace!r}). Known: {listed}. Run the "
                "cell or import the module that defines it, or check the name (task.name says it)."
            )
        return found

    def submit_workflow(self, node: Any, args: tuple, kwargs: dict, options: dict[str, Any]) -> Any:
        """Submit a chain, group or chord whole; used by their ``apply_async``."""
        self._check_open()
        return self.reaching_redis(
            lambda: submit_workflow(self, node, args, kwargs, options), _NOT_SUBMITTED, idempotent=False
        )

    def recover(self) -> bool:
        """When Redis does not answer: start the embedded server again if it died (its append-only
        file brings back its data). Whether it runs now, restarted by this call or already by
        another (a pool's supervisor), so that trying again is worth it. A server at a URL is not
        ours to start: False."""
        with self._recover_lock:
            if self.server is None or self._closed:
                return False
            if self.server.is_running():
                return True
            log.warning("tasklab: the embedded Redis at %s died; starting it again", redact(self.url))
            self.server.restart()
            return True

    def reaching_redis(self, action: Callable[[], T], what: str, *, idempotent: bool = True) -> T:
        """``action()``; if Redis does not answer, once more if :meth:`recover` finds the embedded
        server running again, else a :class:`RedisUnreachable` that says so (not redis-py's own
        error), and then ``what``. An action that must not run twice (a submit) runs again only
        if the first try never reached a server (its connection was refused)."""
        try:
            return action()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            never_sent = isinstance(exc.__context__, ConnectionRefusedError | FileNotFoundError)
            if not (idempotent or never_sent):
                raise RedisUnreachable(f"Redis at {redact(self.url)} stopped answering ({exc}). {_PARTLY}") from exc
            if not self.recover():
                raise RedisUnreachable(f"Redis at {redact(self.url)} does not answer ({exc}). {what}") from exc
        try:
            return action()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnreachable(
                f"Redis at {redact(self.url)} was started again but does not answer ({exc}). {what}"
            ) from exc

    def workers(self, n: int | None = None, *, queues: list[str] | None = None) -> WorkerPool:
        """Start or scale the local workers to ``n`` processes (default: one per CPU).

        Returns the :class:`~tasklab.local.pool.WorkerPool` once every new worker is ready.
        """
        self._check_open()
        with self._lock:
            if self._pool is None:
                self._pool = WorkerPool(
                    self.url, self.connection, self.data_dir / "logs", queues=queues or [defaults.QUEUE],
                    secret=self.secret,
                )  # fmt: skip
                self._pool.on_unreachable = self.recover
                self._queues_pinned = queues is not None
            elif queues is not None and list(queues) != self._pool.queues and len(self._pool) == 0:
                self._pool.queues = list(queues)
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

    def history(self, *, since: Any = None, until: Any = None, name: Any = None, namespace: Any = None) -> Any:
        """One row per task attempt, as a pandas DataFrame (see :func:`tasklab.diagnostics.frames.history`)."""
        # pandas loads at the first history(), not with tasklab: worker processes never need it.
        from .diagnostics.frames import history

        self._check_open()
        return self.reaching_redis(
            lambda: history(self.connection, since=since, until=until, name=name, namespace=namespace),
            "The history is kept in Redis: ask again once it is back (lab.status() tells).",
        )

    def stats(self, *, since: Any = None, until: Any = None, name: Any = None, namespace: Any = None) -> Any:
        """One row per task name: counts by state, retries, run-time mean/p50/p95, throughput."""
        from .diagnostics.frames import stats  # pandas loads at first use (see history)

        return stats(self.history(since=since, until=until, name=name, namespace=namespace))

    def monitor(
        self,
        *,
        display: bool = True,
        interval: float = defaults.MONITOR_INTERVAL,
        plots: bool = True,
        interactive: bool | None = None,
    ) -> Any:
        """The live monitor widget: shown and updating (``display=False``: built, not shown or started).
        ``interactive=False`` shows the task stream as an image, for a frontend without ipympl's
        extension (by default it is interactive when ipympl is installed)."""
        # ipywidgets and IPython's display load with the first monitor, not with tasklab: scripts
        # and workers never need them.
        from IPython.display import display as show

        from .widgets.monitor import Monitor

        self._check_open()
        monitor = Monitor(self, interval=interval, plots=plots, interactive=interactive)
        monitor.refresh(plots=plots)
        if display:
            show(monitor)
            monitor.start()
        return monitor

    def status(self) -> ServerStatus:
        """Server version, queues with their lengths, and workers, as one snapshot."""
        self._check_open()
        return self.reaching_redis(lambda: read_status(self.connection, self.url), "Ask again once it is back.")

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


def _task_classes() -> list[type[Task]]:
    """Every task class of this process (subclasses of :class:`Task` with a body), breadth first."""
    found: list[type[Task]] = []
    todo = list(Task.__subclasses__())
    while todo:
        cls = todo.pop(0)
        todo.extend(cls.__subclasses__())
        if cls.has_run() and isinstance(cls.name, str):
            found.append(cls)
    return found


def _task_names() -> set[str]:
    return {cls.name for cls in _task_classes() if cls.name}


def _tasks_named(name: str) -> Task | None:
    """A task of this process called ``name`` (the last found, if a re-run cell made several), if any."""
    matches = [cls for cls in _task_classes() if cls.name == name]
    return matches[-1].instance() if matches else None


def _fetch_code(version: str) -> CellVersion:
    """A code version, from the Redis of the current lab (the kernel's loader reads through it)."""
    return current_lab().registry.fetch(version)


def _show_results_live() -> None:
    """In a Jupyter kernel, show results as live state badges (as ``%load_ext tasklab`` does)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if getattr(shell, "kernel", None) is not None:
        # ipywidgets loads in a kernel only: scripts and workers never need it.
        from .widgets.result_view import show_results_live

        show_results_live(shell)


def _shutdown_if_alive(ref: weakref.ref[Lab]) -> None:
    lab = ref()
    if lab is not None:
        lab.shutdown()


_current: Lab | None = None
_current_lock = threading.Lock()


def default_namespace() -> str:
    """The notebook's name (Jupyter tells kernels), else the script's, else the directory's."""
    session = os.environ.get("JPY_SESSION_NAME")
    if session:
        return Path(session).stem
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if script and "ipykernel" not in sys.modules and "IPython" not in sys.modules:
        return Path(script).stem
    return Path.cwd().name or "default"


def _the_key(url: str | None, data_dir: Path, secret: str | None, insecure: bool) -> bytes | None:
    """The lab's key, now also this process's (see :mod:`tasklab.core.signing`); ``None`` when insecure."""
    key = None if insecure and secret is None else signing.find_key(secret)
    if key is None and url is None and not insecure:
        key = signing.embedded_key(data_dir)
    if key is None:
        if not insecure:
            raise ConfigurationError(
                f"{redact(url or '')} is a Redis the lab did not start, and no key is set to sign what goes "
                "through it: anyone who can write to it could run code on your workers and in this kernel. "
                f"Make a key with `tasklab secret`, then give it to the lab and to every worker: "
                f"${defaults.SECRET_ENV}, the file {signing.default_key_file()}, or connect(secret=...). "
                "To go without (a Redis only you can reach), pass insecure=True."
            )
        warnings.warn(
            f"tasklab: the lab on {redact(url or '')} signs nothing (insecure=True): anyone who can write to this "
            "Redis can run code on its workers and in this kernel.",
            TaskLabWarning,
            stacklevel=4,
        )
    signing.keyring.use(key, insecure=insecure)
    return key


def connect(
    url: str | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    namespace: str | None = None,
    **kwargs: Any,
) -> Lab:
    """Connect to Redis (the embedded server unless ``url`` is given) and make the lab current.

    A current lab for the same URL, data directory and namespace is returned as it is; one
    for another is shut down once the new one is connected. See :class:`Lab` for the options.
    """
    global _current
    with _current_lock:
        if _current is not None and not _current._closed:
            wanted = url or os.environ.get(defaults.URL_ENV) or None
            same_dir = data_dir is None or Path(data_dir).absolute() == _current.data_dir
            same_ns = namespace is None or namespace == _current.namespace
            same_url = (wanted is None and _current.embedded) or wanted == _current.url
            if same_dir and same_ns and same_url and not kwargs:
                return _current
    # Connecting takes up to CONNECT_TIMEOUT: with no lock held, so that no other connect() waits.
    lab = Lab(url, data_dir=data_dir, namespace=namespace, **kwargs)
    with _current_lock:
        replaced, _current = _current, lab
    if replaced is not None and replaced is not lab:
        replaced.shutdown()
    return lab


def current_lab_or_none() -> Lab | None:
    """The current lab if one is connected; never connects."""
    return _current if _current is not None and not _current._closed else None


def current_lab(start: bool = True) -> Lab:
    """The current lab; with ``start``, connect with the defaults if there is none."""
    if _current is not None and not _current._closed:
        return _current
    if not start:
        raise ConfigurationError("No lab is connected; call tasklab.connect() first.")
    return connect()


class CurrentLab:
    """ "The current lab" as an app: every use finds the current lab, connecting one with the
    defaults if there is none. Tasks of ``%%task`` cells and of module-level ``@tasklab.task`` are
    bound to it, so they follow ``tasklab.connect()``; so is everything made without an app."""

    @property
    def namespace(self) -> str:
        return current_lab().namespace

    @property
    def options(self) -> dict[str, Any]:
        return current_lab().options

    @property
    def connection(self) -> redis.Redis:
        return current_lab().connection

    def queue(self, name: str = defaults.QUEUE) -> TaskQueue:
        return current_lab().queue(name)

    def submit(self, task: Task, calls: list[tuple[tuple, dict]], call_options: dict[str, Any]) -> Sequence[Any]:
        return current_lab().submit(task, calls, call_options)

    def submit_workflow(self, node: Any, args: tuple, kwargs: dict, options: dict[str, Any]) -> Any:
        return current_lab().submit_workflow(node, args, kwargs, options)

    def publish(self, cell: CellVersion) -> None:
        """Store ``cell`` now if a lab is connected; else the lab does at its first submit."""
        lab = current_lab_or_none()
        if lab is not None:
            lab.publish(cell)

    def ensure_code(self, task: Task) -> None:
        current_lab().ensure_code(task)

    def ensure_workers(self, queue: str | None = None) -> None:
        current_lab().ensure_workers(queue)

    def reaching_redis(self, action: Callable[[], T], what: str) -> T:
        return current_lab().reaching_redis(action, what)

    def __repr__(self) -> str:
        return "<the current tasklab lab>"


#: The app of tasks and results made without one: the current lab, found at each use.
current_app: App = CurrentLab()
set_default_app(current_app)


def register_cell(
    source: str, user_ns: dict[str, Any], options: dict[str, Any] | None = None, *, app: App | None = None
) -> dict[str, Task]:
    """What ``%%task`` does, as a function: see :func:`tasklab.code.define.register_cell`.

    The tasks submit to ``app``, by default to the current lab (connected at the first submit).
    """
    return define.register_cell(source, user_ns, options, app=app if app is not None else current_app)


def _nearest_first(name: str, names: set[str]) -> list[str]:
    """``names`` for a message about ``name``: those of its module and those spelt like it first."""
    module = name.rpartition(".")[0]
    close = difflib.get_close_matches(name, names, n=10, cutoff=0.6)
    return sorted(names, key=lambda n: (not (module and n.startswith(module + ".")), n not in close, n))
