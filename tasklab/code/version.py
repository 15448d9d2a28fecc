"""A cell version: the content-addressed unit of code tasklab ships to workers.

A ``%%task`` cell, the source assembled for a task of a script, or a local package shipped whole
(see :mod:`tasklab.code.modules`), with the tasks it defines
and their options, the other versions it depends on, and what it carries from the notebook
or module it was written in: imports, helpers and values. The version is a hash of all of that.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskSpec:
    """One task of a cell: a function (wrapped in a ``base`` subclass) or a Task subclass."""

    name: str
    kind: str  # "function" | "class" | "module" (a task of a local package, made by its own code)
    attr: str  # the name the cell binds it to
    base: str | None = None  # for functions: the name of the Task subclass to build on
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CellVersion:
    """The unit of shipped code: everything a worker needs to rebuild a cell's tasks."""

    version: str
    source: str
    filename: str
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    defines: tuple[str, ...] = ()  # names the cell binds with def/class: what other cells may use
    bases: tuple[str, ...] = ()  # Task subclasses without ``run`` that later cells may use
    deps: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (version, name there)
    globals_blob: bytes | None = None  # pickled values the code reads (see tasklab.code.carry)
    #: Pickled values that hold classes the version carries, loaded once they are defined (see tasklab.code.identity).
    late_globals_blob: bytes | None = None
    #: Imports and definitions carried from the notebook, run before ``source`` (see tasklab.code.carry).
    prelude: str = ""
    #: For a local package shipped whole (see tasklab.code.modules): its top-level name, and its modules:
    #: name -> ``[filename, is_package, source]``.
    module: str | None = None
    module_files: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def prelude_filename(self) -> str:
        """Where tracebacks place a line of :attr:`prelude`."""
        return self.filename[:-1] + ", carried from the notebook>"

    @staticmethod
    def compute_version(
        source: str, deps: dict[str, tuple[str, str]], options: dict[str, Any], extra: bytes = b""
    ) -> str:
        digest = hashlib.sha256()
        digest.update(source.encode())
        digest.update(json.dumps(deps, sort_keys=True).encode())
        digest.update(repr(sorted(options.items())).encode())
        digest.update(extra)
        return digest.hexdigest()[:12]
