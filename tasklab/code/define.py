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
from ..core.task import Task, check_task_class, check_task_name, make_function_task
from ..errors import CellError, ConfigurationError, TaskLabError
from . import cells
from .analysis import analyze, suggest_fix
from .build import build_tasks
from .carry import carry
from .identity import carry_classes, mark_options, split_values
from .modules import module_deps
from .shipping import shipped, task_definition
from .version import CellVersion, TaskSpec


def _has_run(cls: type[Task]) -> bool:
    return any("run" in klass.__dict__ for klass in cls.__mro__ if klass is not Task and klass is not object)


def _check_text(source: str) -> None:
    """:class:`CellError` if ``source`` holds a lone surrogate (``"\\ud800"`` typed or pasted as a
    character), which Python runs but no UTF-8 text can hold, so the cell could not be stored; or a
    null character, which Python 3.11 reports as a ``ValueError`` (3.12 as a ``SyntaxError``)."""
    if "\0" in source:
        line = source.count("\n", 0, source.index("\0")) + 1
        raise CellError(
            f"Line {line} of the cell holds a null character, which Python source cannot hold: write it as '\\0' "
            "inside a string literal, or remove it. Nothing was registered."
        )
    try:
        source.encode("utf-8")
    except UnicodeEncodeError as exc:
        line = source.count("\n", 0, exc.start) + 1
        column = exc.start - (source.rfind("\n", 0, exc.start) + 1) + 1
        raise CellError(
            f"Line {line}, column {column} of the cell holds a lone surrogate character, {source[exc.start]!a}, "
            "which cannot be stored as text, so the workers could not get the cell: write it as that escape "
            "inside a string literal, or remove it. Nothing was registered."
        ) from None


