"""The Task class and the ``@task`` decorator, after Celery.

A task is an instance of a :class:`Task` subclass. Its ``run`` is the body; the worker calls
the task through ``__call__``, which calls ``run``, so a base class can override
``__call__`` to check arguments or post-process results. Options are class attributes with
Celery's names (``queue = "high"``, ``ignore_result = True``); a function task gets them
from the decorator or the ``%%task`` line.

The same classes serve the kernel and the workers: the kernel submits, a worker runs.
"""

from __future__ import annotations

import builtins
import inspect
import logging
import reprlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..errors import ArgumentsError, ConfigurationError, NotRegistered, Retry, StateReportError
from . import options as opts
from . import signatures
from .app import App, default_app
from .eager import EagerResult, apply_eagerly
from .request import Request, current_request, request_stack
from .signatures import Signature, xmap, xstarmap
from .states import READY_STATES


class _ClassOrInstance:
    """A method callable on the class (using its registered instance) or on an instance."""

    def __init__(self, func: Callable[..., Any]):
        self.func = func
        self.__doc__ = func.__doc__

    def __get__(self, instance: Task | None, owner: type[Task]) -> Callable[..., Any]:
        target = instance if instance is not None else owner.instance()
        return self.func.__get__(target, owner)


class Task:
    """Base class of tasks. Subclass it with a ``run`` for a class-based task, or without one
    for a base class that function tasks name with ``base=``.
    """

    # -- options: Celery's names; None means inherit (lab, then tasklab.defaults.TASK_OPTIONS) --
    name: str | None = None
    queue: str | None = None
    bind: bool = False
    ignore_result: bool | None = None
    result_ttl: int | None = None
    max_retries: int | None = None
    autoretry_for: tuple[type[BaseException], ...] | None = None
    retry_backoff: bool | float | None = None
    retry_backoff_max: int | None = None
    retry_jitter: bool | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    rate_limit: str | None = None
    concurrency_limit: int | None = None
    acks_late: bool | None = None

    #: Marks tasks and task classes for :mod:`tasklab.core.signatures`, which cannot import this module.
    _tl_is_task = True
    #: Whether a job's first argument is a task whose code the job needs too (the built-in map tasks).
    _tl_takes_task = False

    # -- set by tasklab when the task is registered --
    _tl_version: str | None = None
    _tl_attr: str | None = None
    _tl_app: App | None = None
    _tl_cell: Any = None  # its CellVersion: the code to store in Redis before the first submit
    _tl_instance: Task | None = None

    # -- the body and the lifecycle hooks, called by the worker in Celery's order --

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no run(); it can only be a base class.")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)

    def before_start(self, task_id: str, args: tuple, kwargs: dict) -> None:
        """Called in the worker before ``run``."""

    def on_success(self, retval: Any, task_id: str, args: tuple, kwargs: dict) -> None:
        """Called in the worker when the task returned."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        """Called in the worker when the task failed for good."""

    def on_retry(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        """Called in the worker when the task will be retried."""

    def after_return(self, status: str, retval: Any, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        """Called in the worker after the task returned or failed for good (``status`` SUCCESS or FAILURE);
        not for an attempt that is to be retried, as in Celery."""

    def retry(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **_: Any,
    ) -> Retry:
        """Ask for another attempt of the running task (``bind=True``); raises :class:`Retry`.

        With ``countdown`` the attempt runs that many seconds later, else after the task's backoff
        or ``default_retry_delay``. When the retries have run out, ``exc`` is raised (or
        ``MaxRetriesExceededError`` without one), as in Celery.
        """
        if self.request.called_directly:
            # As Celery: called directly, the cause is raised, or Retry itself.
            raise exc if exc is not None else Retry(f"{self.name}.retry() was called outside a worker.")
        raise Retry(exc=exc, when=countdown, max_retries=max_retries)

    def update_state(self, task_id: str | None = None, state: str | None = None, meta: Any = None, **_: Any) -> None:
        """Report the running task's state and ``meta``, as Celery's ``update_state``:
        ``self.update_state(state="PROGRESS", meta={"current": i, "total": n})``.

        While the task runs, ``AsyncResult.state`` is ``state`` and ``AsyncResult.info`` is ``meta``
        (a ``current``/``total`` pair draws a progress bar in the result's badge and the monitor);
        once it ends, they are its outcome's. Call it as often as you like: Redis gets at most a few
        writes a second (the last report is written within
        :data:`~tasklab.defaults.STATE_REPORT_INTERVAL`). ``task_id`` reports for another task
        instead. In an eager run (``apply()``, ``result.debug()``) nothing is kept. Outside a task
        it raises :class:`~tasklab.errors.StateReportError`, as does a final state (SUCCESS,
        FAILURE, REVOKED: the outcome sets those) or a meta that cannot be serialised.
        """
        name = self.name or type(self).__name__
        if not isinstance(state, str) or not state:
            raise StateReportError(
                f"{name}.update_state(state={reprlib.repr(state)}): the state must be a non-empty string, "
                "such as 'PROGRESS'."
            )
        if state in READY_STATES:
            raise StateReportError(
                f"{name}.update_state(state={state!r}): a task's final state comes from its outcome (return to "
                "succeed, raise to fail); while it runs, report a state of your own, such as 'PROGRESS'."
            )
        request = current_request()
        if request is None:
            raise StateReportError(
                f"{name}.update_state() was called outside a running task: call it from inside the task "
                "(a bound task's self, bind=True, or a Task subclass's run)."
            )
        if request.report_state is not None:
            request.report_state(task_id, state, meta)

    # -- identity --

    @classmethod
    def has_run(cls) -> bool:
        """Whether the class has a body (``run``); one without is a base class, not a task."""
        return cls.run is not Task.run

    @classmethod
    def instance(cls) -> Task:
        """The task object of this class: the one registered, or one made on first use."""
        inst = cls.__dict__.get("_tl_instance")
        if inst is None:
            check_task_class(cls)
            inst = cls()
            cls._tl_instance = inst
        return inst

    @property
    def request(self) -> Request:
        """The running job's request in a worker; an empty one when called directly."""
        req = current_request()
        return req if req is not None else Request()

    @classmethod
    def task_options(cls) -> dict[str, Any]:
        """The options this task sets itself (class attributes, including inherited ones)."""
        found = {}
        for option in opts.DEFAULTS:
            if option in ("base", "name"):
                continue
            value = getattr(cls, option, None)
            if value is not None and not (option == "bind" and value is False):
                found[option] = value
        for klass in cls.__mro__:  # Celery's max_retries = None, written on a class: retry forever
            if klass is Task:
                break
            if "max_retries" in klass.__dict__:
                if klass.__dict__["max_retries"] is None:
                    found["max_retries"] = opts.FOREVER
                break
        return found

    def __repr__(self) -> str:
        version = f" v{self._tl_version}" if self._tl_version else ""
        return f"<@task: {self.name}{version}>"

    # -- submitting: Celery's API --

    def _app(self) -> App:
        """The app this task submits to: the one it was bound to, else the default (the current lab).

        Its code is given a version (shipped) by the submit itself.
        """
        if self._tl_version is None and not type(self).has_run():
            raise NotRegistered(f"{type(self).__name__} has no run(), so it is a base class, not a task.")
        return self._tl_app if self._tl_app is not None else default_app()

    @_ClassOrInstance
    def apply_async(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: Any = None,
        queue: str | None = None,
        task_id: str | None = None,
        **options: Any,
    ) -> Any:
        """Submit one run of the task with ``args`` and ``kwargs``; return its :class:`AsyncResult`.

        Celery's options: ``countdown``/``eta`` (when it may start), ``expires`` (seconds or a
        datetime: not started by then, it is revoked instead), ``queue``, ``task_id``, ``link`` and
        ``link_error`` (signatures applied when it succeeds, or fails for good), and the per-call
        task options (``time_limit``, ``ignore_result``, ...)."""
        if countdown is not None and eta is not None:
            raise ConfigurationError("Give countdown or eta, not both.")
        call = dict(options, countdown=countdown, eta=eta, queue=queue, task_id=task_id)
        (result,) = self._app().submit(self, [(tuple(args or ()), dict(kwargs or {}))], call)
        return result

    @_ClassOrInstance
    def apply(
        self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> EagerResult:
        """Run the task here and now, in this process, as Celery's ``apply``; return its :class:`EagerResult`.

        Needs no Redis and no lab. ``self.request.is_eager`` is True, the lifecycle hooks run as on
        a worker, and retries run again at once; time limits are not applied and output is not
        captured (see :mod:`tasklab.core.eager`). Of the options, ``task_id`` and ``retries`` are used.
        """
        return apply_eagerly(
            self, tuple(args or ()), dict(kwargs or {}), options.get("task_id"), int(options.get("retries") or 0)
        )

    @_ClassOrInstance
    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Submit one run of the task: ``task.delay(1, y=2)`` is ``task.apply_async((1,), {"y": 2})``."""
        return self.apply_async(args, kwargs)

    @_ClassOrInstance
    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature with partial arguments, for workflows: ``add.s(2) | mul.s(10)``."""
        return Signature(self, args, kwargs)

    @_ClassOrInstance
    def signature(
        self,
        args: Iterable[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        *,
        immutable: bool = False,
        **options: Any,
    ) -> Signature:
        """A signature with these arguments and options, as Celery's ``add.signature((2, 2), countdown=10)``."""
        return Signature(self, tuple(args or ()), kwargs, options, immutable)

    @_ClassOrInstance
    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: in a chain it does not receive the previous step's result."""
        return Signature(self, args, kwargs, immutable=True)

    @_ClassOrInstance
    def map(self, it: Iterable[Any], **options: Any) -> xmap:
        """Celery's ``task.map(it)``: a signature of ONE job that calls ``task(item)`` for each item in
        turn, whose result is the list of their values. Nothing is submitted until it is applied
        (``.delay()``, ``.apply_async(countdown=...)``, ``~sig``); :meth:`map_async` submits a job per item."""
        return xmap(self, it, **options)

    @_ClassOrInstance
    def starmap(self, it: Iterable[Iterable[Any]], **options: Any) -> xstarmap:
        """Celery's ``task.starmap(it)``: as :meth:`map`, calling ``task(*item)`` for each item."""
        return xstarmap(self, it, **options)

    @_ClassOrInstance
    def chunks(self, it: Iterable[Iterable[Any]], n: int, **options: Any) -> signatures.chunks:
        """Celery's ``task.chunks(it, n)``: ``it`` split into parts of ``n`` items, each one job calling
        ``task(*item)`` for its items (a :meth:`starmap`). Applied, it is a group of those jobs, whose
        ``get()`` is a list of lists; ``.group()`` gives that group, to change before submitting."""
        return signatures.chunks(self, it, n, **options)

    @_ClassOrInstance
    def map_async(self, iterable: Iterable[Any], **options: Any) -> Sequence[Any]:
        """Submit one job per item, ``task(item)``, at once and in pipelined batches; their ``ResultSet``.

        Named after ``multiprocessing.Pool.map_async``: the jobs run in parallel, where Celery's
        :meth:`map` runs the items one after the other in a single job.
        """
        calls: list[tuple[tuple, dict]] = [((item,), {}) for item in iterable]
        return self._app().submit(self, calls, options)

    @_ClassOrInstance
    def starmap_async(self, iterable: Iterable[Iterable[Any]], **options: Any) -> Sequence[Any]:
        """Submit one job per item, ``task(*item)``, at once and in pipelined batches; their ``ResultSet``."""
        calls: list[tuple[tuple, dict]] = [(tuple(item), {}) for item in iterable]
        return self._app().submit(self, calls, options)

    def _tl_mapper(self, star: bool) -> Task:
        """The built-in task that runs this one over many items in one job, bound to this task's app."""
        mapper = (StarmapTask if star else MapTask)()
        mapper._tl_app = self._tl_app
        return mapper

    def _run_signature(self) -> tuple[inspect.Signature | None, set]:
        """``run``'s signature (``None`` if Python cannot tell it), read once per ``run``, with the
        shapes of calls found to fit it: a ``map_async`` checks every call against it."""
        run = self.run
        function = getattr(run, "__func__", run)
        cached = self.__dict__.get("_tl_run_signature")
        if cached is not None and cached[0] is function:
            return cached[1], cached[2]
        try:
            sig: inspect.Signature | None = inspect.signature(run)
        except (TypeError, ValueError):
            sig = None
        fitting: set = set()
        self.__dict__["_tl_run_signature"] = (function, sig, fitting)
        return sig, fitting

    def signature_check(self, args: tuple, kwargs: dict) -> None:
        """Raise ``TypeError`` now if ``args``/``kwargs`` don't fit ``run``'s parameters. Whether they
        fit depends on their number and the keywords' names only, so each shape is checked once."""
        sig, fitting = self._run_signature()
        if sig is None:
            return
        shape = (len(args), *kwargs) if kwargs else len(args)
        if shape in fitting:
            return
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise ArgumentsError(f"{self.name}{sig}: {exc}") from None
        fitting.add(shape)


def _run_member(task: Task, args: tuple) -> Any:
    """``task(*args)`` inside a map's job, with a request of its own, as Celery's ``task(*args)``
    gives one: ``called_directly``, so that ``self.retry()`` raises its cause."""
    stack = request_stack()
    stack.append(Request(args=args))
    try:
        return task(*args)
    finally:
        stack.pop()


class MapTask(Task):
    """The built-in task of :meth:`Task.map` (Celery's ``celery.map``): ``task(item)`` for each item,
    in turn, in this one job; the list of their values. A failing item fails the job."""

    name = "tasklab.map"
    _tl_takes_task = True

    def run(self, task: Task, it: Iterable[Any]) -> list[Any]:
        return [_run_member(task, (item,)) for item in it]


class StarmapTask(Task):
    """The built-in task of :meth:`Task.starmap` and :meth:`Task.chunks` (Celery's ``celery.starmap``):
    ``task(*item)`` for each item, in turn, in this one job; the list of their values."""

    name = "tasklab.starmap"
    _tl_takes_task = True

    def run(self, task: Task, it: Iterable[Iterable[Any]]) -> list[Any]:
        return [_run_member(task, tuple(item)) for item in it]


#: Names no task may have: Python's builtins, and the names IPython gives a notebook. A task bound to
#: one in the notebook would hide it there (one called ``get_ipython`` breaks every later magic).
RESERVED_NAMES = frozenset(name for name in dir(builtins) if not name.startswith("_")) | {
    "get_ipython", "display", "In", "Out", "exit", "quit",
}  # fmt: skip


def check_task_name(name: Any, what: str = "The task name", *, bound: bool = False) -> str:
    """``name`` if a task may be called so; else :class:`ConfigurationError` saying why and what to do.

    A name is stored in Redis as UTF-8, so a lone surrogate cannot be in it (``repr`` shows one
    escaped, so messages can carry it); nor, when a ``%%task`` cell binds it in the notebook
    (``bound``), may it be one of :data:`RESERVED_NAMES`. ``what`` names where it was given, for the
    message.
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{what} {reprlib.repr(name)} is invalid: expected a non-empty string.")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(
            f"{what} {name!r} holds a lone surrogate character, which cannot be stored: use another name."
        ) from None
    if bound and name in RESERVED_NAMES:
        hidden = "IPython's" if name in ("get_ipython", "display", "In", "Out", "exit", "quit") else "Python's builtin"
        raise ConfigurationError(
            f"{what} {name!r} is taken by {hidden} {name}, which a task of that name would hide in the "
            f"notebook: rename it (such as {name}_task), or start a helper's name with _ so that it is not a task."
        )
    return name


def check_task_class(cls: type[Task]) -> None:
    """:class:`ConfigurationError` unless tasklab can make ``cls``'s task object and call its ``run``:
    the worker makes it itself, with no arguments, once per process."""
    run = getattr(cls, "run", None)
    if not callable(run):
        raise ConfigurationError(
            f"{cls.__name__}.run is {type(run).__name__} {reprlib.repr(run)}, not a method: define the task's body as "
            "`def run(self, ...):` (or leave run out to make a base class)."
        )
    if cls.__init__ is object.__init__:
        return
    try:  # not inspect.signature(cls): a function task's class has the function's signature
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):  # a signature Python cannot tell: found out when it is made
        return
    needed = [p.name for p in parameters if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if needed:
        raise ConfigurationError(
            f"{cls.__name__}() needs {', '.join(needed)}, but a task object is made by tasklab, with no "
            "arguments, once per worker process: give them defaults, set them in run(), or make what "
            "they hold lazily on first use (an attribute that starts as None)."
        )


def get_task_logger(name: str) -> logging.Logger:
    """A logger whose records a worker captures with the task's output (``result.output``)."""
    return logging.getLogger(f"tasklab.task.{name}")


#: The prefix of the module a worker runs a ``%%task`` cell or a script's shipped code in.
CELL_MODULE_PREFIX = "tasklab_cell_"


def default_name(obj: Any) -> str:
    """The name a task gets when none is given, as Celery names it: ``module.qualname`` for a function
    or class defined at the top of a module (``tasks.add``). A task of ``__main__`` (a script, or a
    notebook outside ``%%task``) or of a ``%%task`` cell keeps its bare name (``add``): a lab's
    namespace already keeps one notebook's or script's names apart from another's, as Celery's app
    name would. So does one defined inside a function, which no import path reaches."""
    name = obj.__name__
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", name)
    if (
        not isinstance(module, str)
        or module in ("__main__", "builtins")
        or module.startswith(CELL_MODULE_PREFIX)
        or not isinstance(qualname, str)
        or "<locals>" in qualname
    ):
        return name
    return f"{module}.{qualname}"


def make_function_task(
    fn: Callable[..., Any], *, base: type[Task] | None = None, name: str | None = None, **options: Any
) -> Task:
    """Wrap ``fn`` in a new subclass of ``base`` (default :class:`Task`) and return its instance."""
    base = base or Task
    if not (isinstance(base, type) and issubclass(base, Task)):
        raise ConfigurationError(f"base={base!r} is not a tasklab.Task subclass.")
    bind = bool(options.get("bind", False))
    attrs: dict[str, Any] = {
        "run": fn if bind else staticmethod(fn),
        "name": name or default_name(fn),
        "__module__": getattr(fn, "__module__", __name__),
        "__doc__": fn.__doc__,
        "__qualname__": getattr(fn, "__qualname__", fn.__name__),
        "__wrapped__": staticmethod(fn),
    }
    attrs.update({k: v for k, v in options.items() if k in opts.DEFAULTS and k not in ("base", "name")})
    try:
        sig = inspect.signature(fn)
        if bind:
            sig = sig.replace(parameters=list(sig.parameters.values())[1:])
        attrs["__signature__"] = sig
    except (TypeError, ValueError):
        pass
    cls: type[Task] = type(fn.__name__, (base,), attrs)
    return cls.instance()


def task_names_of_args(task: Task) -> list[str]:
    """Parameter names of ``run``, for messages that name an argument."""
    try:
        return [
            p.name
            for p in inspect.signature(task.run).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        return []
