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
from ..core.task import Task
from ..errors import NotRegistered
from . import cells
from .build import build_tasks
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
        module = types.ModuleType(f"tasklab_cell_{version}")
        module.__file__ = cell.filename
        namespace = module.__dict__
        for name, (dep_version, attr) in cell.deps.items():
            namespace[name] = cells.objects(dep_version)[attr]
        if cell.globals_blob is not None:  # covered by the version's signature, checked by fetch
            blob = cell.globals_blob
            namespace.update(
                loads(blob, f"the values of code version {version}") if blob.startswith(MAGIC) else unpickled(blob)
            )
        sys.modules[module.__name__] = module
        cloudpickle.register_pickle_by_value(module)  # functions it returns pickle by value
        for source, filename in ((cell.prelude, cell.prelude_filename), (cell.source, cell.filename)):
            if source:
                lines = source.splitlines(keepends=True)
                linecache.cache[filename] = (len(source), None, lines, filename)
                exec(compile(source, filename, "exec"), namespace)
        tasks = build_tasks(cell.tasks, namespace, version)
        for task in tasks.values():
            type(task)._tl_app = self.app
        defined = {name: namespace[name] for name in cell.defines if name in namespace}
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
            cls.name = qualname.rsplit(".", 1)[-1]
        if cls._tl_app is None:
            cls._tl_app = self.app
        cells.remember(version, {qualname: target})
        return {qualname: target}


def install(fetch: Callable[[str], CellVersion], app: App | None) -> CodeLoader:
    """Make this process load unknown versions with ``fetch``, binding their tasks to ``app``."""
    loader = CodeLoader(fetch, app)
    cells.set_loader(loader.load)
    return loader


def task_for(version: str, name: str) -> Task:
    """The task ``name`` of code ``version`` in this process, loading the version if needed."""
    for obj in cells.objects(version).values():
        candidate = obj.instance() if isinstance(obj, type) and issubclass(obj, Task) else obj
        if isinstance(candidate, Task) and candidate.name == name and candidate._tl_version == version:
            return candidate
    raise NotRegistered(f"Task {name!r} is not defined by code version {version}.")
