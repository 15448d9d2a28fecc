"""Workflows after Celery's canvas, as data: signatures, chains, groups, chords, maps and chunks.

They only describe a workflow; submitting one hands it to the app of its first task
(``submit_workflow``), which compiles it into RQ jobs (see :mod:`tasklab.client.workflow`).
"""

from __future__ import annotations

import copy
import reprlib
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import CanvasError, ConfigurationError
from . import options as opts

#: Options a signature or a workflow takes, as ``Task.apply_async`` does.
OPTIONS = frozenset({"countdown", "eta", "queue", "task_id", "expires", "link", "link_error"}) | opts.CALL_OPTIONS


def _what(obj: Any) -> str:
    return getattr(obj, "__name__", None) or repr(obj)[:60]


def _is_task(obj: Any) -> bool:
    """Whether ``obj`` is a task or a task class (``Task`` imports this module, so it is not imported here)."""
    return getattr(obj, "_tl_is_task", False) is True


def _as_task(obj: Any) -> Any:
    if isinstance(obj, type) and _is_task(obj):
        obj = obj.instance()  # type: ignore[attr-defined]  # a Task class
    if not _is_task(obj) or isinstance(obj, type):
        raise CanvasError(
            f"{_what(obj)} is not a tasklab task, so it cannot be part of a workflow. Define it in a %%task "
            "cell or with @tasklab.task, then use task.s(...)."
        )
    if not type(obj).has_run():
        raise CanvasError(f"{type(obj).__name__} has no run(): it is a base class, not a task.")
    return obj


def _check_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - OPTIONS
    if unknown:
        raise ConfigurationError(
            f"Unknown workflow option {', '.join(sorted(unknown))}; a signature or workflow takes "
            f"{', '.join(sorted(OPTIONS))}. Set other options on the task."
        )
    return {k: v for k, v in options.items() if v is not None}


def _node(obj: Any, where: str) -> Signature | _Canvas:
    if isinstance(obj, chunks):  # in a workflow, chunks are the group they make
        return obj.group()
    if isinstance(obj, Signature | _Canvas):
        return obj
    if _is_task(obj):
        name = obj.__name__ if isinstance(obj, type) else obj.name
        raise CanvasError(f"{where} is the task {name} itself; give a signature: {name}.s(...) or {name}.si(...).")
    raise CanvasError(f"{where} is {_what(obj)}, not a signature of a tasklab task: write task.s(...).")


def _members(tasks: tuple[Any, ...]) -> tuple[Any, ...]:
    """Celery's forms: ``f(a, b)``, or one list or generator ``f([a, b])``."""
    if len(tasks) == 1 and not isinstance(tasks[0], Signature | _Canvas | str) and isinstance(tasks[0], Iterable):
        return tuple(tasks[0])
    return tasks


