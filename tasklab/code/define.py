"""Registering a cell of code as tasks: what ``%%task`` does, as a plain function.

:func:`register_cell` checks the cell before running anything (syntax, names it uses but
does not define, options), runs it in the user's namespace, and turns its public functions
and its ``Task`` subclasses with a ``run`` into tasks. The code becomes a content-addressed
:class:`~tasklab.code.version.CellVersion`, stored in Redis by the lab at its first use.
"""

from __future__ import annotations

import linecache
from collections.abc import Callable
from typing import Any

from ..core import options as opts
from ..core.app import App
from ..core.task import Task, make_function_task
from ..errors import CellError, TaskLabError
from . import cells
from .analysis import analyze, suggest_fix
from .build import build_tasks
from .carry import carry
from .serialization import pickled
from .shipping import shipped
from .version import CellVersion, TaskSpec


def _has_run(cls: type[Task]) -> bool:
    return any("run" in klass.__dict__ for klass in cls.__mro__ if klass is not Task and klass is not object)


def _describe_places(places: list[str]) -> str:
    named = [f"`{p}`" for p in places if not p.startswith("the cell")]
    top = [p for p in places if p.startswith("the cell")]
    return " and ".join(named + top)


def register_cell(
    source: str,
    user_ns: dict[str, Any],
    options: dict[str, Any] | None = None,
    *,
    app: App | None = None,
    report: Callable[[str], None] | None = None,
) -> dict[str, Task]:
    """Run ``source`` in ``user_ns`` and register its tasks; return them by name.

    ``options`` are task options for every task of the cell (``base`` names a Task subclass
    in ``user_ns``). What the cell reads from ``user_ns`` without defining it (imports, helper
    functions and classes, values) travels with its code (see :mod:`tasklab.code.carry`), and
    ``report`` is told what was carried, in one line. Raises ``SyntaxError`` or :class:`CellError`
    before running anything if the cell cannot work on a worker; nothing is registered then. The
    tasks submit to ``app`` (which also stores the cell now, if it is connected), else to the
    default app.
    """
    options = dict(options or {})
    base_name = options.pop("base", None)
    task_options = opts.validate(options)
    name = task_options.pop("name", None)

    analysis = analyze(source, "<task cell>")
    functions = [f for f in analysis.functions if not f.startswith("_")]
    if name is not None and len(functions) != 1:
        raise CellError(
            f"--name {name} names one task, but this cell defines {len(functions)} public functions "
            f"({', '.join(functions) or 'none'}). Put the task in a cell of its own, or drop --name."
        )

    needed = dict(analysis.undefined)
    if base_name is not None and base_name not in analysis.defined:
        needed.setdefault(base_name, ["--base"])
    found = carry(needed, user_ns, dependency=shipped, defined=analysis.defined, reading=[source])
    problems = [
        f"`{used}` is used in {_describe_places(places)} but not defined in this cell or the notebook: "
        f"{suggest_fix(used, None, missing=True)}."
        for used, places in found.missing.items()
    ] + [
        f"`{used}` is used in {_describe_places(found.places[used])} but cannot be sent to the workers: {why}."
        for used, why in found.unfit.items()
    ]
    if problems:
        raise CellError(
            "This cell runs on workers, which get its code and what it uses from the notebook; nothing was "
            "registered:\n  - " + "\n  - ".join(problems)
        )
    deps = found.deps
    if base_name is not None and base_name in user_ns and base_name not in analysis.defined:
        base = user_ns[base_name]
        if not (isinstance(base, type) and issubclass(base, Task)):
            raise CellError(f"--base {base_name}: {base_name} is not a tasklab.Task subclass.")

    spec_options = dict(task_options)
    prelude = found.prelude()
    blob = pickled(found.values) if found.values else None
    carried = prelude.encode() + b"\0" + blob if blob is not None else prelude.encode()  # b"" if none
    version = CellVersion.compute_version(source, deps, {**spec_options, "base": base_name, "name": name}, carried)
    label = ",".join(functions + analysis.classes)[:40] or "cell"
    filename = f"<task {label} v{version[:7]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), user_ns)

    specs: dict[str, TaskSpec] = {}
    bases: list[str] = []
    for fn_name in functions:
        if not callable(user_ns.get(fn_name)):
            continue
        task_name = name or fn_name
        specs[task_name] = TaskSpec(task_name, "function", fn_name, base_name, spec_options)
    for cls_name in analysis.classes:
        cls = user_ns.get(cls_name)
        if isinstance(cls, type) and issubclass(cls, Task):
            try:
                opts.validate(cls.task_options(), where=f"{cls_name} class")
            except TaskLabError as exc:
                raise CellError(f"{cls_name}: {exc}") from None
            if _has_run(cls):
                task_name = cls.__dict__.get("name") or cls_name
                specs[task_name] = TaskSpec(task_name, "class", cls_name, None, spec_options)
            else:
                bases.append(cls_name)

    cell = CellVersion(
        version=version,
        source=source,
        filename=filename,
        tasks=specs,
        defines=tuple(analysis.functions + analysis.classes),
        bases=tuple(bases),
        deps=deps,
        globals_blob=blob,
        prelude=prelude,
    )
    tasks = build_tasks(specs, user_ns, version)
    for task in tasks.values():
        type(task)._tl_cell = cell
        type(task)._tl_app = app
    cells.remember(version, {n: user_ns[n] for n in cell.defines if n in user_ns}, cell, local=True)
    if app is not None:
        app.publish(cell)
    summary = found.summary()
    if summary and report is not None:
        report(f"carried from the notebook: {summary}")
    return tasks


def task(fn: Any = None, *, app: App | None = None, **options: Any) -> Any:
    """``@tasklab.task`` or ``@tasklab.task(**options)``: make a function a task, as in Celery.

    A function of an importable module ships by import path; one defined in ``__main__``
    ships by source with the imports and module-level names it uses, at its first submit.
    """
    if fn is None:
        return lambda f: task(f, app=app, **options)
    if not callable(fn) or isinstance(fn, type):
        raise CellError(f"@task decorates a function, not {fn!r}; subclass tasklab.Task for class-based tasks.")
    base = options.pop("base", None)
    name = options.pop("name", None)
    checked = opts.validate(options)
    if name is not None:
        opts.validate({"name": name})
    made = make_function_task(fn, base=base, name=name, **checked)
    type(made)._tl_app = app
    return made
