"""The task cells this process knows: what each version defined, loaded once per process.

A *cell version* is the content-addressed unit of code tasklab ships: a ``%%task`` cell, or
the source assembled for a ``@tasklab.task`` function of a script. The kernel remembers the
objects it executed for each version; a worker loads a version from Redis into a fresh
module, once, and keeps it, so a task instance (and, say, its database connection) lives
from one job to the next.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from ..errors import NotRegistered
from .version import CellVersion

_objects: dict[str, dict[str, Any]] = {}
_cells: dict[str, CellVersion] = {}  # versions made or loaded here, in the order they came
_local: set[str] = set()  # versions made in this process (not loaded from Redis)
_references: weakref.WeakKeyDictionary[Any, tuple[str, str]] = weakref.WeakKeyDictionary()
_lock = threading.RLock()
_loader: Callable[[str], dict[str, Any]] | None = None
_loading: set[str] = set()  # versions being loaded (under _lock): one that needs itself is refused


def remember(version: str, objects: dict[str, Any], cell: CellVersion | None = None, *, local: bool = False) -> None:
    """Record what cell ``version`` defined (and its code); its classes pickle by reference."""
    with _lock:
        _objects[version] = dict(objects)
        if cell is not None:
            _cells.pop(version, None)
            _cells[version] = cell
        if local:
            _local.add(version)
        for name, obj in objects.items():
            if isinstance(obj, type):
                _references.setdefault(obj, (version, name))


def reference(obj: Any) -> tuple[str, str] | None:
    """``(version, name)`` if ``obj`` is a class defined by a known cell version."""
    if not isinstance(obj, type):
        return None
    try:
        return _references.get(obj)
    except TypeError:  # unhashable metaclass instances
        return None


def defining(obj: Any) -> tuple[str, str] | None:
    """``(version, name)`` if ``obj`` is a class or function defined by a cell version made or
    loaded here (a worker loads that version to get it)."""
    ref = reference(obj)
    if ref is not None:
        return ref
    code = getattr(obj, "__code__", None)
    filename = getattr(code, "co_filename", None)
    if filename is None:
        return None
    with _lock:
        for version, made in _cells.items():
            if made.filename == filename:
                for name, candidate in _objects.get(version, {}).items():
                    if candidate is obj:
                        return version, name
    return None


def cell_objects(version: str) -> dict[str, Any] | None:
    """What ``version`` defined, if this process made or loaded it (never loading it)."""
    return _objects.get(version)


def cell(version: str) -> CellVersion | None:
    """The code of ``version``, if this process made or loaded it."""
    return _cells.get(version)


def local_cells() -> list[CellVersion]:
    """Every cell version made in this process, oldest registration first."""
    with _lock:
        return [c for v, c in _cells.items() if v in _local]


def closure(version: str) -> list[CellVersion]:
    """``version``'s code and the code of every version it depends on, dependencies first."""
    ordered: list[CellVersion] = []
    seen: set[str] = set()

    def visit(v: str) -> None:
        if v in seen:
            return
        seen.add(v)
        code = _cells.get(v)
        if code is None:
            return
        for dep_version, _ in code.deps.values():
            visit(dep_version)
        ordered.append(code)

    visit(version)
    return ordered


def set_loader(loader: Callable[[str], dict[str, Any]] | None) -> None:
    """Install the function that loads an unknown version (from Redis) into this process."""
    global _loader
    _loader = loader


def objects(version: str) -> dict[str, Any]:
    """What cell ``version`` defined, loading it first if this process hasn't seen it."""
    with _lock:
        found = _objects.get(version)
        if found is not None:
            return found
        if _loader is None:
            raise NotRegistered(f"Cell version {version} is not known in this process.")
        if version in _loading:
            raise NotRegistered(
                f"Cell version {version} refers to an object of its own that it has not defined yet, so it "
                "cannot be loaded. Define the task again (re-run its cell, or restart the script) and submit again."
            )
        _loading.add(version)
        try:
            return _loader(version)
        finally:
            _loading.discard(version)


def has_loader() -> bool:
    """Whether this process can load versions it has not seen (from Redis)."""
    return _loader is not None
