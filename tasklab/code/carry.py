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
import builtins
import importlib
import importlib.util
import inspect
import linecache
import re
import sys
import textwrap
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import CellError, SerializationError
from .analysis import analyze
from .serialization import pickled

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
    cell is the one that holds one of its methods, else the latest cell run that defines a class of
    its name."""
    cells = _notebook_cells()
    methods = [
        f.__code__ for f in vars(cls).values() if isinstance(f, types.FunctionType) and f.__code__.co_filename in cells
    ]
    for filename in [code.co_filename for code in methods] or cells:
        try:
            tree = ast.parse("".join(linecache.getlines(filename)))
        except SyntaxError:
            continue
        for node in reversed(tree.body):
            if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
                end = node.end_lineno or node.lineno
                if not methods or any(node.lineno <= code.co_firstlineno <= end for code in methods):
                    return "".join(linecache.getlines(filename)), node
    return None


def _notebook_cells() -> list[str]:
    """The file names of the notebook's cells, the latest run first: IPython keeps their source in
    :mod:`linecache` (entries without a file), and numbers them in the order they ran."""
    names = [
        name
        for name, entry in linecache.cache.items()
        if len(entry) == 4 and entry[1] is None and not name.startswith(("<task ", "<string>", "<frozen"))
    ]
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    order: dict[str, int] = getattr(getattr(shell, "compile", None), "_filename_map", None) or {}
    names.reverse()
    return sorted(names, key=lambda name: -order.get(name, -1)) if order else names


def _pickled_size(value: Any) -> int:
    """The size of ``value`` pickled; :class:`CellError` saying why it cannot travel, with the fix."""
    try:
        return len(pickled(value))
    except SerializationError as exc:  # tasklab's own refusal says what to do (an open file, too deep)
        raise CellError(str(exc)) from None
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
    modules: dict[str, str] = field(default_factory=dict)  # name -> the module it names

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


#: Names IPython gives a notebook, which exist only there (``_3``, ``_i3`` and the like too).
_NOTEBOOK_ONLY = re.compile(r"get_ipython|display|In|Out|exit|quit|_+|_[ioh]|_i{1,3}|_i?\d+|_[dio]h")


def carry(
    needed: dict[str, list[str]],
    namespace: dict[str, Any],
    *,
    dependency: Callable[[Any], tuple[str, str] | None],
    first: Sequence[tuple[str, str]] = (),
    defined: set[str] | frozenset[str] = frozenset(),
    reading: Sequence[str] = (),
) -> Carried:
    """Find what the names ``needed`` (name -> the places that read it) are in ``namespace``, and what
    each carried definition needs in turn, from the globals it was defined with. ``dependency`` tells a
    registered task or cell object's ``(version, name)``. ``first``: ``(owner, source)`` definitions
    carried whatever they read. ``defined``: names the code defines itself, which a carried helper
    may read too (not looked up). ``reading``: the sources that read ``needed``, where submodules of a
    carried module are looked for (``xml.etree.ElementTree.parse`` needs ``import xml.etree.ElementTree``)."""
    found = Carried()
    pending: list[tuple[str, str, dict[str, Any]]] = []
    seen: set[str] = set(defined)

    def add_definition(name: str, source: str, kind: str, globals_: dict[str, Any]) -> None:
        found.kinds[name] = kind
        found.defined.add(name)
        pending.append((name, source, globals_))

    def resolve(name: str, places: list[str], scope: dict[str, Any]) -> None:
        if name in seen:
            return
        seen.add(name)
        found.places[name] = places
        value = scope.get(name, _MISSING)
        if _NOTEBOOK_ONLY.fullmatch(name) and (scope.get("get_ipython") is not None or hasattr(builtins, name)):
            found.unfit[name] = (
                "it is IPython's, and exists only in the notebook: compute the value in the task, or pass it in"
            )
            return
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
            found.modules[name] = module
            return
        path = importable_path(value)
        if path is not None and "." not in path[1]:
            module, qualname = path
            found.imports.append(f"from {module} import {qualname}" + (f" as {name}" if name != qualname else ""))
            found.kinds[name] = "import"
            return
        defined = inspect.unwrap(value) if callable(value) else value  # a decorated helper: its source, decorators kept
        if (
            isinstance(defined, types.FunctionType | type)
            and getattr(defined, "__module__", None) == "__main__"
            and defined.__name__ == name  # not a lambda, nor a function kept under another name
            and getattr(defined, "__closure__", None) is None  # a closure's variables are not globals: pickled
        ):
            try:
                source = definition(defined, decorators=True)
            except CellError:
                if isinstance(defined, type):
                    found.unfit[name] = (
                        "it is a class whose source cannot be read here: define it in a %%task cell, or in the "
                        "cell that uses it"
                    )
                    return
            else:
                kind = "class" if isinstance(defined, type) else "function"
                add_definition(name, source, kind, getattr(defined, "__globals__", None) or scope)
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
        pending.append((owner, source, namespace))
    for name, places in needed.items():
        resolve(name, places, namespace)
    reads: dict[str, set[str]] = {}  # carried definition -> the carried definitions it reads
    sources: dict[str, str] = {}
    while pending:
        owner, source, scope = pending.pop(0)
        sources[owner] = source
        read = analyze(source, f"<{owner}>").undefined
        for name in read:
            resolve(name, [f"`{owner}`"], scope)
        reads[owner] = set(read)
    found.definitions = [sources[name] for name in _dependencies_first(reads)]
    found.imports += _submodules(found.modules, [*reading, *sources.values()])
    return found


def _dependencies_first(reads: dict[str, set[str]]) -> list[str]:
    """The definitions of ``reads`` ordered so that each comes after those it reads (a base class
    before its subclass), else in the order found; a cycle (functions calling each other) is cut."""
    ordered: list[str] = []
    state: dict[str, int] = {}  # 1: being visited, 2: placed

    def visit(name: str) -> None:
        if state.get(name):
            return
        state[name] = 1
        for needed in sorted(reads[name] & reads.keys()):
            visit(needed)
        state[name] = 2
        ordered.append(name)

    for name in reads:
        visit(name)
    return ordered


def _submodules(modules: dict[str, str], sources: Sequence[str]) -> list[str]:
    """``import a.b.c`` for each submodule that ``sources`` read through a carried module
    (``xml.etree.ElementTree.parse`` after ``import xml.etree.ElementTree``), loaded here."""
    found: set[str] = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Attribute):
                continue
            parts: list[str] = []
            target: ast.expr = node
            while isinstance(target, ast.Attribute):
                parts.append(target.attr)
                target = target.value
            if not isinstance(target, ast.Name) or target.id not in modules:
                continue
            dotted, deepest = modules[target.id], None
            for part in reversed(parts):
                dotted += "." + part
                if dotted in sys.modules:
                    deepest = dotted
            if deepest is not None:
                found.add(deepest)
    return sorted(f"import {name}" for name in found)
