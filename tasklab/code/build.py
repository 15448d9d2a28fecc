"""Turning a cell's definitions into registered tasks: in the kernel that ran the cell, and in
a worker that loaded it from Redis."""

from __future__ import annotations

from typing import Any

from ..core.task import Task, make_function_task
from ..errors import NotRegistered
from .identity import resolve_options
from .version import TaskSpec


def build_tasks(specs: dict[str, TaskSpec], namespace: dict[str, Any], version: str) -> dict[str, Task]:
    """Turn a cell's definitions in ``namespace`` into registered tasks.

    A function is replaced in ``namespace`` by its task object (so calling it still runs it
    locally); a Task subclass stays a class, and ``Cls.delay`` uses its registered instance.
    """
    built: dict[str, Task] = {}
    for spec in specs.values():
        if spec.kind == "function":
            base = namespace.get(spec.base) if spec.base else None
            if spec.base and base is None:
                raise NotRegistered(f"Base class {spec.base!r} of task {spec.name!r} is not defined.")
            options = resolve_options(spec.options, namespace)
            task = make_function_task(namespace[spec.attr], base=base, name=spec.name, **options)
            namespace[spec.attr] = task
        else:
            cls = namespace[spec.attr]
            for option, value in resolve_options(spec.options, namespace).items():
                if option not in cls.__dict__:  # what the class's own body sets wins over the cell's options
                    setattr(cls, option, value)
            cls._tl_instance = None
            task = cls.instance()
        cls = type(task)
        cls._tl_version, cls._tl_attr = version, spec.attr
        cls.name = spec.name
        built[spec.name] = task
    return built
