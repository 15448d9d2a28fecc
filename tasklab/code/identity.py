"""Class identity across shipping: one class object per shipped version in a worker.

A class written in the notebook or in a script's ``__main__`` cannot be imported by a worker, so
shipped code carries its source, and the worker runs it once, in the version's module. Whatever
else of that version holds the class must reach that same object there, or ``except Flaky`` and
``isinstance`` stop matching:

* a value carried by copy (a module-level object pickled by value) names a class of its own
  version by name (a pickle *persistent id*); the worker unpickles such values once the carried
  definitions have run (:func:`split_values`, :func:`load_late`);
* an option holding a class (``autoretry_for``) names it with an :class:`OwnClass` marker, which
  :func:`resolve_options` turns into the class of the namespace the task is built in;
* a class a carried value holds but the code never names is carried by source too
  (:func:`main_classes`), so that it is one of the version's own;
* once the version is known, the kernel and the worker remember these classes as the version's
  (:func:`tasklab.code.cells.remember`), so that exceptions, arguments and results holding them
  travel by reference, each side resolving it to its own class object.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .carry import Carried
from .serialization import _Pickler, _Unpickler, pickled

#: The persistent id of a class defined by the version that holds the pickle: ``(_OWN, name)``.
_OWN = "tasklab-own-class"


@dataclass(frozen=True)
class OwnClass:
    """In a task's options: the class ``name`` of the version's own code, resolved where the task is built."""

    name: str


def resolve_options(options: Mapping[str, Any], namespace: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with each :class:`OwnClass` marker replaced by that class of ``namespace``."""

    def resolve(value: Any) -> Any:
        if isinstance(value, OwnClass):
            return namespace[value.name]
        if isinstance(value, tuple):
            return tuple(resolve(item) for item in value)
        return value

    return {option: resolve(value) for option, value in options.items()}


def mark_options(options: Mapping[str, Any], own: Mapping[int, str]) -> dict[str, Any]:
    """``options`` with each class of ``own`` (``id(class) -> name``) replaced by an :class:`OwnClass` marker."""

    def mark(value: Any) -> Any:
        if isinstance(value, type) and id(value) in own:
            return OwnClass(own[id(value)])
        if isinstance(value, tuple):
            return tuple(mark(item) for item in value)
        return value

    return {option: mark(value) for option, value in options.items()}


def option_classes(options: Mapping[str, Any], namespace: Mapping[str, Any]) -> dict[str, type]:
    """The classes of ``__main__`` that ``options`` hold (``autoretry_for``), bound in ``namespace`` by their name."""
    found: dict[str, type] = {}
    for value in options.values():
        for item in value if isinstance(value, tuple) else (value,):
            if _of_main(item, namespace):
                found[item.__name__] = item
    return found


def _of_main(obj: Any, namespace: Mapping[str, Any]) -> bool:
    """Whether ``obj`` is a class of ``__main__`` that ``namespace`` binds to its own name, so that its
    source can be carried."""
    return (
        isinstance(obj, type)
        and obj.__module__ == "__main__"
        and "<locals>" not in obj.__qualname__
        and namespace.get(obj.__name__) is obj
    )


class _Sink:
    def write(self, data: bytes) -> int:
        return len(data)


def main_classes(values: Mapping[str, Any], namespace: Mapping[str, Any]) -> dict[str, type]:
    """The classes of ``__main__`` that pickling ``values`` meets (which cloudpickle would copy), by name."""
    if not values or not any(_of_main(value, namespace) for value in list(namespace.values())):
        return {}  # no class to find: the values are not pickled an extra time
    found: dict[str, type] = {}

    class Finder(_Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if _of_main(obj, namespace):
                found[obj.__name__] = obj
            return super().reducer_override(obj)

    try:
        Finder(_Sink(), protocol=pickle.HIGHEST_PROTOCOL).dump(dict(values))
    except Exception:  # what cannot be pickled is reported where the values are pickled for real
        return found
    return found


class _OwnPickler(_Pickler):
    """Pickles the classes of ``own`` (``id -> name``) as "class ``name`` of this version"."""

    def __init__(self, file: Any, own: Mapping[int, str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.own = own
        self.hits = 0

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, type):
            name = self.own.get(id(obj))
            if name is not None:
                self.hits += 1
                return (_OWN, name)
        return None


def _dump_own(values: Mapping[str, Any], own: Mapping[int, str]) -> tuple[bytes, int]:
    buffer = io.BytesIO()
    pickler = _OwnPickler(buffer, own)
    pickler.dump(dict(values))
    return buffer.getvalue(), pickler.hits


def split_values(values: Mapping[str, Any], own: Mapping[int, str]) -> tuple[bytes | None, bytes | None]:
    """``values`` pickled in two parts: those that hold no class of ``own`` (loaded before the version's
    code runs, which may read them as it defines things: a default argument, a class attribute), and
    those that do (loaded once the carried classes are defined; see :func:`load_late`)."""
    if not values:
        return None, None
    if not own:
        return pickled(dict(values)), None
    whole, hits = _dump_own(values, own)
    if not hits:
        return whole, None
    late_names = {name for name, value in values.items() if _dump_own({name: value}, own)[1]}
    early = {name: value for name, value in values.items() if name not in late_names}
    late, _ = _dump_own({name: values[name] for name in late_names}, own)
    return (pickled(early) if early else None), late


def load_late(blob: bytes, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The values of ``blob`` (made by :func:`split_values`), their own classes taken from ``namespace``."""

    class Loader(_Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            if isinstance(pid, tuple) and len(pid) == 2 and pid[0] == _OWN:
                return namespace[pid[1]]
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")

    return Loader(io.BytesIO(blob)).load()


def carry_classes(
    run_carry: Callable[[dict[str, list[str]]], Carried],
    needed: Mapping[str, list[str]],
    namespace: Mapping[str, Any],
    options: Mapping[str, Any],
) -> tuple[Carried, dict[int, str]]:
    """``run_carry(needed)``, with the classes of ``__main__`` that ``options`` or the carried values hold
    added to ``needed`` (so that they travel as source, once), and the classes carried by source:
    ``id(class) -> name``, to pickle the values and mark the options with."""
    wanted = dict(needed)
    for name in option_classes(options, namespace):
        wanted.setdefault(name, ["the task's options"])
    for _ in range(8):  # each round may carry definitions whose values hold more classes
        found = run_carry(wanted)
        carried = {name for name, kind in found.kinds.items() if kind in ("class", "task")}
        more = [name for name in main_classes(found.values, namespace) if name not in carried and name not in wanted]
        if not more:
            break
        for name in more:
            wanted[name] = ["a value it uses"]
    classes = {name: namespace.get(name) for name, kind in found.kinds.items() if kind == "class"}
    return found, {id(cls): name for name, cls in classes.items() if isinstance(cls, type)}
