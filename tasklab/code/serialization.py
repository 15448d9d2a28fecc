"""How arguments, results and exceptions travel: cloudpickle, with cell classes by reference.

Objects of types defined in the notebook (or a script's ``__main__``) can't be pickled by
reference, because a worker can't import ``__main__``. cloudpickle pickles such types by
value, which gives the worker a *copy* of the class: ``isinstance`` against the task cell's
own class would then fail. Classes defined in a task cell are instead pickled as "class
``Point`` of cell version ``3f2a1c``", and each side resolves that to its own class object:
the kernel to the one it executed, a worker to the one it loaded from Redis.
"""

from __future__ import annotations

import _io
import importlib
import io
import pickle
import re
import sys
from typing import Any

import cloudpickle

from ..core.signing import JOB, RESULT, keyring
from ..core.task import Task
from ..errors import SerializationError
from . import cells


def load_cell_object(version: str, name: str) -> Any:
    """Unpickling helper: object ``name`` defined by cell ``version`` in this process."""
    return cells.objects(version)[name]


def load_task(version: str, attr: str) -> Any:
    """Unpickling helper: the task that cell ``version`` binds to ``attr``, in this process."""
    obj = cells.objects(version)[attr]
    return obj.instance() if isinstance(obj, type) and issubclass(obj, Task) else obj


#: In-memory streams: their data is their state, so a copy is what the other side should get.
_IN_MEMORY = (io.BytesIO, io.StringIO)


def _open_file(obj: Any) -> bool:
    """Whether ``obj`` is a stream on a file, pipe or socket: not one in memory, nor this process's
    stdout or stderr (which cloudpickle sends as "the other process's own")."""
    # _io._IOBase, the C base of every stream, is a cheaper check than the ABC io.IOBase: this runs
    # for every object that is not a plain one.
    return (
        isinstance(obj, _io._IOBase)
        and not isinstance(obj, _IN_MEMORY)
        and obj is not sys.stdout
        and obj is not sys.stderr
    )


class _Pickler(cloudpickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, Task):
            return _reduce_task(obj)
        if _open_file(obj):  # cloudpickle would send a copy of what is left to read, or fail on a pipe
            raise SerializationError(
                f"it is an open file ({getattr(obj, 'name', '?')!r}), which another process cannot use: pass its "
                "path and open the file inside the task"
            )
        ref = cells.reference(obj)
        if ref is not None:
            return load_cell_object, ref
        return super().reducer_override(obj)


def _reduce_task(task: Task) -> Any:
    """A task travels as "the task ``attr`` of cell ``version``", resolved on the other side."""
    if task._tl_version is None or task._tl_attr is None:
        raise SerializationError(
            f"{task!r} is not registered, so it cannot be sent to a worker; define it in a %%task cell or with "
            "@tasklab.task."
        )
    return load_task, (task._tl_version, task._tl_attr)


#: Types pickled by the standard pickler directly: the same bytes, without cloudpickle's setup.
_PLAIN = frozenset({type(None), bool, int, float, str, bytes})


def dumps(obj: Any, context: bytes = JOB) -> bytes:
    """``obj`` pickled and signed with this process's key for ``context`` (see :mod:`tasklab.core.signing`):
    :data:`~tasklab.core.signing.JOB` for what is sent to be run, ``RESULT`` for what comes back."""
    return keyring.sign(pickled(obj), context)


def _plain(obj: Any, depth: int = 3) -> bool:
    """Whether ``obj`` is a plain value, or a small tuple, list or dict of them (nested up to
    ``depth`` deep): the standard pickler gives what cloudpickle would, without cloudpickle's setup."""
    kind = type(obj)
    if kind in _PLAIN:
        return True
    if kind not in (tuple, list, dict) or depth == 0 or len(obj) > 64:
        return False
    if kind is dict:
        return all(type(key) is str and _plain(value, depth - 1) for key, value in obj.items())
    return all(_plain(item, depth - 1) for item in obj)


#: Pickle opcodes: FRAME, and the size of the framing of a pickle made of one frame (PROTO and FRAME).
_FRAME, _ONE_FRAME = 0x95, 11


def _unframed(data: bytes) -> bytes:
    """``data``, a pickle of one frame, without its FRAME opcode: 9 bytes less for each stored job's
    payload and meta. Framing is optional (PEP 3154): it spares a reader of a stream one read per
    opcode, and these are read from memory (see :func:`unpickled`)."""
    if len(data) > _ONE_FRAME and data[2] == _FRAME and int.from_bytes(data[3:11], "little") == len(data) - _ONE_FRAME:
        return data[:2] + data[_ONE_FRAME:]
    return data


