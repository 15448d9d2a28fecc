"""Shipping a task defined outside a ``%%task`` cell.

A task (function or Task subclass) of an importable module ships by its import path: the worker
imports it. A plain function of an importable module made a task where it is used
(``lab.task(mylib.process, queue="io")``) ships as a version that imports the function and
names the task's name and options, which the worker wraps it with. One defined in ``__main__``
(a script, or a notebook cell without ``%%task``) ships by source: its own definition plus what
it needs from its module, found by reading the code: ``import`` lines for the modules and
importable objects it uses, the source of the ``__main__`` functions and classes it calls, other
tasks as dependencies, and the remaining module-level values pickled alongside.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..core import options as opts
from ..core.task import Task, check_task_class, check_task_name
from ..errors import CellError
from . import cells
from .carry import carry, definition, importable_path
from .serialization import pickled
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
        task_cls.name = subject.__name__
    path = importable_path(subject)
    if path is not None and _found_at(path) is (task_cls.instance() if fn is not None else task_cls):
        version = f"py:{path[0]}:{path[1]}"
        task_cls._tl_version, task_cls._tl_attr = version, path[1]
        cells.remember(version, {path[1]: task_cls.instance() if fn is not None else task_cls})
        return
    # At its import path is the plain function (``lab.task(mylib.process, queue="io")``): the version
    # imports it and names the options to wrap it with, as a function written in __main__ carries its source.
    cell = source_cell(task_cls, subject, by_import=path is not None)
    task_cls._tl_version, task_cls._tl_attr, task_cls._tl_cell = cell.version, subject.__name__, cell
    objects = {subject.__name__: task_cls.instance() if fn is not None else task_cls}
    cells.remember(cell.version, objects, cell, local=True)


def _found_at(path: tuple[str, str]) -> Any:
    """What a worker finds at the import path ``(module, qualname)``."""
    target: Any = importlib.import_module(path[0])
    for part in path[1].split("."):
        target = getattr(target, part)
    return target


def source_cell(task_cls: type[Task], subject: Any, *, by_import: bool = False) -> CellVersion:
    """A cell version holding ``subject``'s definition and everything it reads from its module; or,
    ``by_import``, an import of the function ``subject`` (importable as it is), wrapped with the task's
    name and options by the worker."""
    module_globals: dict[str, Any] = getattr(subject, "__globals__", None) or vars(
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
    if by_import:
        needed[subject.__name__] = [f"the task {task_cls.name or subject.__name__}"]
        found = carry(needed, module_globals, dependency=shipped)
        found.defined.add(subject.__name__)  # bound by the import, then replaced by its task
    else:
        found = carry(needed, module_globals, dependency=shipped, first=[(subject.__name__, definition(subject))])
    for name, places in found.missing.items():
        raise CellError(
            f"`{name}` is used in {places[0]} but not defined in its module, so the workers could not "
            f"run it: define or import `{name}` at module level."
        )
    for name, why in found.unfit.items():
        raise CellError(f"`{name}`, which {subject.__name__} uses, cannot be sent to the workers: {why}.")
    source = found.prelude()
    try:
        source.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CellError(
            f"The code of {subject.__name__} holds a lone surrogate character, {source[exc.start]!a}, which cannot "
            "be stored as text, so the workers could not get it: write it as that escape inside a string literal, "
            "or remove it."
        ) from None
    blob = pickled(found.values) if found.values else None
    spec_options = {k: v for k, v in task_cls.task_options().items() if "__wrapped__" in task_cls.__dict__}
    name = task_cls.name or subject.__name__
    # The name too: two tasks made of one function under two names are two versions.
    identity = {**spec_options, "base": base_name, "name": name}
    version = CellVersion.compute_version(source, found.deps, identity, blob or b"")
    filename = f"<task {name} v{version[:7]}>"
    kind = "function" if "__wrapped__" in task_cls.__dict__ else "class"
    spec = TaskSpec(name, kind, subject.__name__, base_name, spec_options if kind == "function" else {})
    return CellVersion(
        version=version,
        source=source,
        filename=filename,
        tasks={name: spec},
        defines=tuple(sorted(found.defined)),
        deps=found.deps,
        globals_blob=blob,
    )


def shipped(value: Any) -> tuple[str, str] | None:
    """``(version, name)`` of a task (shipped now if it was not yet) or of a class of a registered cell;
    ``None`` for anything else, a Task subclass of ``__main__`` without ``run`` included (a base class,
    whose source is carried)."""
    defined = cells.defining(value)
    if defined is not None:
        return defined
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
