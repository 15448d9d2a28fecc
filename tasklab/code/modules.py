"""Local modules, shipped whole by source: what Dask's ``Client.upload_file`` does, without asking.

A task written in a module next to the notebook or the script (``mytasks.py``) is importable here,
but a worker on another host, or started in another directory, cannot import it. tasklab decides
once per module whether the workers can import it (:func:`importable_by_workers`):

* **by import path** when its file is under ``site-packages`` (or ``dist-packages``) or the
  standard library, when an installed distribution provides its top-level package (``pip install -e .``
  included), or when ``$TASKLAB_IMPORTABLE`` names it or a package above it (a directory that every
  worker has on its ``PYTHONPATH``, say);
* **by source** otherwise: a module in the working directory, in the script's directory, or on a
  ``sys.path`` entry of this process only.

A module shipped by source travels with its whole top-level package, every module of it loaded
here (its modules import one another), as one code version (:func:`module_cell`); other local
packages it imports are versions it depends on. A worker imports those modules under their own
names from the shipped source (:class:`ShippedModules`, a finder ahead of its own), once, so they
keep their meaning there: their tasks with their decorators and names, their classes (exceptions
come back as themselves, and pickle by reference both ways), their module-level objects; their
top-level code runs there as an import runs it. A changed file makes a new version when a task of
it is next submitted after the module was reloaded (``importlib.reload``, or a new kernel).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import linecache
import os
import site
import sys
import sysconfig
import threading
import types
from typing import Any

from .. import defaults
from ..core.task import CELL_MODULE_PREFIX, Task, default_name
from ..errors import CellError
from . import cells
from .version import CellVersion, TaskSpec

#: The prefix of a dependency on a module version, in a version's ``deps``: it binds no name.
MODULE_DEP = "<module "


@functools.lru_cache(maxsize=1)
def _installed_dirs() -> tuple[str, ...]:
    dirs = {*site.getsitepackages(), site.getusersitepackages()}
    paths = sysconfig.get_paths()
    dirs |= {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    return tuple(os.path.realpath(d) + os.sep for d in dirs if d)


@functools.lru_cache(maxsize=1)
def _distributed_packages() -> frozenset[str]:
    """Top-level packages that installed distributions provide (read once: it takes a second)."""
    return frozenset(importlib.metadata.packages_distributions())


def _named_importable(module_name: str) -> bool:
    names = [n.strip() for n in os.environ.get(defaults.IMPORTABLE_ENV, "").split(",") if n.strip()]
    return any(module_name == n or module_name.startswith(n + ".") for n in names)


@functools.lru_cache(maxsize=512)
def importable_by_workers(module_name: str) -> bool:
    """Whether a worker can be expected to import ``module_name`` itself (see the module's docstring)."""
    top = module_name.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names or top == "tasklab":
        return True
    if _named_importable(module_name):
        return True
    module = sys.modules.get(module_name)
    filename = getattr(module, "__file__", None)
    if not isinstance(filename, str) or not filename.endswith(".py"):
        return True  # compiled, frozen or a namespace package: its source cannot travel
    path = os.path.realpath(filename)
    if path.startswith(_installed_dirs()) or f"{os.sep}site-packages{os.sep}" in path:
        return True
    return top in _distributed_packages()


def ships_by_source(obj: Any) -> str | None:
    """The name of the local module ``obj`` (a module, or a function or class of one) is to ship with, or ``None``."""
    if isinstance(obj, types.ModuleType):
        name: Any = obj.__name__
    elif isinstance(obj, types.FunctionType | type):
        name = getattr(obj, "__module__", None)
        if "<locals>" in getattr(obj, "__qualname__", "<locals>"):
            return None
    else:
        return None
    if not isinstance(name, str) or name == "__main__" or name.startswith(CELL_MODULE_PREFIX):
        return None  # ``__main__``'s code travels definition by definition (see tasklab.code.carry)
    if name in sys.modules and not importable_by_workers(name):
        return name
    return None


_shipped: dict[str, CellVersion] = {}  # top-level local module -> its version, made in this process
_lock = threading.RLock()


def module_key(module_name: str, attr: str | None = None) -> str:
    """The name of a module of a shipped package (``attr`` None), or of what it defines, among what
    the package's version defines: ``module:pkg.jobs``, ``pkg.jobs.add``."""
    return f"module:{module_name}" if attr is None else f"{module_name}.{attr}"


def module_cell(module_name: str) -> CellVersion:
    """The version of the local module ``module_name`` and of every module of its top-level package
    loaded here that ships by source too (a package travels whole: its modules import one another),
    with the other local packages they import as dependencies; made once per process (again after a
    reload), and remembered with what its modules define."""
    with _lock:  # submits from several threads make it once
        return _module_cell(module_name)


def _module_cell(module_name: str) -> CellVersion:
    top = module_name.partition(".")[0]
    members = {
        name: module
        for name, module in list(sys.modules.items())
        if (name == top or name.startswith(top + ".")) and module is not None and ships_by_source(module)
    }
    made = _shipped.get(top)
    if made is not None and (not made.version or _still(made, members)):
        return made
    files: dict[str, list[Any]] = {}
    for name, module in sorted(members.items()):
        filename = module.__file__ or ""  # as its functions' code names it (see cells.defining)
        try:
            with open(filename, encoding="utf-8") as file:
                files[name] = [filename, hasattr(module, "__path__"), file.read()]
        except (OSError, UnicodeDecodeError) as exc:
            raise CellError(
                f"The module {name}, which the workers cannot import, cannot be read to be sent to them "
                f"({exc}). Install it where the workers run (pip install -e .), or name it in "
                f"${defaults.IMPORTABLE_ENV} if every worker can import it."
            ) from None
    deps: dict[str, tuple[str, str]] = {}
    _shipped[top] = CellVersion("", "", "")  # an import cycle between local packages ends here
    try:
        imported = set().union(*(_local_imports(files[n][2], members[n]) for n in files))
        for other in sorted({name.partition(".")[0] for name in imported} - {top}):
            dep = module_cell(other)
            if dep.version:  # not a package that imports this one, being made
                deps[f"{MODULE_DEP}{other}>"] = (dep.version, module_key(other))
    finally:
        del _shipped[top]
    digest = hashlib.sha256(json.dumps([top, files], sort_keys=True).encode())
    digest.update(repr(sorted(deps.items())).encode())
    objects: dict[str, Any] = {}
    for module in members.values():
        objects.update(module_objects(module))
    cell = CellVersion(
        version=digest.hexdigest()[:12],
        source="",
        filename=files[top][0] if top in files else f"<package {top}>",
        tasks=_tasks(objects),
        deps=deps,
        module=top,
        module_files=files,
    )
    _shipped[top] = cell
    cells.remember(cell.version, objects, cell, local=True)
    return cell


def _tasks(objects: dict[str, Any]) -> dict[str, TaskSpec]:
    """The tasks among a package's ``objects``, by name: the lab makes them current under their names."""
    found = {}
    for key, value in objects.items():
        cls = value if isinstance(value, type) else type(value)
        if issubclass(cls, Task) and cls.has_run() and "<locals>" not in cls.__qualname__:
            name = cls.name or default_name(cls)
            found[name] = TaskSpec(name, "module", key)
    return found


def _still(cell: CellVersion, members: dict[str, types.ModuleType]) -> bool:
    """Whether ``cell`` still holds the modules ``members`` as they are: none added, none reloaded since
    (which makes new objects)."""
    remembered = cells.cell_objects(cell.version)
    if remembered is None or set(members) != set(cell.module_files):
        return False
    return all(remembered.get(k) is v for module in members.values() for k, v in module_objects(module).items())


def module_objects(module: types.ModuleType) -> dict[str, Any]:
    """What a module of a shipped package defines, by :func:`module_key`: the module itself, and its
    functions, classes and tasks."""
    found: dict[str, Any] = {module_key(module.__name__): module}
    for name, value in vars(module).items():
        owner = getattr(value, "__module__", None) if not isinstance(value, types.ModuleType) else None
        if owner == module.__name__:
            found[module_key(module.__name__, name)] = value
    return found


def module_deps(source: str) -> dict[str, tuple[str, str]]:
    """The local modules that code ``source`` (a cell, a task's definition) imports, as dependencies on
    their versions: a worker loads them before it runs the code, so that its imports find them."""
    deps = {}
    for name in sorted(_local_imports(source, None, load=True)):
        top = name.partition(".")[0]
        deps[f"{MODULE_DEP}{top}>"] = (module_cell(name).version, module_key(top))
    return deps


class ShippedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """In a worker: imports the modules of a shipped package from their shipped source (its files
    are not on this host). ``files``: module name -> ``[filename, is_package, source]``."""

    def __init__(self, files: dict[str, list[Any]]) -> None:
        self.files = files

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        found = self.files.get(fullname)
        if found is None:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=found[0], is_package=bool(found[1]))

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        filename, _, source = self.files[module.__name__]
        module.__file__ = filename
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        exec(compile(source, filename, "exec"), module.__dict__)

    def get_source(self, fullname: str) -> str | None:
        found = self.files.get(fullname)
        return found[2] if found is not None else None


