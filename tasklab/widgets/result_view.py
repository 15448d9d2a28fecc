"""Live views of results shown as a cell's output: a state badge for an ``AsyncResult`` (with a bar of
the progress its task reports, ``self.update_state``), and counts per state with a progress bar for a
``ResultSet`` (a ``map``, a group's results).

Each view is built once. One watcher thread, shared by all of them, refreshes the unfinished ones
every :data:`~tasklab.defaults.RESULT_BADGE_INTERVAL` seconds, setting only trait values (and only
those that changed), and forgets the finished ones, so results cost nothing once they are done. A
refresh is one read of a result's job (and one of its report while it runs), or one pipelined round
trip for a whole set, of the members not yet finished. A waiting result whose queue no live worker
serves says so, with the fix. Views are registered for display by ``%load_ext tasklab``, and by a lab made in a kernel
(:func:`show_results_live`); :func:`live_badge` and :func:`live_set_view` build them without
displaying them, for tests, or to draw a task's progress from other meta keys.
"""

from __future__ import annotations

import html
import threading
import time
from typing import Any, Protocol

import ipywidgets as w

from .. import defaults
from ..client.progress import Progress, progress_of
from ..client.result import AsyncResult, ResultSet
from ..core.states import FAILURE, READY_STATES, SUCCESS
from ..engine.reports import StateReport


class _LiveView(Protocol):
    def refresh(self) -> bool:
        """Read the result(s) once and set the widget's traits; whether nothing more will change."""
        ...

    def gone(self) -> bool:
        """Whether the view need not be refreshed any more (see :func:`_gone`)."""
        ...


#: The watcher waits at least this many times as long as its last round of reads took, so that views
#: of large sets cost it a bounded share of the kernel's time (and of the Redis the workers use).
_BUSY_FACTOR = 5

_lock = threading.Lock()
_watched: list[_LiveView] = []
_thread: threading.Thread | None = None


def show_results_live(ipython: Any) -> None:
    """Make ``ipython`` display every :class:`AsyncResult` and :class:`ResultSet` as a live view (in
    a kernel; elsewhere as its static HTML). Registered by ``%load_ext tasklab``, and by a lab made
    in a kernel."""
    formatter = ipython.display_formatter.mimebundle_formatter
    formatter.for_type(AsyncResult, lambda r: result_bundle(r, ipython))
    formatter.for_type(ResultSet, lambda rs: result_bundle(rs, ipython))


def result_bundle(result: AsyncResult | ResultSet, ipython: Any) -> dict[str, Any]:
    """In a kernel, a live view of ``result`` (its static text and HTML beside it); elsewhere the static ones."""
    if getattr(ipython, "kernel", None) is None:
        return result._repr_mimebundle_()
    if isinstance(result, ResultSet):
        view = live_set_view(result)
        static = result._shown(view.progress)
        widget: w.DOMWidget = view.widget
    else:
        badge = live_badge(result)
        widget = badge.widget
        static = {"text/plain": repr(result), "text/html": badge.label.value}
    bundle = widget._repr_mimebundle_() or {}
    bundle.update(static)  # the widget's own text/plain is its repr: "HTML(value=...)"
    return bundle


def live_view(result: AsyncResult) -> w.HTML:
    """The state text of ``result``'s live badge (see :func:`live_badge`), kept current until it is ready."""
    return live_badge(result).label


def live_badge(result: AsyncResult, current: str = "current", total: str | float = "total") -> ResultBadge:
    """A :class:`ResultBadge` of ``result``, kept current until it is ready; its bar shows the meta the
    task reports (``self.update_state``): its ``current`` key out of its ``total`` key (or out of
    ``total`` itself, a number). Shown as a cell's last value, it displays itself."""
    badge = ResultBadge(result, current, total)
    if not badge.ready:
        _watch_view(badge)
    return badge


def live_set_view(results: ResultSet) -> ResultSetView:
    """A :class:`ResultSetView` of ``results``, kept current until every member is ready."""
    view = ResultSetView(results)
    if not view.progress.ready:
        _watch_view(view)
    return view


