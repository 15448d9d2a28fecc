"""A live state badge for an ``AsyncResult`` shown as a cell's output.

Every displayed result gets a small ``HTML`` widget. One watcher thread, shared by all of
them, reads the statuses of the unfinished ones in one pipelined round trip about twice a
second, updates the widgets whose state changed, and forgets the finished ones, so a page
of results costs one read per tick and nothing once they are done.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import ipywidgets as w

_INTERVAL = 0.5
_lock = threading.Lock()
_watched: weakref.WeakKeyDictionary[w.HTML, Any] = weakref.WeakKeyDictionary()
_thread: threading.Thread | None = None


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
        stop.wait(_INTERVAL)