def _load_if_local(name: str) -> None:
    """Import ``name`` now if it is a local module not imported yet (a cell that imports it has not run
    yet), so that it can be shipped; anything else is left to the code's own import."""
    if name in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return
    origin = getattr(spec, "origin", None)
    if not isinstance(origin, str) or not origin.endswith(".py") or name.partition(".")[0] in sys.stdlib_module_names:
        return
    path = os.path.realpath(origin)
    if path.startswith(_installed_dirs()) or _named_importable(name):
        return
    try:
        importlib.import_module(name)
    except Exception:  # the code's own import says what is wrong, where the user expects it
        return


def _local_imports(source: str, module: types.ModuleType | None, *, load: bool = False) -> set[str]:
    """The modules ``source`` (of ``module``, for relative imports) imports that ship by source too,
    and their packages; ``load``: importing those not imported yet (else they are left out)."""
    if module is None:
        package = ""
    else:
        package = module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                names.update(".".join(parts[: i + 1]) for i in range(len(parts)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and not package:
                continue
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    if module is not None:
        parents = module.__name__.split(".")
        names.update(".".join(parents[: i + 1]) for i in range(len(parents) - 1))  # its packages first
    if load:
        for name in sorted(names, key=lambda n: n.count(".")):
            _load_if_local(name)
    return {name for name in names if name in sys.modules and ships_by_source(sys.modules[name])}
