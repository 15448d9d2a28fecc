"""Loading a task's code version into this process: from Redis, or by import path.

A worker meets versions in the jobs it takes; the kernel meets them in results that hold
objects of a cell it did not run. A version stored in Redis is loaded into a fresh module,
once per process, and kept, so the task instance (and whatever it opened) serves every later
job of that version. A ``py:module:qualname`` version is a task of an importable module.
"""

from __future__ import annotations

import importlib
import linecache
import sys
import types
from collections.abc import Callable
from typing import Any

import cloudpickle

from ..core.app import App
from ..core.signing import MAGIC
from ..core.task import CELL_MODULE_PREFIX, Task, default_name
from ..errors import NotRegistered
from . import cells
from .build import build_tasks
from .identity import load_late
from .modules import MODULE_DEP, ShippedModules, module_objects
from .serialization import loads, unpickled
from .version import CellVersion


class CodeLoader:
    """Loads versions with ``fetch`` (a store's :meth:`~tasklab.code.store.CodeRegistry.fetch`);
    the tasks it builds submit to ``app``."""

    def __init__(self, fetch: Callable[[str], CellVersion], app: App | None) -> None:
        self.fetch = fetch
        self.app = app

    def load(self, version: str) -> dict[str, Any]:
        """Load ``version`` into this process, build its tasks, remember it; what it defines."""
        if version.startswith("py:"):
            return self._import(version)
        cell = self.fetch(version)
        if cell.module is not None:
            return self._module(version, cell)
        module = types.ModuleType(f"{CELL_MODULE_PREFIX}{version}")
        module.__file__ = cell.filename
        namespace = module.__dict__
        _load_deps(cell, namespace)
        if cell.globals_blob is not None:  # covered by the version's signature, checked by fetch
            blob = cell.globals_blob
            namespace.update(
                loads(blob, f"the values of code version {version}") if blob.startswith(MAGIC) else unpickled(blob)
            )
        sys.modules[module.__name__] = module
        cloudpickle.register_pickle_by_value(module)  # functions it returns pickle by value
        _run(cell.prelude, cell.prelude_filename, namespace)
        if cell.late_globals_blob is not None:  # values holding the classes just defined: those very classes
            namespace.update(load_late(cell.late_globals_blob, namespace))
        _run(cell.source, cell.filename, namespace)
        tasks = build_tasks(cell.tasks, namespace, version)
        for task in tasks.values():
            type(task)._tl_app = self.app
        defined = {name: namespace[name] for name in cell.defines if name in namespace}
        # Every class its code defined (carried ones too) is this version's: exceptions and results
        # holding one travel by reference, and the kernel resolves them to its own class.
        defined.update(
            (name, value)
            for name, value in namespace.items()
            if isinstance(value, type)
            and value.__module__ == module.__name__
            and not issubclass(value, Task)  # a carried base class is no task of this version
            and name not in defined
        )
        cells.remember(version, defined, cell)
        return defined

    def _module(self, version: str, cell: CellVersion) -> dict[str, Any]:
        """A local package shipped whole (see :mod:`tasklab.code.modules`): its modules imported, under
        their own names, from their shipped source, after the local packages they import; the tasks
        they define are this version's. A version of it loaded before is replaced in ``sys.modules``
        (its tasks keep their own module)."""
        assert cell.module is not None
        _load_deps(cell, {})
        top = cell.module
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]
        sys.meta_path.insert(0, ShippedModules(cell.module_files))  # also for imports its code makes later
        defined: dict[str, Any] = {}
        for name in sorted(cell.module_files, key=lambda n: n.count(".")):
            defined.update(module_objects(importlib.import_module(name)))
        for key, value in defined.items():
            cls = value if isinstance(value, type) else type(value)
            if issubclass(cls, Task) and cls.has_run() and "<locals>" not in cls.__qualname__:
                cls._tl_version, cls._tl_attr = version, key
                if cls.name is None:
                    cls.name = default_name(cls)
                if cls._tl_app is None:
                    cls._tl_app = self.app
        cells.remember(version, defined, cell)
        return defined

    def _import(self, version: str) -> dict[str, Any]:
        """A ``py:module:qualname`` version: a task of an importable module, shipped by path."""
        _, module, qualname = version.split(":", 2)
        target: Any = importlib.import_module(module)
        for part in qualname.split("."):
            target = getattr(target, part)
        cls = target if isinstance(target, type) else type(target)
        if not issubclass(cls, Task):
            raise NotRegistered(f"{module}.{qualname} is not a tasklab task.")
        cls._tl_version, cls._tl_attr = version, qualname
        if cls.name is None:
            cls.name = default_name(cls)
        if cls._tl_app is None:
            cls._tl_app = self.app
        cells.remember(version, {qualname: target})
        return {qualname: target}


def _load_deps(cell: CellVersion, namespace: dict[str, Any]) -> None:
    """Load the versions ``cell`` depends on, binding in ``namespace`` the names it takes from them."""
    for name, (dep_version, attr) in cell.deps.items():
        found = cells.objects(dep_version)[attr]
        if not name.startswith(MODULE_DEP):  # a local module it imports: loaded, and bound by its import
            namespace[name] = found


def _run(source: str, filename: str, namespace: dict[str, Any]) -> None:
    """Run ``source`` in ``namespace``, its lines kept for tracebacks under ``filename``."""
    if source:
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        exec(compile(source, filename, "exec"), namespace)


def install(fetch: Callable[[str], CellVersion], app: App | None) -> CodeLoader:
    """Make this process load unknown versions with ``fetch``, binding their tasks to ``app``."""
    loader = CodeLoader(fetch, app)
    cells.set_loader(loader.load)
    return loader


def task_for(version: str, name: str) -> Task:
    """The task ``name`` of code ``version`` in this process, loading the version if needed."""
    for obj in cells.objects(version).values():
        if isinstance(obj, type) and issubclass(obj, Task):
            if obj.__dict__.get("_tl_version") != version or obj.name != name:
                continue  # a base class, or another task: not made here (it may need arguments)
            obj = obj.instance()
        if isinstance(obj, Task) and obj.name == name and obj._tl_version == version:
            return obj
    raise NotRegistered(f"Task {name!r} is not defined by code version {version}.")
