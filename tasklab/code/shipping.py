"""Shipping a task defined outside a ``%%task`` cell.

A task (function or Task subclass) of a module the workers can import ships by its import path:
the worker imports it. One of a local module they cannot import ships with that whole module, by
source (see :mod:`tasklab.code.modules`). A plain function of an importable module made a task where it is used
(``lab.task(mylib.process, queue="io")``) ships as a version that imports the function and
names the task's name and options, which the worker wraps it with. One defined in ``__main__``
(a script, or a notebook cell without ``%%task``) ships by source: its own definition plus what
it needs from its module, found by reading the code: ``import`` lines for the modules and
importable objects it uses, the source of the ``__main__`` functions and classes it calls, other
tasks as dependencies, and the remaining module-level values pickled alongside.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import types
from dataclasses import replace
from typing import Any

from ..core import options as opts
from ..core.task import Task, check_task_class, check_task_name, default_name
from ..errors import CellError
from . import cells
from .carry import carry, definition, importable_path
from .identity import carry_classes, mark_options, split_values
from .modules import module_cell, module_deps, module_key, ships_by_source
from .version import CellVersion, TaskSpec


def ship(task_cls: type[Task]) -> None:
    """Give ``task_cls`` (registered lazily) a version: import path or shipped source. A subclass of
    a registered task gets its own (the attribute it inherits names its parent's)."""
    if task_cls.__dict__.get("_tl_version") is not None:
        return
    opts.validate(task_cls.task_options(), where=f"{task_cls.__name__} class")
    check_task_class(task_cls)
    wrapped = task_cls.__dict__.get("__wrapped__")
    fn = wrapped.__func__ if isinstance(wrapped, staticmethod) else wrapped
    subject = fn if fn is not None else task_cls
    own_name = task_cls.__dict__.get("name")
    check_task_name(own_name or subject.__name__, f"{task_cls.__name__}.name" if own_name else "The task name")
    if own_name is None:  # not the name a registered parent was given
        task_cls.name = default_name(subject)
    path = importable_path(subject)
    if path is not None and _found_at(path) is (task_cls.instance() if fn is not None else task_cls):
        local = ships_by_source(subject)
        if local is not None:  # a module the workers cannot import: its package ships whole, by source
            cell = module_cell(local)
            task_cls._tl_version, task_cls._tl_cell = cell.version, cell
            task_cls._tl_attr = module_key(local, path[1])
            return
        version = f"py:{path[0]}:{path[1]}"
        task_cls._tl_version, task_cls._tl_attr = version, path[1]
        cells.remember(version, {path[1]: task_cls.instance() if fn is not None else task_cls})
        return
    # At its import path is the plain function (``lab.task(mylib.process, queue="io")``): the version
    # imports it and names the options to wrap it with, as a function written in __main__ carries its source.
    cell, classes = source_cell(task_cls, subject, by_import=path is not None)
    task_cls._tl_version, task_cls._tl_attr, task_cls._tl_cell = cell.version, subject.__name__, cell
    # The classes it carries are this version's, here as in the worker (see tasklab.code.identity).
    objects = {**classes, subject.__name__: task_cls.instance() if fn is not None else task_cls}
    cells.remember(cell.version, objects, cell, local=True)


def _found_at(path: tuple[str, str]) -> Any:
    """What a worker finds at the import path ``(module, qualname)``."""
    target: Any = importlib.import_module(path[0])
    for part in path[1].split("."):
        target = getattr(target, part)
    return target


def source_cell(task_cls: type[Task], subject: Any, *, by_import: bool = False) -> tuple[CellVersion, dict[str, type]]:
    """A cell version holding ``subject``'s definition (with the decorators applied below the task's own)
    and everything it reads from its module; or, ``by_import``, an import of the function ``subject``
    (importable as it is), wrapped with the task's name and options by the worker. With it, the
    classes it carries by source, by name: they are the version's (see :mod:`tasklab.code.identity`)."""
    inner = inspect.unwrap(subject) if callable(subject) and not isinstance(subject, type) else subject
    module_globals: dict[str, Any] = getattr(inner, "__globals__", None) or vars(
        importlib.import_module(subject.__module__)
    )
    if by_import:
        module_globals = {subject.__name__: subject}
    base_name = None
    needed: dict[str, list[str]] = {}
    if "__wrapped__" in task_cls.__dict__:
        base = task_cls.__mro__[1]
        if base is not Task:
            base_name = base.__name__
            needed[base_name] = [f"`{subject.__name__}`"]
            module_globals = {**module_globals, base_name: base}
    spec_options = {k: v for k, v in task_cls.task_options().items() if "__wrapped__" in task_cls.__dict__}
    own_source = None if by_import else task_definition(subject)
    if own_source is not None and not isinstance(subject, type):
        _check_no_closure(inner, task_cls.name or subject.__name__)
    if by_import:
        needed[subject.__name__] = [f"the task {task_cls.name or subject.__name__}"]
        found, own = carry_classes(
            lambda wanted: carry(wanted, module_globals, dependency=shipped), needed, module_globals, spec_options
        )
        found.defined.add(subject.__name__)  # bound by the import, then replaced by its task
    else:
        first = [(subject.__name__, own_source or "")]
        found, own = carry_classes(
            lambda wanted: carry(wanted, module_globals, dependency=shipped, first=first),
            needed,
            module_globals,
            spec_options,
        )
    for name, places in found.missing.items():
        raise CellError(
            f"`{name}` is used in {places[0]} but not defined in its module, so the workers could not "
            f"run it: define or import `{name}` at module level."
        )
    for name, why in found.unfit.items():
        raise CellError(f"`{name}`, which {subject.__name__} uses, cannot be sent to the workers: {why}.")
    # What the task's own definition needs runs first, then the values that hold the classes it
    # defined (see tasklab.code.identity), then the definition itself.
    prelude = replace(found, definitions=[d for d in found.definitions if d is not own_source]).prelude()
    source = own_source or ""
    try:
        (prelude + source).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CellError(
            f"The code of {subject.__name__} holds a lone surrogate character, {(prelude + source)[exc.start]!a}, "
            "which cannot be stored as text, so the workers could not get it: write it as that escape inside a "
            "string literal, or remove it."
        ) from None
    early, late = split_values(found.values, own)
    spec_options = mark_options(spec_options, own)
    name = task_cls.name or subject.__name__
    # Everything that defines the task is in its version: its code, what it carries, its name and its
    # options. Two tasks made of one function under two names are two versions.
    identity = {**spec_options, "base": base_name, "name": name}
    carried = b"\0".join([prelude.encode(), early or b"", late or b""])
    deps = {**found.deps, **module_deps(source)}  # local modules it imports itself: loaded first
    version = CellVersion.compute_version(source, deps, identity, carried)
    filename = f"<task {name} v{version[:7]}>"
    kind = "function" if "__wrapped__" in task_cls.__dict__ else "class"
    spec = TaskSpec(name, kind, subject.__name__, base_name, spec_options if kind == "function" else {})
    return CellVersion(
        version=version,
        source=source,
        filename=filename,
        tasks={name: spec},
        defines=tuple(sorted(found.defined)),
        deps=deps,
        globals_blob=early,
        late_globals_blob=late,
        prelude=prelude,
    ), {name: module_globals[name] for name in own.values()}


def task_definition(fn: Any) -> str:
    """The source of the task function ``fn`` as the worker is to run it: its ``def`` with the decorators
    applied below the task's own (``@tasklab.task`` above ``@retry`` above ``def f``: ``@retry def f``);
    :class:`CellError` when that cannot be told (a decorator applied by a call, or one that hides the
    function it wraps), saying what to do."""
    if isinstance(fn, type):
        return definition(fn)
    inner = inspect.unwrap(fn)
    if inner is fn:
        return definition(fn)
    source = definition(inner, decorators=True)
    node = ast.parse(source).body[0]
    decorators = getattr(node, "decorator_list", [])
    keep = 0
    for index, decorator in enumerate(decorators):
        if _is_task_decorator(decorator):
            keep = index + 1
    if keep >= len(decorators):
        raise CellError(
            f"{fn.__qualname__} is wrapped (it has a __wrapped__) by something other than the decorators written "
            f"above its def, so the workers could not make it again from its source. Write the decorators above "
            f"its def, below the task's: @tasklab.task above @your_decorator above def {inner.__name__}(...)."
        )
    first = decorators[keep].lineno
    return "".join(source.splitlines(keepends=True)[first - 1 :])


def _is_task_decorator(node: ast.expr) -> bool:
    """Whether the decorator ``node`` makes a task: ``@task``, ``@tasklab.task``, ``@app.task(...)``."""
    target = node.func if isinstance(node, ast.Call) else node
    return (isinstance(target, ast.Name) and target.id == "task") or (
        isinstance(target, ast.Attribute) and target.attr == "task"
    )


def _check_no_closure(fn: Any, name: str) -> None:
    """:class:`CellError` if the task function ``fn`` reads variables of the function it was defined in,
    which its source cannot bring to a worker."""
    free = getattr(getattr(fn, "__code__", None), "co_freevars", ())
    if free:
        raise CellError(
            f"The task {name} reads {', '.join(free)} from the function it is defined in ({fn.__qualname__}), "
            "which the workers cannot get from its source. Define the task at module level and pass those "
            "values as arguments (a decorator's wrapper must use functools.wraps, so that tasklab ships the "
            "function it wraps with the decorator)."
        )


def shipped(value: Any) -> tuple[str, str] | None:
    """``(version, name)`` of a task (shipped now if it was not yet) or of a class of a registered cell;
    ``None`` for anything else, a Task subclass of ``__main__`` without ``run`` included (a base class,
    whose source is carried)."""
    defined = cells.defining(value)
    if defined is not None:
        return defined
    local = ships_by_source(value)
    if local is not None:  # of a local module: that module's version, the worker loads it whole
        cell = module_cell(local)
        return (cell.version, module_key(local)) if isinstance(value, types.ModuleType) else cells.defining(value)
    if isinstance(value, Task) or (isinstance(value, type) and issubclass(value, Task) and value is not Task):
        cls = value if isinstance(value, type) else type(value)
        if (
            cls.__dict__.get("_tl_version") is None
            and cls.__module__ == "__main__"
            and not ("run" in cls.__dict__ or "__wrapped__" in cls.__dict__)
        ):
            return None
        ship(cls)
        return cls._tl_version, cls._tl_attr  # type: ignore[return-value]
    return None
