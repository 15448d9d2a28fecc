"""Carrying what shipped code reads from the namespace it was written in: imports, helpers, values.

A worker runs a task's code in a fresh module. What that code reads without defining is looked up
where it was written (the notebook's namespace, or a script's module) and travels with it:

* a module becomes an ``import`` line, and an object of an importable module a ``from … import`` line;
* a task, or a class or function of a registered ``%%task`` cell, becomes a dependency on that
  cell's version, which the worker loads first;
* a function or class defined in the notebook (or a script's ``__main__``) travels as its source,
  and what that source reads is carried in turn;
* any other value travels as a pickled copy, taken now: a job runs with the values its code was
  registered with, as it runs the code it was submitted with.

What cannot travel to another process (an open file, a lock, a connection, anything that cannot be
pickled) is refused with the fix, and so is a name the namespace does not have.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import io
import linecache
import textwrap
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import CellError
from .analysis import analyze
from .serialization import dumps

_MISSING = object()
#: Carried values larger than this, pickled, are named with their size when the carry is reported.
_LARGE_BYTES = 1 << 20


def importable_path(obj: Any) -> tuple[str, str] | None:
    """``(module, qualname)`` if a worker can import ``obj`` by that path."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    if module == "__main__" or "<locals>" in qualname:
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


def definition(obj: Any, *, decorators: bool = False) -> str:
    """The source of the def or class statement of ``obj``, dedented, with or without its decorators
    (a task's own decorator is left out; a carried helper keeps ``@dataclass`` and the like);
    :class:`CellError` if it cannot be read."""
    try:
        source = textwrap.dedent(inspect.getsource(obj))
        node = ast.parse(source).body[0]
    except (OSError, TypeError, SyntaxError, IndexError) as exc:
        found = _class_in_notebook(obj) if isinstance(obj, type) else None
        if found is None:
            raise CellError(
                f"The source of {getattr(obj, '__qualname__', obj)!r} cannot be read ({exc}), so it cannot be sent "
                "to workers. Define it in the cell that uses it (or in a module the workers can import)."
            ) from exc
        source, node = found
    first = node.decorator_list[0].lineno if decorators and node.decorator_list else node.lineno  # type: ignore[attr-defined]
    lines = source.splitlines(keepends=True)
    return "".join(lines[first - 1 : node.end_lineno])


def _class_in_notebook(cls: type) -> tuple[str, ast.stmt] | None:
    """The source of the notebook cell that defined ``cls`` and its class statement: Python before
    3.13 cannot tell where a class of ``__main__`` was defined, IPython's cells being no file. The
    cell is the one that holds one of its methods, else the latest cell defining a class of its name."""
    methods = [f.__code__ for f in vars(cls).values() if isinstance(f, types.FunctionType)]
    candidates = [code.co_filename for code in methods] or [
        name for name, entry in reversed(list(linecache.cache.items())) if len(entry) == 4 and entry[1] is None
    ]
    for filename in candidates:
        source = "".join(linecache.getlines(filename))
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in reversed(tree.body):
            if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
                end = node.end_lineno or node.lineno
                if not methods or any(node.lineno <= code.co_firstlineno <= end for code in methods):
                    return source, node
    return None


def why_it_cannot_travel(value: Any) -> str | None:
    """Why a copy of ``value`` cannot be sent to another process, with the fix; ``None`` if it can."""
    try:
        _pickled_size(value)
    except CellError as exc:
        return str(exc)
    return None


def _pickled_size(value: Any) -> int:
    """The size of ``value`` pickled; :class:`CellError` saying why it cannot travel, with the fix."""
    if isinstance(value, io.IOBase):
        raise CellError("it is an open file, which another process cannot use: open it inside the task (pass its path)")
    try:
        return len(dumps(value))
    except Exception as exc:
        kind = f"{type(value).__module__}.{type(value).__qualname__}"
        raise CellError(
            f"it is a {kind}, which cannot be copied to another process ({exc}): make it inside the task "
            "(a tasklab.Task subclass can keep one per worker process)"
        ) from None


