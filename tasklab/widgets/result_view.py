"""A live state badge for an ``AsyncResult`` shown as a cell's output.

Every displayed result gets a small ``HTML`` widget. One watcher thread, shared by all of
them, reads the state of each unfinished one every :data:`~tasklab.defaults.RESULT_BADGE_INTERVAL`
seconds (a read of its job per result), updates the widgets whose state changed, and forgets
the finished ones, so results cost nothing once they are done. It is registered for display by
``%load_ext tasklab``, and by a lab made in a kernel (:func:`show_results_live`).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import ipywidgets as w

from .. import defaults
from ..client.result import AsyncResult

_lock = threading.Lock()
_watched: weakref.WeakKeyDictionary[w.HTML, Any] = weakref.WeakKeyDictionary()
_thread: threading.Thread | None = None


def show_results_live(ipython: Any) -> None:
    """Make ``ipython`` display every :class:`AsyncResult` as a live badge (in a kernel; elsewhere
    as its static HTML). Registered by ``%load_ext tasklab``, and by a lab made in a kernel."""
    ipython.display_formatter.mimebundle_formatter.for_type(AsyncResult, lambda r: result_bundle(r, ipython))


def result_bundle(result: AsyncResult, ipython: Any) -> dict[str, Any]:
    """In a kernel, a live state badge of ``result`` (static HTML beside it); elsewhere the static HTML."""
    bundle = result._repr_mimebundle_()
    if getattr(ipython, "kernel", None) is not None:
        bundle.update(live_view(result)._repr_mimebundle_() or {})
        bundle["text/html"] = result._repr_html_()
    return bundle


def live_view(result: Any) -> w.HTML:
    """An ``HTML`` widget showing ``result``'s state, kept current until it is ready."""
    global _thread
    view = w.HTML(result._repr_html_())
    if not result.ready():
        with _lock:
            _watched[view] = result
            if _thread is None or not _thread.is_alive():
                _thread = threading.Thread(target=_watch, name="tasklab-results", daemon=True)
                _thread.start()
    return view


def _watch() -> None:
    stop = threading.Event()
    while True:
        with _lock:
            pending = list(_watched.items())
        if not pending:
            return
        for view, result in pending:
            try:
                html = result._repr_html_()
            except Exception:  # the lab was shut down: stop watching this one
                html = None
            if html is None or result.ready():
                with _lock:
                    _watched.pop(view, None)
            if html is not None and html != view.value:
                view.value = html
        stop.wait(defaults.RESULT_BADGE_INTERVAL)
