"""``%load_ext tasklab``: the magics, and how tasklab's objects display in a notebook."""

from __future__ import annotations

import linecache
import os
import sys
import traceback
from typing import Any

from matplotlib.figure import Figure

from ..client.result import AsyncResult, ResultSet
from ..diagnostics.plots import to_png
from ..errors import TaskError, TaskLabError
from ..lab import current_lab_or_none
from ..widgets.result_view import show_results_live
from .magics import TaskLabMagics


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%task`` and ``%tasklab``, and show tasklab's own errors in one line; nothing
    starts until used."""
    ipython.register_magics(TaskLabMagics)
    ipython.set_custom_exc((TaskLabError,), show_in_one_line)
    formatters = ipython.display_formatter.formatters
    # tasklab's plots are plain matplotlib Figures (no pyplot): show them as images without %matplotlib.
    formatters["image/png"].for_type(Figure, lambda fig: to_png(fig, dpi=100))
    show_results_live(ipython)


def show_in_one_line(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> None:
    """IPython's handler of a :class:`TaskLabError` raised in a cell: its message (which says what to
    do) and the user's line that raised it, instead of a traceback through tasklab, RQ and redis-py.
    ``%tb`` shows the whole traceback. A task's own failure (:class:`TaskError`) keeps its traceback."""
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb  # for %tb
    if sys.version_info >= (3, 12):
        sys.last_exc = value
    if isinstance(value, TaskError):
        stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    else:
        stb = [f"{etype.__name__}: {value}"]
        where = _users_line(tb)
        if where:
            stb.append(where)
        stb.append("(%tb shows the whole traceback)")
    shell._showtraceback(etype, value, stb)  # as IPython shows any error: ipykernel sends it as one


def _users_line(tb: Any) -> str:
    """``"line N: <source>"`` of the deepest frame in the notebook's own code (not a library's)."""
    found = ""
    for frame, lineno in traceback.walk_tb(tb):
        filename = frame.f_code.co_filename
        if _is_library(filename):
            continue
        line = linecache.getline(filename, lineno).strip()
        found = f"  line {lineno}: {line}" if line else f"  line {lineno}"
    return found


def _is_library(filename: str) -> bool:
    return filename.startswith(_LIBRARY_DIRS) or filename.startswith("<frozen")


_LIBRARY_DIRS = tuple(
    {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}  # tasklab itself
    | {path for path in sys.path if "site-packages" in path or "dist-packages" in path}
    | {os.path.dirname(os.__file__)}  # the standard library
)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics, and stop what tasklab started for this kernel."""
    manager = ipython.magics_manager
    manager.magics["cell"].pop("task", None)
    manager.magics["line"].pop("tasklab", None)
    manager.registry.pop("TaskLabMagics", None)
    for shown_live in (AsyncResult, ResultSet):
        ipython.display_formatter.mimebundle_formatter.pop(shown_live, None)
    if TaskLabError in ipython.custom_exceptions:
        ipython.set_custom_exc((), None)
    lab = current_lab_or_none()
    if lab is not None:
        lab.shutdown()
