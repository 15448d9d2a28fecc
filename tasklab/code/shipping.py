"""Shipping a task defined outside a ``%%task`` cell.

A function (or Task subclass) of an importable module ships by its import path: the worker
imports it. One defined in ``__main__`` (a script, or a notebook cell without ``%%task``)
ships by source: its own definition plus what it needs from its module, found by reading
the code: ``import`` lines for the modules and importable objects it uses, the source of
the ``__main__`` functions and classes it calls, other tasks as dependencies, and the
remaining module-level values pickled alongside.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import textwrap
import types
from typing import Any

from ..core import options as opts
from ..core.task import Task
from ..errors import CellError
from . import cells
from .analysis import analyze
from .serialization import dumps
from .version import CellVersion, TaskSpec

_MISSING = object()


def importable_path(obj: Any) -> tuple[str, str] | None:
    """``(module, qualname)`` if a worker can import ``obj`` by that path."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<locals>" in qualname:
        return None
    try:
        if importlib.util.find_spec(module) is None:
            return None
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, ValueError):
        return None
    return module, qualname


def _definition(obj: Any) -> str:
    """The source of a def or class statement, dedented, without its decorators."""
    try:
        source = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError) as exc:
        raise CellError(
            f"The source of {obj.__qualname__} cannot be read ({exc}), so it cannot be sent to workers. "
            "Define it in a file or a notebook cell (or use %%task)."
        ) from exc
    node = ast.parse(source).body[0]
    lines = source.splitlines(keepends=True)
    return "".join(lines[node.lineno - 1 :])


def _target(obj: Any) -> Any:
    if isinstance(obj, Task):
        return type(obj).__dict__.get("__wrapped__", type(obj))
    return obj


def ship(task_cls: type[Task]) -> None:
    """Give ``task_cls`` (registered lazily) a version: import path or shipped source."""
    if task_cls._tl_version is not None:
        return
    opts.validate(task_cls.task_options(), where=f"{task_cls.__name__} class")
    wrapped = task_cls.__dict__.get("__wrapped__")
    fn = wrapped.__func__ if isinstance(wrapped, staticmethod) else wrapped
    subject = fn if fn is not None else task_cls
    if task_cls.name is None:
        task_cls.name = subject.__name__
    path = importable_path(subject)
    if path is not None:
        version = f"py:{path[0]}:{path[1]}"
        task_cls._tl_version, task_cls._tl_attr = version, path[1]
        cells.remember(version, {path[1]: task_cls.instance() if fn is not None else task_cls})
        return
    cell = source_cell(task_cls, subject)
    task_cls._tl_version, task_cls._tl_attr, task_cls._tl_cell = cell.version, subject.__name__, cell
    objects = {subject.__name__: task_cls.instance() if fn is not None else task_cls}
    cells.remember(cell.version, objects, cell, local=True)


def source_cell(task_cls: type[Task], subject: Any) -> CellVersion:
    """A cell version holding ``subject``'s definition and everything it reads from its module."""
    module_globals: dict[str, Any] = getattr(subject, "__globals__", None) or vars(
        importlib.import_module(subject.__module__)
    )
    imports: list[str] = []
    definitions: list[str] = []
    values: dict[str, Any] = {}
    deps: dict[str, tuple[str, str]] = {}
    resolved: set[str] = set()
    base_name = None
    pending = [(subject.__name__, _definition(subject))]
    defined = {subject.__name__}

    if "__wrapped__" in task_cls.__dict__:
        base = task_cls.__mro__[1]
        if base is not Task:
            base_name = base.__name__
            _resolve(base_name, base, subject.__name__, imports, pending, values, deps, defined)
            resolved.add(base_name)

    while pending:
        owner, source = pending.pop(0)
        definitions.append(source)
        for name in analyze(source, f"<{owner}>").undefined:
            if name in resolved or name in defined:
                continue
            resolved.add(name)
            value = module_globals.get(name, _MISSING)
            if value is _MISSING:
                raise CellError(
                    f"`{name}` is used in `{owner}` but not defined in its module, so the workers could not "
                    f"run it: define or import `{name}` at module level."
                )
            _resolve(name, value, owner, imports, pending, values, deps, defined)

    source = "\n".join(sorted(set(imports))) + "\n\n\n" + "\n\n".join(reversed(definitions))
    blob = dumps(values) if values else None
    spec_options = {k: v for k, v in task_cls.task_options().items() if "__wrapped__" in task_cls.__dict__}
    version = CellVersion.compute_version(source, deps, {**spec_options, "base": base_name}, blob or b"")
    filename = f"<task {task_cls.name or subject.__name__} v{version[:7]}>"
    kind = "function" if "__wrapped__" in task_cls.__dict__ else "class"
    name = task_cls.name or subject.__name__
    spec = TaskSpec(name, kind, subject.__name__, base_name, spec_options if kind == "function" else {})
    return CellVersion(
        version=version,
        source=source,
        filename=filename,
        tasks={name: spec},
        defines=tuple(sorted(defined)),
        deps=deps,
        globals_blob=blob,
    )


def _resolve(
    name: str,
    value: Any,
    owner: str,
    imports: list[str],
    pending: list[tuple[str, str]],
    values: dict[str, Any],
    deps: dict[str, tuple[str, str]],
    defined: set[str],
) -> None:
    if isinstance(value, types.ModuleType):
        module = value.__name__
        imports.append(f"import {module}" if module == name else f"import {module} as {name}")
        return
    if isinstance(value, Task) or (isinstance(value, type) and issubclass(value, Task) and value is not Task):
        cls = value if isinstance(value, type) else type(value)
        if cls.__module__ == "__main__" and not ("run" in cls.__dict__ or "__wrapped__" in cls.__dict__):
            pending.append((name, _definition(cls)))  # a base class: ship its source
            defined.add(name)
            return
        ship(cls)
        deps[name] = (cls._tl_version, cls._tl_attr)  # type: ignore[assignment]
        return
    path = importable_path(_target(value))
    if path is not None:
        module, qualname = path
        if "." not in qualname:
            imports.append(f"from {module} import {qualname}" + (f" as {name}" if name != qualname else ""))
            return
    if isinstance(value, types.FunctionType | type) and getattr(value, "__module__", None) == "__main__":
        pending.append((name, _definition(value)))
        defined.add(name)
        return
    values[name] = value