class Signature:
    """A task with partial arguments and options (Celery's signature): ``add.s(2)``, ``add.si(2, 2)``.

    Arguments given when it is applied come first, then the partial ones: ``add.s(2).delay(8)``
    runs ``add(8, 2)``; in a chain, the previous step's result is the first argument. An
    immutable signature (``si``) takes no more arguments and ignores the previous result.
    """

    def __init__(
        self,
        task: Any,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        immutable: bool = False,
    ):
        self.task = _as_task(task)
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = _check_options(dict(options or {}))
        self.immutable = immutable

    @property
    def name(self) -> str | None:
        return self.task.name

    def clone(self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any) -> Signature:
        """A copy with ``args`` before the partial ones, and ``kwargs`` and ``options`` over them."""
        args = tuple(args)
        if self.immutable and (args or kwargs):
            raise CanvasError(f"{self!r} is immutable and takes no more arguments; use {self.name}.s(...) for that.")
        return Signature(
            self.task, args + self.args, {**self.kwargs, **(kwargs or {})}, {**self.options, **options}, self.immutable
        )

    def set(self, **options: Any) -> Signature:
        """Set options (``queue``, ``countdown``, ...) on this signature; returns it."""
        self.options.update(_check_options(options))
        return self

    def link(self, callback: Signature) -> Signature:
        """Apply ``callback`` when this task succeeds, its return value first among the callback's
        arguments (unless ``callback`` is immutable, ``task.si(...)``), as Celery's ``link``; returns
        ``callback``."""
        self.options["link"] = [*callbacks_of(self.options.get("link"), "link"), *callbacks_of(callback, "link")]
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Apply ``errback`` when this task fails for good (not when it is retried), as Celery's
        ``link_error``: a task taking ``(request, exc, traceback)`` is called with them in the
        worker; another one is submitted with the failed task's id as its first argument.
        Returns ``errback``."""
        self.options["link_error"] = [
            *callbacks_of(self.options.get("link_error"), "link_error"),
            *callbacks_of(errback, "link_error"),
        ]
        return errback

    def on_error(self, errback: Signature) -> Signature:
        """:meth:`link_error` that returns this signature, for chaining: ``add.s(2, 2).on_error(log.s()).delay()``."""
        self.link_error(errback)
        return self

    def apply_async(
        self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        """Submit the task with ``args`` before the partial ones and ``kwargs`` over them."""
        sig = self.clone(args or (), kwargs, **options)
        return self.task.apply_async(sig.args, sig.kwargs, **sig.options)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, in this process, as Celery's ``sig()`` does."""
        sig = self.clone(args, kwargs)
        return sig.task(*sig.args, **sig.kwargs)

    def __or__(self, other: Any) -> chain:
        other = _node(other, "the right side of |")
        return chain(self, *(other.tasks if isinstance(other, chain) else (other,)))

    def __invert__(self) -> Any:
        """``~sig``: apply it and wait for its value, as Celery's ``sig.apply_async().get()``."""
        return self.apply_async().get()

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}.{'si' if self.immutable else 's'}({', '.join(parts)})"


def callbacks_of(value: Any, option: str) -> list[Signature]:
    """``link=``/``link_error=`` as a list of signatures: one signature, or a list or tuple of them;
    else a :class:`CanvasError` saying what to give."""
    if value is None:
        return []
    items = list(value) if isinstance(value, list | tuple) else [value]
    for item in items:
        if not isinstance(item, Signature):
            what = "a workflow" if isinstance(item, _Canvas) else _what(item)
            name = getattr(item, "name", None) if _is_task(item) else None
            hint = f" Write {name}.s(...)." if name else " Write task.s(...), or task.si(...) to ignore the value."
            raise CanvasError(f"{option}= takes a signature or a list of them, not {what}.{hint}")
    return items


def signature(
    task: Any,
    args: Iterable[Any] = (),
    kwargs: dict[str, Any] | None = None,
    immutable: bool = False,
    **options: Any,
) -> Signature:
    """``tasklab.signature(add, args=(2,), queue="io")``: what ``add.s(2).set(queue="io")`` gives."""
    if isinstance(task, Signature):
        return Signature(
            task.task,
            tuple(args) + task.args,
            {**task.kwargs, **(kwargs or {})},
            {**task.options, **options},
            immutable or task.immutable,
        )
    return Signature(task, args, kwargs, options, immutable)