class ResultBadge:
    """A single result's live badge: its state (``label``, an ``HTML`` widget) and, once the task
    reports progress, a bar (``bar``) and its numbers (``count``)."""

    def __init__(self, result: AsyncResult, current: str = "current", total: str | float = "total"):
        self.result = result
        self.current, self.total = current, total
        self.label = w.HTML()
        self.bar = w.FloatProgress(min=0.0, max=1.0, value=0.0, layout=w.Layout(width="200px", display="none"))
        self.count = w.HTML()
        self.widget = w.HBox([self.label, self.bar, self.count])
        self.ready = False
        self._show(*result._badge())

    def gone(self) -> bool:
        return self.label.comm is None or _gone(self.widget, self.result)

    def refresh(self) -> bool:
        if self.gone():
            return True
        self._show(*self.result._badge())
        return self.ready

    def _show(self, state: str, badge: str, report: StateReport | None) -> None:
        if badge != self.label.value:
            self.label.value = badge
        self.ready = state in READY_STATES
        pair = progress_of(report.meta, self.current, self.total) if report is not None else None
        if pair is not None:
            done, of = pair
            self.bar.max = of  # before the value, which the bar clips to its max
            self.bar.value = min(done, of)
            self.bar.layout.display = None
            count = f"&nbsp;{done:g} / {of:g}"
            if self.count.value != count:
                self.count.value = count
        elif state == SUCCESS and self.bar.layout.display is None:  # it reported progress: the bar ends full
            self.bar.value = self.bar.max
        if self.ready:
            self.bar.bar_style = "success" if state == SUCCESS else "danger" if state == FAILURE else "warning"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        bundle.update({"text/plain": repr(self.result), "text/html": self.label.value})
        return bundle


class ResultSetView:
    """A set of results as a title, a progress bar (finished of all), and one line per state with
    its count, built once; :meth:`refresh` reads the members not finished yet and sets traits."""

    def __init__(self, results: ResultSet):
        self.results = results
        self.title = w.HTML()
        self.bar = w.IntProgress(min=0, layout=w.Layout(width="300px"))
        self.done = w.HTML()
        self.lines = w.HTML()
        self.widget = w.VBox([self.title, w.HBox([self.bar, self.done]), self.lines])
        self.progress = results.progress()
        self._show()

    def gone(self) -> bool:
        return not self.results or _gone(self.widget, self.results[0])

    def refresh(self) -> bool:
        if self.gone():
            return True
        self.progress = self.results.progress(since=self.progress)
        self._show()
        return self.progress.ready

    def _show(self) -> None:
        progress: Progress = self.progress
        values = {
            self.title: f"<b>{html.escape(self.results._title())}</b>: {progress.total} tasks",
            self.done: f"&nbsp;{progress.done} / {progress.total} finished",
            self.lines: f'<div style="font-family:monospace">{progress.lines_html()}</div>',
        }
        for widget, value in values.items():
            if widget.value != value:
                widget.value = value
        self.bar.max = max(progress.total, 1)
        self.bar.value = progress.done
        self.bar.bar_style = _bar_style(progress)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        bundle.update(self.results._bundle(self.progress))
        return bundle


def _gone(widget: w.Widget, result: AsyncResult) -> bool:
    """Whether a view need not be refreshed any more: its widget was closed, or its lab shut down."""
    return widget.comm is None or bool(getattr(result.app, "_closed", False))


def _bar_style(progress: Progress) -> str:
    """As ``tqdm.notebook``: plain while running; once all are done, green if all succeeded, else red
    if any failed, else amber (some were revoked)."""
    if not progress.ready:
        return ""
    counts = progress.counts
    if counts.get(SUCCESS, 0) == progress.total:
        return "success"
    return "danger" if counts.get(FAILURE) else "warning"


def _watch_view(view: _LiveView) -> None:
    global _thread
    with _lock:
        _watched.append(view)
        if _thread is None:
            _thread = threading.Thread(target=_watch, name="tasklab-results", daemon=True)
            _thread.start()


def _watch() -> None:
    global _thread
    stop = threading.Event()
    while True:
        with _lock:
            views = list(_watched)
            if not views:
                _thread = None  # under the lock: a view added from now on starts a new watcher
                return
        started = time.monotonic()
        for view in views:
            try:
                finished = view.refresh()
            except Exception:  # Redis did not answer this time (tried again), or the lab was shut down
                finished = view.gone()
            if finished:
                with _lock:
                    _watched.remove(view)
        stop.wait(max(defaults.RESULT_BADGE_INTERVAL, _BUSY_FACTOR * (time.monotonic() - started)))
