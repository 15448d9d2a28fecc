"""Versioned task code in Redis.

``tasklab:code:<version>`` holds one cell version (see :mod:`tasklab.code.version`). Storing
it again is harmless, since the version is a hash of its content. ``tasklab:tasks:<namespace>``
maps each task name of a lab's namespace to its current version; a job carries the version it
was submitted with. A version is signed (its ``sig`` field) and checked when it is fetched: code that
someone else put or changed in Redis is never run. Versions are never deleted by tasklab, so a
queued job always finds its code.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from ..core.signing import keyring
from ..errors import NotRegistered
from . import serialization
from .version import CellVersion

CODE_KEY = "tasklab:code:{}"
#: The field holding the HMAC of a code version's other fields (see tasklab.core.signing).
SIGNATURE_FIELD = "sig"
TASKS_KEY = "tasklab:tasks:{}"


def to_redis(cell: CellVersion) -> dict[str, bytes | str]:
    """The hash fields of ``cell`` in Redis."""
    mapping: dict[str, bytes | str] = {
        "source": cell.source,
        "filename": cell.filename,
        "tasks": serialization.dumps(cell.tasks),
        "defines": json.dumps(list(cell.defines)),
        "bases": json.dumps(list(cell.bases)),
        "deps": json.dumps(cell.deps),
    }
    if cell.globals_blob is not None:
        mapping["globals"] = cell.globals_blob
    if cell.late_globals_blob is not None:
        mapping["late_globals"] = cell.late_globals_blob
    if cell.prelude:
        mapping["prelude"] = cell.prelude
    if cell.module is not None:
        mapping["module"] = json.dumps([cell.module, cell.module_files])
    return mapping


def from_redis(version: str, data: dict[bytes, bytes]) -> CellVersion:
    """The cell version stored as the hash fields ``data``."""
    return CellVersion(
        version=version,
        source=data[b"source"].decode(),
        filename=data[b"filename"].decode(),
        tasks=serialization.loads(data[b"tasks"]),
        defines=tuple(json.loads(data[b"defines"])),
        bases=tuple(json.loads(data[b"bases"])),
        deps={name: tuple(ref) for name, ref in json.loads(data[b"deps"]).items()},
        globals_blob=data.get(b"globals"),
        late_globals_blob=data.get(b"late_globals"),
        prelude=data.get(b"prelude", b"").decode(),
        **_package(data.get(b"module")),
    )


def _package(field: bytes | None) -> dict[str, Any]:
    """The fields of a local package shipped whole, from its ``module`` field (see tasklab.code.modules)."""
    if field is None:
        return {}
    module, files = json.loads(field)
    return {"module": module, "module_files": files}


def _signed_content(version: str, fields: dict[str, bytes | str]) -> bytes:
    """The bytes a code version's signature covers: its version and every field, unambiguously."""
    parts = [version.encode()]
    for name in sorted(fields):
        value = fields[name]
        parts += [name.encode(), value if isinstance(value, bytes) else value.encode()]
    return b"".join(len(part).to_bytes(8, "big") + part for part in parts)


class CodeRegistry:
    """Stores and fetches cell versions, and each namespace's current task versions."""

    def __init__(self, connection: redis.Redis):
        self.connection = connection

    def push(self, cell: CellVersion, namespace: str, pipeline: redis.client.Pipeline | None = None) -> None:
        """Store ``cell`` and make it current for its task names in ``namespace``."""
        pipe = pipeline if pipeline is not None else self.connection.pipeline()
        mapping = to_redis(cell)
        mapping[SIGNATURE_FIELD] = keyring.mac(_signed_content(cell.version, mapping))
        pipe.hset(CODE_KEY.format(cell.version), mapping=mapping)
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
        signature = data.pop(SIGNATURE_FIELD.encode(), b"").decode("ascii", "replace")
        fields = {name.decode(): value for name, value in data.items()}
        keyring.check_mac(_signed_content(version, fields), signature, f"task code version {version}")
        return from_redis(version, data)

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