@dataclass
class Carried:
    """What shipped code needs from its namespace, found by :func:`carry`."""

    imports: list[str] = field(default_factory=list)
    definitions: list[str] = field(default_factory=list)  # sources, each after what it needs
    values: dict[str, Any] = field(default_factory=dict)
    deps: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (version, name there)
    #: name -> what was carried: "import", "function", "class", "value", "task"
    kinds: dict[str, str] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)  # name -> the places that read it
    unfit: dict[str, str] = field(default_factory=dict)  # name -> why it cannot travel
    places: dict[str, list[str]] = field(default_factory=dict)  # name -> the places that read it
    defined: set[str] = field(default_factory=set)  # names the carried definitions bind
    sizes: dict[str, int] = field(default_factory=dict)  # value name -> its size, pickled

    def prelude(self) -> str:
        """The imports and definitions, as source to run before the code that needs them."""
        parts = ["\n".join(sorted(set(self.imports)))] if self.imports else []
        return "\n\n\n".join(parts + self.definitions)

    def summary(self) -> str:
        """What was carried, for one line: ``os, np (import), CHUNK (value)``."""
        groups: dict[str, list[str]] = {}
        for name, kind in self.kinds.items():
            if kind != "task":
                groups.setdefault(kind, []).append(name)
        words = []
        for kind in ("import", "function", "class", "value"):
            names = sorted(groups.get(kind, []))
            if kind == "value":
                names = [f"{n} ({self.sizes[n] / 1e6:.1f} MB)" if self.sizes[n] > _LARGE_BYTES else n for n in names]
            if names:
                words.append(f"{', '.join(names)} ({kind})")
        return ", ".join(words)


def carry(
    needed: dict[str, list[str]],
    namespace: dict[str, Any],
    *,
    dependency: Callable[[Any], tuple[str, str] | None],
    first: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> Carried:
    """Find what the names ``needed`` (name -> the places that read it) are in ``namespace``, and what
    each carried definition needs in turn. ``dependency`` tells a registered task or cell object's
    ``(version, name)``. ``first``: ``(owner, source)`` definitions carried whatever they read."""
    found = Carried()
    pending: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add_definition(name: str, source: str, kind: str) -> None:
        found.kinds[name] = kind
        found.defined.add(name)
        pending.append((name, source))

    def resolve(name: str, places: list[str]) -> None:
        if name in seen:
            return
        seen.add(name)
        found.places[name] = places
        value = namespace.get(name, _MISSING)
        if value is _MISSING:
            found.missing[name] = places
            return
        ref = dependency(value)
        if ref is not None:
            found.deps[name], found.kinds[name] = ref, "task"
            return
        if isinstance(value, types.ModuleType):
            module = value.__name__
            found.imports.append(f"import {module}" if module == name else f"import {module} as {name}")
            found.kinds[name] = "import"
            return
        path = importable_path(value)
        if path is not None and "." not in path[1]:
            module, qualname = path
            found.imports.append(f"from {module} import {qualname}" + (f" as {name}" if name != qualname else ""))
            found.kinds[name] = "import"
            return
        if (
            isinstance(value, types.FunctionType | type)
            and getattr(value, "__module__", None) == "__main__"
            and value.__name__ == name  # not a lambda, nor a function kept under another name
        ):
            try:
                kind = "class" if isinstance(value, type) else "function"
                add_definition(name, definition(value, decorators=True), kind)
                return
            except CellError:
                if isinstance(value, type):
                    found.unfit[name] = (
                        "it is a class whose source cannot be read here: define it in a %%task cell, or in the "
                        "cell that uses it"
                    )
                    return
        try:
            found.sizes[name] = _pickled_size(value)
        except CellError as exc:
            found.unfit[name] = str(exc)
            return
        found.values[name], found.kinds[name] = value, "value"

    for owner, source in first:
        found.defined.add(owner)
        seen.add(owner)
        pending.append((owner, source))
    for name, places in needed.items():
        resolve(name, places)
    done: list[str] = []
    while pending:
        owner, source = pending.pop(0)
        done.append(source)
        for name in analyze(source, f"<{owner}>").undefined:
            resolve(name, [f"`{owner}`"])
    found.definitions = list(reversed(done))
    return found