def pickled(obj: Any) -> bytes:
    """``obj`` pickled as :func:`dumps` does, unsigned: for what is signed as a part of a whole (the
    values a code version carries, covered by the version's signature)."""
    if _plain(obj):
        return _unframed(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    except (RecursionError, pickle.PicklingError) as exc:
        # cloudpickle turns the RecursionError into a PicklingError that names no object.
        if not isinstance(exc, RecursionError) and not isinstance(exc.__cause__, RecursionError):
            raise
        raise SerializationError(
            f"it is nested too deeply to be serialised (Python stops at about {sys.getrecursionlimit()} levels of "
            "lists, dicts or objects inside one another): pass it flatter, such as a list of rows, or build it "
            "inside the task"
        ) from None
    return _unframed(buffer.getvalue())


#: Modules whose objects pickles made before tasklab's packages name, and where they are now
#: (arguments, results, exceptions and code versions stay in Redis across an upgrade).
_MOVED: dict[str, tuple[str, ...]] = {
    "tasklab.registry": ("tasklab.code.version",),
    "tasklab.task": ("tasklab.core.task", "tasklab.core.request"),
    "tasklab.serialization": ("tasklab.code.serialization",),
    "tasklab.options": ("tasklab.core.options",),
    "tasklab.retries": ("tasklab.core.retries",),
    "tasklab.result": ("tasklab.client.result",),
    "tasklab.canvas": ("tasklab.core.signatures", "tasklab.client.workflow.results"),
}
_RENAMED = {("tasklab.task", "_registered_task"): ("tasklab.code.serialization", "load_task")}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        renamed = _RENAMED.get((module, name))
        if renamed is not None:
            module, name = renamed
        elif module in _MOVED:
            for new in _MOVED[module]:
                found = getattr(importlib.import_module(new), name, None)
                if found is not None:
                    return found
        return super().find_class(module, name)


#: The modules of :data:`_MOVED` and :data:`_RENAMED` as a pickle spells them: a pickle that names none of
#: them has nothing to find elsewhere.
_OLD_MODULES = re.compile(b"|".join(re.escape(m.encode()) for m in sorted({*_MOVED, *(m for m, _ in _RENAMED)})))


def loads(data: bytes, what: str = "data read from Redis") -> Any:
    """Unpickle ``data`` once its signature is checked (else :class:`~tasklab.errors.SignatureError`
    naming ``what``); objects pickled before tasklab's packages are found where they are now."""
    return unpickled(keyring.unsign(data, what))


def unpickled(data: bytes) -> Any:
    """Unpickle ``data`` made by :func:`pickled`, once the signature of the whole it came in was
    checked (a code version's, see :meth:`tasklab.code.store.CodeRegistry.fetch`). A pickle that
    names no moved module is read by the standard unpickler from memory: about six times faster for
    a job's payload than :class:`_Unpickler` on a stream, which reads an unframed pickle (see
    :func:`_unframed`) one opcode at a time."""
    if _OLD_MODULES.search(data):
        return _Unpickler(io.BytesIO(data)).load()
    return pickle.loads(data)


class Serializer:
    """The serializer of every tasklab job (RQ's ``serializer=``): job payloads, meta and results
    are signed, and checked before they are unpickled."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return dumps(obj, JOB)

    @staticmethod
    def loads(data: bytes) -> Any:
        return loads(data, "a job's payload or result")


class ResultSerializer(Serializer):
    """The serializer of a job once a worker has read it: what it writes (results, meta) is signed
    as a result, which no worker runs as a job (see :data:`tasklab.core.signing.RESULT`)."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return dumps(obj, RESULT)


def describe_unpicklable(args: tuple, kwargs: dict, names: list[str] | None = None) -> str | None:
    """Which argument can't be serialised and why, or ``None`` if all can."""
    labelled = [
        (f"argument {names[i]!r}" if names and i < len(names) else f"positional argument {i}", value)
        for i, value in enumerate(args)
    ] + [(f"keyword argument {key!r}", value) for key, value in kwargs.items()]
    for label, value in labelled:
        try:
            dumps(value)
        except Exception as exc:
            kind = f"{type(value).__module__}.{type(value).__qualname__}"
            return f"{label} (a {kind}) cannot be serialised: {exc}"
    return None