class _Canvas:
    """What chains, groups and chords share: submitting, and ``|``."""

    options: dict[str, Any]

    def apply_async(
        self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        """Submit the whole workflow. ``args`` and ``kwargs`` go to its first step(s); ``queue`` and the
        other options apply to every step that does not set its own, ``countdown``/``eta`` to the first
        steps, ``task_id`` names the result."""
        first = next(signatures_of(self), None)
        if first is None:
            raise CanvasError(f"The {type(self).__name__} is empty: give it at least one signature.")
        options = {**self.options, **_check_options(options)}
        return first.task._app().submit_workflow(self, tuple(args or ()), dict(kwargs or {}), options)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def __invert__(self) -> Any:
        """``~workflow``: apply it and wait for its value, as Celery's ``apply_async().get()``."""
        return self.apply_async().get()

    def __or__(self, other: Any) -> _Canvas:
        other = _node(other, "the right side of |")
        return chain(self, *(other.tasks if isinstance(other, chain) else (other,)))


class chain(_Canvas):
    """Steps run one after the other, each receiving the previous result first: ``chain(a.s(1), b.s())``,
    also written ``a.s(1) | b.s()``. Its result is the last step's."""

    def __init__(self, *tasks: Any, **options: Any):
        self.tasks = tuple(_node(t, f"step {i} of the chain") for i, t in enumerate(_members(tasks), 1))
        self.options = _check_options(options)

    def __or__(self, other: Any) -> chain:
        other = _node(other, "the right side of |")
        return chain(*self.tasks, *(other.tasks if isinstance(other, chain) else (other,)), **self.options)

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks)) if self.tasks else "chain()"


class group(_Canvas):
    """Members run in parallel: ``group(a.s(1), a.s(2))``, ``group(a.s(i) for i in range(10))``. Its result
    is a :class:`GroupResult`; ``group | callback`` is a chord."""

    def __init__(self, *tasks: Any, **options: Any):
        members = _members(tasks)
        if len(members) == 1 and isinstance(members[0], chunks):
            members = members[0].group().tasks
        if len(members) == 1 and isinstance(members[0], group):
            members = members[0].tasks
        self.tasks: tuple[Signature | _Canvas, ...] = tuple(
            _node(t, f"member {i} of the group") for i, t in enumerate(members, 1)
        )
        self.options = _check_options(options)

    def __or__(self, other: Any) -> _Canvas:
        return chord(self, other)

    def skew(self, start: float = 1.0, stop: float | None = None, step: float = 1.0) -> group:
        """Spread the members' starts, as Celery's ``skew``: a countdown of ``start`` seconds for the
        first, ``step`` more for each next one, and no more than ``stop``; returns the group."""
        countdown = start
        for member in self.tasks:
            member.options["countdown"] = countdown
            if stop is None or countdown + step <= stop:
                countdown += step
        return self

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.tasks))})"


class chord(_Canvas):
    """A group, then a callback that receives the list of its results, in order: ``chord(header, callback)``,
    ``chord(header)(callback)`` or ``group(...) | callback``. Its result is the callback's."""

    def __init__(self, header: Any, body: Any = None, **options: Any):
        self.header = header if isinstance(header, group) else group(header)
        self.body = None if body is None else _node(body, "the chord's callback")
        self.options = _check_options(options)

    def __call__(self, body: Any = None, **options: Any) -> Any:
        """``chord(header)(callback)``: submit with ``callback``, as Celery does."""
        target = self if body is None else chord(self.header, body, **self.options)
        return target.apply_async(**options)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"


def _items(it: Any, where: str, star: bool) -> tuple[Any, ...]:
    """The items of ``it``, read now (a generator is read once); each a tuple of arguments with ``star``."""
    if isinstance(it, str | bytes) or not isinstance(it, Iterable):
        raise CanvasError(f"{where} takes an iterable of items, not {_what(it)}.")
    items = tuple(it)
    if not star:
        return items
    for i, item in enumerate(items):
        if isinstance(item, str | bytes) or not isinstance(item, Iterable):
            raise CanvasError(f"Item {i} of {where} is {reprlib.repr(item)}; each item is a tuple of arguments.")
    return tuple(tuple(item) for item in items)


def _fitting(task: Any, items: tuple[Any, ...], where: str, star: bool) -> tuple[Any, ...]:
    """``items``, each checked against ``task``'s parameters now, so that a bad one submits nothing."""
    for i, item in enumerate(items):
        try:
            task.signature_check(item if star else (item,), {})
        except TypeError as exc:
            raise CanvasError(f"Item {i} of {where} does not fit the task: {exc}") from None
    return items


