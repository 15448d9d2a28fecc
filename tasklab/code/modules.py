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

A module shipped by source becomes a code version of its own, its whole file (:func:`module_cell`).
A worker runs it once, as a module of the same name that it puts in ``sys.modules`` (with the local
modules it imports, shipped the same way, loaded first), so the module keeps its meaning there:
its tasks with their decorators and names, its classes (exceptions come back as themselves, and
pickle by reference both ways), its module-level objects. A changed file makes a new version when
a task of it is first submitted in a process (edit the file, then restart the kernel or
``importlib.reload`` it, as for any module).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import site
import sys
import sysconfig
import types
from typing import Any

from .. import defaults
from ..core.task import CELL_MODULE_PREFIX
from ..errors import CellError
from . import cells
from .version import CellVersion

#: Where a module version keeps its module object among what it defines.
MODULE = "__module__"
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


_shipped: dict[str, CellVersion] = {}  # module name -> its version, made in this process


def module_cell(module_name: str) -> CellVersion:
    """The version of the local module ``module_name``: its file, and the local modules it imports as
    dependencies; made once per process, and remembered with what the module defines."""
    module = sys.modules[module_name]
    filename = module.__file__ or ""  # as its functions' code names it (see cells.defining)
    made = _shipped.get(module_name)
    if made is not None and (not made.version or _still(made, module)):
        return made
    try:
        with open(filename, encoding="utf-8") as file:
            source = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CellError(
            f"The module {module_name}, which the workers cannot import, cannot be read to be sent to them "
            f"({exc}). Install it where the workers run (pip install -e .), or name it in "
            f"${defaults.IMPORTABLE_ENV} if every worker can import it."
        ) from None
    deps: dict[str, tuple[str, str]] = {}
    _shipped[module_name] = CellVersion("", source, filename)  # an import cycle ends here
    try:
        for imported in sorted(_local_imports(source, module) - {module_name}):
            dep = module_cell(imported)
            if dep.version:  # not a module that imports this one, being made
                deps[f"{MODULE_DEP}{imported}>"] = (dep.version, MODULE)
    finally:
        del _shipped[module_name]
    digest = hashlib.sha256(f"module {module_name}\0".encode() + source.encode())
    digest.update(repr(sorted(deps.items())).encode())
    is_package = hasattr(module, "__path__")
    cell = CellVersion(
        version=digest.hexdigest()[:12],
        source=source,
        filename=filename,
        deps=deps,
        module=module_name,
        package=is_package,
    )
    _shipped[module_name] = cell
    cells.remember(cell.version, module_objects(module), cell, local=True)
    return cell


def _still(cell: CellVersion, module: types.ModuleType) -> bool:
    """Whether ``cell`` still holds ``module`` as it is: not reloaded since (which makes new objects)."""
    remembered = cells.cell_objects(cell.version)
    return remembered is not None and all(remembered.get(k) is v for k, v in module_objects(module).items())


def module_objects(module: types.ModuleType) -> dict[str, Any]:
    """What a module version defines: the module itself, and its functions, classes and tasks."""
    found: dict[str, Any] = {MODULE: module}
    for name, value in vars(module).items():
        owner = getattr(value, "__module__", None) if not isinstance(value, types.ModuleType) else None
        if owner == module.__name__:
            found[name] = value
    return found


def module_deps(source: str) -> dict[str, tuple[str, str]]:
    """The local modules that code ``source`` (a cell, a task's definition) imports, as dependencies on
    their versions: a worker loads them before it runs the code, so that its imports find them."""
    deps = {}
    for name in sorted(_local_imports(source, None, load=True)):
        deps[f"{MODULE_DEP}{name}>"] = (module_cell(name).version, MODULE)
    return deps


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
