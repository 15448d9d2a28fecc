"""``%load_ext tasklab``: the magics, and how tasklab's objects display in a notebook."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from ..client.result import AsyncResult
from ..diagnostics.plots import to_png
from ..lab import current_lab_or_none
from ..widgets.result_view import show_results_live
from .magics import TaskLabMagics


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%task`` and ``%tasklab``; nothing starts until used."""
    ipython.register_magics(TaskLabMagics)
    formatters = ipython.display_formatter.formatters
    # tasklab's plots are plain matplotlib Figures (no pyplot): show them as images without %matplotlib.
    formatters["image/png"].for_type(Figure, lambda fig: to_png(fig, dpi=100))
    show_results_live(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics, and stop what tasklab started for this kernel."""
    manager = ipython.magics_manager
    manager.magics["cell"].pop("task", None)
    manager.magics["line"].pop("tasklab", None)
    manager.registry.pop("TaskLabMagics", None)
    ipython.display_formatter.mimebundle_formatter.pop(AsyncResult, None)
    lab = current_lab_or_none()
    if lab is not None:
        lab.shutdown()