class xmap(Signature):
    """Celery's ``task.map(it)``: ONE job that calls ``task(item)`` for each item in turn; its result is
    the list of their values. A signature like any other: ``.delay()``, ``.apply_async(countdown=)``,
    ``~sig``, a step of a workflow. It runs on the task's queue, as a job of the built-in task
    ``tasklab.map``; the task's own limits and retries do not apply to each item, as in Celery."""

    _star = False

    def __init__(self, task: Any, it: Iterable[Any], **options: Any):
        member = _as_task(task)
        where = f"{member.name}.{'starmap' if self._star else 'map'}()"
        items = _fitting(member, _items(it, where, self._star), where, self._star)
        queue = type(member).task_options().get("queue")
        if queue is not None:
            options = {"queue": queue, **options}
        super().__init__(member._tl_mapper(self._star), (member, items), None, options)
        self.member, self.it = member, items

    def clone(self, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any) -> Signature:
        if tuple(args) or kwargs:
            raise CanvasError(
                f"{self!r} takes no arguments when it is applied: its items were given to "
                f"{self.member.name}.{'starmap' if self._star else 'map'}()."
            )
        copied = copy.copy(self)
        copied.kwargs, copied.options = {}, {**self.options, **_check_options(options)}
        return copied

    def __repr__(self) -> str:
        return f"[{self.member.name}({'*' if self._star else ''}x) for x in {reprlib.repr(self.it)}]"


class xstarmap(xmap):
    """Celery's ``task.starmap(it)``: as :class:`xmap`, calling ``task(*item)`` for each item."""

    _star = True


class chunks(_Canvas):
    """Celery's ``task.chunks(it, n)``: the items of ``it`` (tuples of arguments) in parts of ``n``,
    each part one job that calls ``task(*item)`` for its items (an :class:`xstarmap`).

    Applied (``()``, ``.delay()``, ``.apply_async()``, ``~``), it is submitted as :meth:`group`, whose
    result's ``get()`` is a list of lists; in a workflow it stands for that group too.
    """

    def __init__(self, task: Any, it: Iterable[Iterable[Any]], n: int, **options: Any):
        self.member = _as_task(task)
        where = f"{self.member.name}.chunks()"
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise CanvasError(f"{where} splits into parts of n items: n={n!r} must be a whole number, 1 or more.")
        self.it, self.n = _fitting(self.member, _items(it, where, True), where, True), n
        self.options = _check_options(options)

    def group(self) -> group:
        """The group of the parts: one :class:`xstarmap` of ``n`` items each (the last one may have fewer)."""
        parts = (self.it[first : first + self.n] for first in range(0, len(self.it), self.n))
        return group([xstarmap(self.member, part) for part in parts], **self.options)

    def apply_async(
        self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        """Submit the parts as a group; its :class:`GroupResult`."""
        if args or kwargs:
            raise CanvasError(f"{self!r} takes no arguments when it is applied: its items were given to chunks().")
        return self.group().apply_async(**options)

    def __call__(self, *args: Any, **options: Any) -> Any:
        return self.apply_async(args, None, **options)

    def __repr__(self) -> str:
        return f"{self.member.name}.chunks({reprlib.repr(self.it)}, {self.n})"


def signatures_of(node: Any) -> Iterator[Signature]:
    """Every signature of ``node``, in submission order."""
    if isinstance(node, Signature):
        yield node
    elif isinstance(node, chord):
        yield from signatures_of(node.header)
        if node.body is not None:
            yield from signatures_of(node.body)
    else:
        for member in node.tasks:
            yield from signatures_of(member)


def with_args(node: Any, args: tuple, kwargs: dict) -> Any:
    """``node`` with ``args``/``kwargs`` given to its first step(s), as ``chain.delay(1)`` does."""
    if not args and not kwargs:
        return node
    if isinstance(node, Signature):
        return node.clone(args, kwargs)
    if isinstance(node, chain):
        return chain(with_args(node.tasks[0], args, kwargs), *node.tasks[1:]) if node.tasks else node
    if isinstance(node, group):
        return group([with_args(t, args, kwargs) for t in node.tasks])
    return chord(with_args(node.header, args, kwargs), node.body)