def _check_options_text(options: dict[str, Any]) -> None:
    for option, value in options.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigurationError(
                    f"Task option {option}={value!r} holds a lone surrogate character, which cannot be "
                    "stored: use plain text."
                ) from None


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
    before running anything if the cell cannot work on a worker (a name it needs, a lone surrogate, a
    task named like a builtin); nothing is registered then. What shows only once the cell ran (a
    task class tasklab cannot make, two tasks of one name) is refused too, and the names the cell
    bound are put back as they were. The
    tasks submit to ``app`` (which also stores the cell now, if it is connected), else to the
    default app.
    """
    options = dict(options or {})
    _check_options_text(options)
    base_name = options.pop("base", None)
    task_options = opts.validate(options)
    name = task_options.pop("name", None)
    if name is not None:
        check_task_name(name)
    _check_text(source)

    analysis = analyze(source, "<task cell>")
    functions = [f for f in analysis.functions if not f.startswith("_")]
    for function in functions:
        try:
            check_task_name(function, "The function", bound=True)
        except ConfigurationError as exc:
            raise CellError(f"{exc} Nothing was registered.") from None
    if name is not None and len(functions) != 1:
        raise CellError(
            f"--name {name} names one task, but this cell defines {len(functions)} public functions "
            f"({', '.join(functions) or 'none'}). Put the task in a cell of its own, or drop --name."
        )

    needed = dict(analysis.undefined)
    if base_name is not None and base_name not in analysis.defined:
        needed.setdefault(base_name, ["--base"])
    found, own = carry_classes(
        lambda wanted: carry(wanted, user_ns, dependency=shipped, defined=analysis.defined, reading=[source]),
        needed,
        user_ns,
        task_options,
    )
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
    deps = {**found.deps, **module_deps(source)}  # local modules the cell imports: loaded before it runs
    if base_name is not None and base_name in user_ns and base_name not in analysis.defined:
        base = user_ns[base_name]
        if not (isinstance(base, type) and issubclass(base, Task)):
            raise CellError(f"--base {base_name}: {base_name} is not a tasklab.Task subclass.")

    spec_options = mark_options(task_options, own)  # a class it carries is the version's (tasklab.code.identity)
    prelude = found.prelude()
    blob, late = split_values(found.values, own)
    carried = prelude.encode() + b"\0" + blob if blob is not None else prelude.encode()  # b"" if none
    if late is not None:
        carried += b"\0late\0" + late
    version = CellVersion.compute_version(source, deps, {**spec_options, "base": base_name, "name": name}, carried)
    label = ",".join(functions + analysis.classes)[:40] or "cell"
    filename = f"<task {label} v{version[:7]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    before = {n: user_ns.get(n, _UNSET) for n in analysis.defined}
    exec(compile(source, filename, "exec"), user_ns)
    try:
        specs, bases = _task_specs(functions, analysis.classes, user_ns, name, base_name, spec_options)
    except TaskLabError:  # the cell ran, but registers nothing: its names are bound as they were before
        for defined, value in before.items():
            if value is _UNSET:
                user_ns.pop(defined, None)
            else:
                user_ns[defined] = value
        raise

    cell = CellVersion(
        version=version,
        source=source,
        filename=filename,
        tasks=specs,
        defines=tuple(analysis.functions + analysis.classes),
        bases=tuple(bases),
        deps=deps,
        globals_blob=blob,
        late_globals_blob=late,
        prelude=prelude,
    )
    tasks = build_tasks(specs, user_ns, version)
    for task in tasks.values():
        type(task)._tl_cell = cell
        type(task)._tl_app = app
    objects = {name: user_ns[name] for name in own.values()}  # the classes it carries are the version's
    objects.update((n, user_ns[n]) for n in cell.defines if n in user_ns)
    cells.remember(version, objects, cell, local=True)
    if app is not None:
        app.publish(cell)
    summary = found.summary()
    if summary and report is not None:
        report(f"carried from the notebook: {summary}")
    return tasks


_UNSET = object()


def _task_specs(
    functions: list[str],
    classes: list[str],
    user_ns: dict[str, Any],
    name: str | None,
    base_name: str | None,
    spec_options: dict[str, Any],
) -> tuple[dict[str, TaskSpec], list[str]]:
    """The tasks a cell that has run defines, and its base classes; :class:`CellError` (nothing
    registered) for a task class tasklab could not make or run, or two tasks of one name."""
    specs: dict[str, TaskSpec] = {}
    owners: dict[str, str] = {}  # task name -> what defines it, for the message
    bases: list[str] = []

    def add(task_name: str, spec: TaskSpec, owner: str) -> None:
        if task_name in owners:
            raise CellError(
                f"Two tasks of this cell would be called {task_name!r}: {owners[task_name]} and {owner}. One name "
                "is one task: rename one of them (or change its `name`). Nothing was registered."
            )
        owners[task_name] = owner
        specs[task_name] = spec

    base = user_ns.get(base_name) if base_name is not None else None
    if isinstance(base, type) and issubclass(base, Task):
        try:
            check_task_class(base)
        except ConfigurationError as exc:
            raise CellError(f"--base {base_name}: {exc}") from None
    for fn_name in functions:
        if not callable(user_ns.get(fn_name)):
            continue
        task_name = name or fn_name
        add(task_name, TaskSpec(task_name, "function", fn_name, base_name, spec_options), f"the function {fn_name}")
    for cls_name in classes:
        cls = user_ns.get(cls_name)
        if isinstance(cls, type) and issubclass(cls, Task):
            try:
                opts.validate(cls.task_options(), where=f"{cls_name} class")
            except TaskLabError as exc:
                raise CellError(f"{cls_name}: {exc}") from None
            if _has_run(cls):
                own_name = cls.__dict__.get("name")
                try:
                    check_task_name(cls_name, "The class", bound=True)  # the name the cell binds in the notebook
                    task_name = check_task_name(own_name, f"{cls_name}.name") if own_name else cls_name
                    check_task_class(cls)
                except ConfigurationError as exc:
                    raise CellError(f"{exc} Nothing was registered.") from None
                owner = f"the class {cls_name}" + (f" (name = {task_name!r})" if own_name else "")
                add(task_name, TaskSpec(task_name, "class", cls_name, None, spec_options), owner)
            else:
                bases.append(cls_name)
    return specs, bases


def task(fn: Any = None, *, app: App | None = None, **options: Any) -> Any:
    """``@tasklab.task`` or ``@tasklab.task(**options)``: make a function a task, as in Celery.

    A function of a module the workers can import ships by import path, one of a local module with
    that module (see :mod:`tasklab.code.modules`); one defined in ``__main__`` ships by source with the
    imports and module-level names it uses, at its first submit. Decorators written below the task's
    own ship with it; a decorated function the workers could not rebuild is refused here.
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
    own_name = name if name is not None else getattr(fn, "__name__", None)
    if isinstance(own_name, str):
        check_task_name(own_name, "The task name" if name is not None else "The function")
    if getattr(fn, "__module__", None) == "__main__" and hasattr(fn, "__wrapped__"):
        task_definition(fn)  # decorated below the task: refused now if the workers could not rebuild it
    made = make_function_task(fn, base=base, name=name, **checked)
    type(made)._tl_app = app
    return made
