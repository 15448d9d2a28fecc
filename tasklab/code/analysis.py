"""What a cell defines and what it needs, read from its source before anything runs.

A worker runs a cell's source in a fresh module, so every name the code reads must be
defined by the cell, imported by it, a builtin, or a task or base class tasklab can supply
from another registered cell. :func:`analyze` finds the rest, and :func:`suggest_fix`
words the fix from what the user's namespace holds under that name.
"""

from __future__ import annotations

import ast
import builtins
import symtable
import types
from dataclasses import dataclass, field
from typing import Any

_MODULE_NAMES = {"__name__", "__doc__", "__file__", "__builtins__", "__spec__", "__loader__", "__package__"}
#: Python's builtins, without those IPython adds while a cell runs (``display``, ``get_ipython``), which
#: a worker does not have.
_BUILTINS = (set(dir(builtins)) - {"display", "get_ipython", "__IPYTHON__"}) | _MODULE_NAMES


@dataclass
class CellAnalysis:
    """The top-level definitions of a cell and the names it reads without defining."""

    tree: ast.Module
    functions: list[str] = field(default_factory=list)  # every top-level ``def``, in order
    classes: list[str] = field(default_factory=list)  # every top-level ``class``, in order
    defined: set[str] = field(default_factory=set)  # every name bound at top level
    undefined: dict[str, list[str]] = field(default_factory=dict)  # name -> where it is read


def _walk_tables(table: symtable.SymbolTable, owner: str) -> list[tuple[symtable.SymbolTable, str]]:
    found = []
    for child in table.get_children():
        found.append((child, owner))
        found.extend(_walk_tables(child, owner))
    return found


def analyze(source: str, filename: str = "<cell>") -> CellAnalysis:
    """Parse ``source`` (raising ``SyntaxError`` as Python would) and list what it defines and needs."""
    tree = ast.parse(source, filename)
    top = symtable.symtable(source, filename, "exec")
    result = CellAnalysis(tree=tree)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            result.functions.append(node.name)
        elif isinstance(node, ast.ClassDef):
            result.classes.append(node.name)
    result.defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    result.defined |= {s.get_name() for s in top.get_symbols() if s.is_namespace()}

    def note(name: str, where: str) -> None:
        if name not in result.defined and name not in _BUILTINS:
            places = result.undefined.setdefault(name, [])
            if where not in places:
                places.append(where)

    for symbol in top.get_symbols():
        if symbol.is_referenced():
            note(symbol.get_name(), "the cell's top level")
    for child in top.get_children():
        for table, owner in [(child, child.get_name()), *_walk_tables(child, child.get_name())]:
            for symbol in table.get_symbols():
                if symbol.is_referenced() and symbol.is_global():
                    note(symbol.get_name(), owner)
    return result


def suggest_fix(name: str, value: Any, missing: bool) -> str:
    """How to make ``name`` available to the cell, judged from the user's ``value`` for it."""
    if missing:
        return f"define `{name}` in this cell, or import it there"
    if isinstance(value, types.ModuleType):
        module = value.__name__
        if module == name:
            return f"add `import {module}` to the cell"
        if "." in module and module.rsplit(".", 1)[1] == name:
            package, leaf = module.rsplit(".", 1)
            return f"add `from {package} import {leaf}` to the cell"
        return f"add `import {module} as {name}` to the cell"
    defined_in = getattr(value, "__module__", None)
    if defined_in and defined_in not in ("__main__", "builtins") and getattr(value, "__qualname__", None) == name:
        return f"add `from {defined_in} import {name}` to the cell"
    return f"define `{name}` in this cell (the workers only get this cell's code)"
