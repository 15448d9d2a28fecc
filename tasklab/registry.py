"""Versioned task code in Redis.

``tasklab:code:<version>`` holds one cell version: its source, the tasks it defines with
their options, the other versions it depends on (base classes and tasks it uses from other
cells), and for a script's function the module-level values it needs. The version is a hash
of all of that, so storing it again is harmless. ``tasklab:tasks:<namespace>`` maps each task
name of a lab's namespace to its current version; a job carries the version it was submitted
with. Versions are never deleted by tasklab, so a queued job always finds its code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import redis

from . import serialization
from .errors import NotRegistered

CODE_KEY = "tasklab:code:{}"
TASKS_KEY = "tasklab:tasks:{}"


@dataclass(frozen=True)
class TaskSpec:
    """One task of a cell: a function (wrapped in a ``base`` subclass) or a Task subclass."""

    name: str
    kind: str  # "function" | "class"
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
    globals_blob: bytes | None = None  # pickled module-level values (script functions)

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

    def to_redis(self) -> dict[str, bytes | str]:
        mapping: dict[str, bytes | str] = {
            "source": self.source,
            "filename": self.filename,
            "tasks": serialization.dumps(self.tasks),
            "defines": json.dumps(list(self.defines)),
            "bases": json.dumps(list(self.bases)),
            "deps": json.dumps(self.deps),
        }
        if self.globals_blob is not None:
            mapping["globals"] = self.globals_blob
        return mapping

    @classmethod
    def from_redis(cls, version: str, data: dict[bytes, bytes]) -> CellVersion:
        return cls(
            version=version,
            source=data[b"source"].decode(),
            filename=data[b"filename"].decode(),
            tasks=serialization.loads(data[b"tasks"]),
            defines=tuple(json.loads(data[b"defines"])),
            bases=tuple(json.loads(data[b"bases"])),
            deps={name: tuple(ref) for name, ref in json.loads(data[b"deps"]).items()},
            globals_blob=data.get(b"globals"),
        )


class CodeRegistry:
    """Stores and fetches cell versions, and each namespace's current task versions."""

    def __init__(self, connection: redis.Redis):
        self.connection = connection

    def push(self, cell: CellVersion, namespace: str, pipeline: redis.client.Pipeline | None = None) -> None:
        """Store ``cell`` and make it current for its task names in ``namespace``."""
        pipe = pipeline if pipeline is not None else self.connection.pipeline()
        pipe.hset(CODE_KEY.format(cell.version), mapping=cell.to_redis())
        if cell.tasks:
            pipe.hset(TASKS_KEY.format(namespace), mapping={name: cell.version for name in cell.tasks})
        if pipeline is None:
            pipe.execute()

    def fetch(self, version: str) -> CellVersion:
        data = self.connection.hgetall(CODE_KEY.format(version))
        if not data:
            raise NotRegistered(
                f"Task code version {version} is not in this Redis. It was submitted from a lab whose "
                "cell was never stored here; re-run the cell (or re-import the task) and submit again."
            )
        return CellVersion.from_redis(version, data)

    def current(self, namespace: str) -> dict[str, str]:
        """Task name -> current version, for one namespace."""
        raw = self.connection.hgetall(TASKS_KEY.format(namespace))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def current_version(self, namespace: str, name: str) -> str:
        version = self.connection.hget(TASKS_KEY.format(namespace), name)
        if version is None:
            known = sorted(self.current(namespace))
            raise NotRegistered(
                f"No task named {name!r} in namespace {namespace!r}. Registered: {', '.join(known) or 'none'}."
            )
        return version.decode()
