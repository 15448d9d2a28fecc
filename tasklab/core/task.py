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

from ..errors import ArgumentsError, ConfigurationError, NotRegistered, Retry
from . import options as opts
from .app import App, default_app
from .eager import EagerResult, apply_eagerly
from .request import Request, current_request
from .signatures import Signature


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
        """Submit one run of the task with ``args`` and ``kwargs``; return its :class:`AsyncResult`."""
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
    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: in a chain it does not receive the previous step's result."""
        return Signature(self, args, kwargs, immutable=True)

    @_ClassOrInstance
    def map(self, iterable: Iterable[Any], **options: Any) -> Sequence[Any]:
        """Submit one run per item, ``task(item)``, in pipelined batches; a ``ResultSet``."""
        calls: list[tuple[tuple, dict]] = [((item,), {}) for item in iterable]
        return self._app().submit(self, calls, options)

    @_ClassOrInstance
    def starmap(self, iterable: Iterable[Iterable[Any]], **options: Any) -> Sequence[Any]:
        """Submit one run per item, ``task(*item)``, in pipelined batches; a ``ResultSet``."""
        calls: list[tuple[tuple, dict]] = [(tuple(item), {}) for item in iterable]
        return self._app().submit(self, calls, options)

    def _run_signature(self) -> inspect.Signature | None:
        """``run``'s signature (``None`` if Python cannot tell it), read once per ``run``: a ``map``
        checks every call against it."""
        run = self.run
        function = getattr(run, "__func__", run)
        cached = self.__dict__.get("_tl_run_signature")
        if cached is not None and cached[0] is function:
            return cached[1]
        try:
            sig: inspect.Signature | None = inspect.signature(run)
        except (TypeError, ValueError):
            sig = None
        self.__dict__["_tl_run_signature"] = (function, sig)
        return sig

    def signature_check(self, args: tuple, kwargs: dict) -> None:
        """Raise ``TypeError`` now if ``args``/``kwargs`` don't fit ``run``'s parameters."""
        sig = self._run_signature()
        if sig is None:
            return
        try:
            sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise ArgumentsError(f"{self.name}{sig}: {exc}") from None


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
