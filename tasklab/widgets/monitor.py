"""The live monitor: one ipywidgets widget with task counts by state, a progress bar per task,
the running tasks, recent attempts, workers (CPU and memory of those on this host), queues
(marking those no live worker serves), plots.

It is built once and displayed once; a background thread then only sets trait values, about
twice a second, and renders the plots to PNG bytes for ``Image`` widgets at a slower pace
(drawing or displaying from a thread is not reliable in Jupyter). One refresh reads running
totals kept in Redis (see :mod:`tasklab.engine.events`), not the history, so it costs the same
however many tasks ran before; where the unfinished tasks stand is kept from the events that are
new (see :mod:`tasklab.diagnostics.live`). A stopped monitor says so and greys its controls; its
*restart* button starts it again. ``lab.monitor(display=False)`` (or ``Monitor(lab)``) builds it
without showing or starting it, for tests and scripts: :meth:`refresh` then updates it on the
caller's thread.
"""

from __future__ import annotations

import base64
import html
import threading
import time
from typing import Any

import ipywidgets as w
import numpy as np
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry
from rq.worker import Worker as RQWorker

from .. import defaults
from ..client.progress import running_progress, unserved_hint, unserved_queues
from ..client.result import AsyncResult
from ..code.loader import task_for
from ..code.serialization import Serializer
from ..diagnostics.frames import fold
from ..diagnostics.live import LiveTasks
from ..diagnostics.plots import (
    CSS_DPI,
    SMALL_SIZE,
    STREAM_SIZE,
    runtime_distribution,
    task_stream,
    throughput,
    to_png,
    to_svg,
)
from ..diagnostics.stream import read_recent_columns
from ..engine import events, keys
from ..engine.leases import LEASES
from ..local.status import ProcessUsage
from . import views
from .views import STATES, badge

_EVENT_STATE = {events.SUCCEEDED: "SUCCESS", events.FAILED: "FAILURE", events.RETRY: "RETRY",
                events.DUPLICATE: "DUPLICATE",
                events.REVOKED: "REVOKED", events.LOST: "LOST", events.STARTED: "STARTED",
                events.SUBMITTED: "PENDING"}  # fmt: skip
#: Seconds of its lease a tasklab worker has left when it has missed two renewals: shown as stale.
_STALE_LEASE_S = max(defaults.LEASE_TTL - 2.0, 0.5)
#: Events that finish a task, and those that end an attempt.
_FINISHED = (events.SUCCEEDED, events.FAILED, events.REVOKED, events.LOST)
_ATTEMPT_ENDS = (events.SUCCEEDED, events.FAILED, events.RETRY, events.REVOKED, events.LOST)


class Monitor:
    """A live view of one lab. ``tasklab.monitor()`` makes and shows one."""

    def __init__(
        self,
        lab: Any,
        *,
        interval: float = defaults.MONITOR_INTERVAL,
        plot_interval: float = defaults.MONITOR_PLOT_INTERVAL,
        plots: bool = True,
        interactive: bool | None = None,
    ):
        self.lab = lab
        self.interval = interval
        self.plot_interval = plot_interval
        self.with_plots = plots
        #: Whether the task stream is an interactive figure (ipympl: zoom, pan, click an attempt);
        #: by default, when ipympl is installed. Otherwise, and in snapshots, it is an image.
        self.interactive = _has_ipympl() if interactive is None else interactive
        self.data: dict[str, Any] = {}
        #: What the monitor is doing: "idle" (built, not started), "running", "stopped", "lab stopped".
        self.status = "idle"
        self.stopped_at: float | None = None
        self.live = LiveTasks(lab.connection, lab.namespace)
        self.usage = ProcessUsage()
        self._stop = threading.Event()
        self._refreshing = threading.RLock()
        self._thread: threading.Thread | None = None
        self._last_plot = 0.0
        self._figures: dict[str, Any] = {}
        self._plotted: tuple[Any, Any] | None = None  # the latest event and window the plots were drawn for
        self._build()

    # -- the widget, built once --

    def _build(self) -> None:
        self.header = w.HTML()
        self.counts = {state: w.HTML(layout=w.Layout(margin="0 6px")) for state in STATES}
        self.attempts = w.HTML(layout=w.Layout(margin="0 6px"))
        self.tasks = w.HTML()
        self.running = w.HTML()
        self.recent = w.Select(options=[], rows=8, layout=w.Layout(width="100%"))
        self.details = w.HTML()
        self.workers = w.HTML()
        self.queues = w.HTML()
        button = lambda text, **kw: w.Button(description=text, layout=w.Layout(width="auto"), **kw)  # noqa: E731
        self.add_worker = button("+ worker")
        self.remove_worker = button("- worker")
        self.revoke_button = button("revoke", button_style="warning")
        self.retry_current = button("retry (current code)")
        self.retry_original = button("retry (original code)")
        self.purge_button = button("purge finished")
        self.close_button = button("stop monitor")
        self.restart_button = button("restart monitor", button_style="info", disabled=True)
        #: The controls that act on the lab: greyed while the monitor is stopped.
        self.controls = [self.add_worker, self.remove_worker, self.revoke_button, self.retry_current,
                         self.retry_original, self.purge_button, self.close_button]  # fmt: skip
        self.message = w.HTML()
        # Each image is shown at its figure's size (and no wider than the output), its height
        # following from its width: SVG, sharp at any pixel ratio.
        sized = lambda size: w.Layout(  # noqa: E731
            width=f"{round(size[0] * CSS_DPI)}px", max_width="100%", height="auto", margin="0 4px 0 0"
        )
        self.images = {
            "stream": w.Image(format="svg+xml", layout=sized(STREAM_SIZE)),
            "runtime": w.Image(format="svg+xml", layout=sized(SMALL_SIZE)),
            "throughput": w.Image(format="svg+xml", layout=sized(SMALL_SIZE)),
        }
        #: What the task stream drew last (see :func:`tasklab.diagnostics.plots.stream_marks`).
        self.stream_marks: Any = None
        self.window = w.Dropdown(
            options=[("last 2 minutes", 120.0), ("last 10 minutes", 600.0), ("last hour", 3600.0), ("all", 0.0)],
            value=defaults.STREAM_WINDOW if defaults.STREAM_WINDOW in (120.0, 600.0, 3600.0) else 120.0,
            description="task stream:", layout=w.Layout(width="auto"), style={"description_width": "initial"},
        )  # fmt: skip
        self.window.observe(lambda _: self._redraw_plots(), names="value")
        self._drawing = threading.RLock()
        self.stream_canvas = (
            _stream_canvas(self._clicked, self._drawing, self._canvas_ready)
            if self.with_plots and self.interactive
            else None
        )
        self.selected = w.HTML()
        self.add_worker.on_click(lambda _: self._act(self._scale, +1))
        self.remove_worker.on_click(lambda _: self._act(self._scale, -1))
        self.revoke_button.on_click(lambda _: self._act(self.revoke_selected))
        self.retry_current.on_click(lambda _: self._act(self.retry_selected, original=False))
        self.retry_original.on_click(lambda _: self._act(self.retry_selected, original=True))
        self.purge_button.on_click(lambda _: self._act(self.purge_finished))
        self.close_button.on_click(lambda _: self.close())
        self.restart_button.on_click(lambda _: self.restart())
        self.recent.observe(lambda change: self._show_details(change["new"]), names="value")
        controls = w.HBox([self.revoke_button, self.retry_current, self.retry_original, self.purge_button,
                           self.close_button, self.restart_button])  # fmt: skip
        small = w.HBox([self.images["runtime"], self.images["throughput"]], layout=w.Layout(flex_flow="row wrap"))
        stream = [self.images["stream"]] + ([self.stream_canvas] if self.stream_canvas is not None else [])
        plots = w.VBox([w.HBox([self.window, self.selected]), *stream, small])
        self.widget = w.VBox([
            self.header,
            w.HBox([*self.counts.values(), self.attempts]),
            w.HTML("<b>Tasks</b>"), self.tasks,
            w.HTML("<b>Running</b>"), self.running,
            w.HTML("<b>Recent attempts</b> (select one for its traceback and output)"), self.recent, self.details,
            w.HTML("<b>Workers</b>"), self.workers, w.HBox([self.add_worker, self.remove_worker]),
            w.HTML("<b>Queues</b>"), self.queues,
            controls, self.message,
            plots,
        ])  # fmt: skip

    # -- reading Redis: one refresh --

    def read(self) -> dict[str, Any]:
        """Task counts, per-task rows, running tasks, recent attempts, workers and queues, from a
        constant number of reads plus the events written since the last (whether each queue has a
        worker is asked at most every few seconds)."""
        lab, connection, ns = self.lab, self.lab.connection, self.lab.namespace
        counts_raw = connection.hgetall(events.counts_key(ns))
        names = sorted({k.decode().split("|", 1)[0] for k in counts_raw})
        by_task: dict[str, dict[str, int]] = {n: {} for n in names}
        for key, value in counts_raw.items():
            name, kind = key.decode().split("|", 1)
            by_task[name][kind] = int(value)
        with connection.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.lrange(events.runtimes_key(ns, name), 0, -1)
            pipe.xrevrange(events.STREAM, "+", "-", count=defaults.MONITOR_RECENT * 4)
            queues = list(lab._queues.values()) or [lab.queue()]
            for queue in queues:
                pipe.llen(queue.key)
                pipe.zcard(queue.scheduled_job_registry.key)
                pipe.zcard(StartedJobRegistry(queue.name, connection=connection).key)
            pipe.time()
            replies = pipe.execute()
        runtimes = replies[: len(names)]
        recent_raw = replies[len(names)]
        depth = replies[len(names) + 1 : -1]
        seconds, micros = replies[-1]
        now = seconds + micros / 1e6
        finished = {n: sum(c.get(k, 0) for k in _FINISHED) for n, c in by_task.items()}
        self.live.update(sum(c.get(events.SUBMITTED, 0) for c in by_task.values()) - sum(finished.values()))
        live = self.live.count()
        unserved = set(unserved_queues(lab, [queue.name for queue in queues]))
        queue_rows = [
            {"name": queue.name, "waiting": queued, "scheduled": scheduled, "running": started,
             "served": queue.name not in unserved}
            for queue, queued, scheduled, started in zip(queues, depth[0::3], depth[1::3], depth[2::3], strict=True)
        ]  # fmt: skip
        current = lab.registry.current(ns)
        tasks: list[dict[str, Any]] = []
        for name in sorted(set(names) | set(live)):
            c, now_in = by_task.get(name, {}), live.get(name, {})
            values = runtimes[names.index(name)] if name in by_task else []
            run = np.array([float(v) for v in values]) if values else np.array([])
            tasks.append({
                "name": name, "version": (current.get(name) or "")[:7],
                "submitted": max(c.get(events.SUBMITTED, 0), finished.get(name, 0) + sum(now_in.values())),
                "succeeded": c.get(events.SUCCEEDED, 0), "failed": c.get(events.FAILED, 0),
                "revoked": c.get(events.REVOKED, 0), "lost": c.get(events.LOST, 0),
                "running": now_in.get("STARTED", 0), "retrying": now_in.get("RETRY", 0),
                "waiting": now_in.get("PENDING", 0) + now_in.get("RETRY", 0),
                "retries": c.get(events.RETRY, 0), "attempts": sum(c.get(k, 0) for k in _ATTEMPT_ENDS),
                "p50_s": float(np.percentile(run, 50)) if run.size else None,
                "p95_s": float(np.percentile(run, 95)) if run.size else None,
            })  # fmt: skip
        totals = {
            "PENDING": sum(t["waiting"] - t["retrying"] for t in tasks),
            "STARTED": sum(t["running"] for t in tasks),
            "RETRY": sum(t["retrying"] for t in tasks),
            "SUCCESS": sum(t["succeeded"] for t in tasks),
            "FAILURE": sum(t["failed"] for t in tasks),
            "REVOKED": sum(t["revoked"] for t in tasks),
            "LOST": sum(t["lost"] for t in tasks),
        }
        progress = self.read_progress([task_id for task_id, _ in self.live.running()])
        running = [
            {"id": task_id, "name": task.name, "attempt": task.attempt, "worker": task.worker,
             "running_s": max(now - task.started, 0.0) if task.started else None, "progress": progress.get(task_id)}
            for task_id, task in self.live.running()
        ]  # fmt: skip
        workers = self._read_workers(now)
        for worker in workers:
            worker["progress"] = progress.get(worker["job"]) if worker["job"] else None
        recent, seen = [], set()
        for entry_id, fields in recent_raw:  # newest first: keep each job's latest event
            event = events.decode(entry_id, fields)
            if event["ns"] != ns or event["e"] == events.SUBMITTED or event["id"] in seen:
                continue
            seen.add(event["id"])
            recent.append(event)
            if len(recent) == defaults.MONITOR_RECENT:
                break
        return {
            "totals": totals, "attempts": sum(t["attempts"] for t in tasks),
            "retries": sum(t["retries"] for t in tasks), "tasks": tasks, "running": running, "recent": recent,
            "workers": workers, "queues": queue_rows, "time": now, "progress": progress,
            "latest_event": recent_raw[0][0] if recent_raw else None,
        }  # fmt: skip

    def read_progress(self, job_ids: list[str]) -> dict[str, tuple[str, float, float]]:
        """What the running tasks ``job_ids`` reported of their progress (``self.update_state`` with a
        ``current``/``total`` pair): by id, the state reported and ``(done, of)``; the running-tasks
        and workers tables show it."""
        return running_progress([AsyncResult(job_id, self.lab) for job_id in job_ids])

    def _read_workers(self, now: float) -> list[dict[str, Any]]:
        connection = self.lab.connection
        lease_ends = {name.decode(): end for name, end in connection.zrange(LEASES, 0, -1, withscores=True)}
        workers: list[dict[str, Any]] = []
        for rq_worker in RQWorker.all(connection=connection):
            executions = rq_worker.get_current_executions(refresh=True)
            job_id = executions[0].job_id if executions else None
            task = self.live.tasks.get(job_id) if job_id else None
            lease_s = lease_ends[rq_worker.name] / 1000 - now if rq_worker.name in lease_ends else None
            state = str(rq_worker.get_state())
            if lease_s is not None and lease_s < 0:
                state = "lost"  # its lease ran out: not yet settled
            elif lease_s is not None and lease_s < _STALE_LEASE_S:
                state = "stale"  # it missed renewals of its lease
            cpu, memory = self.usage.read(rq_worker.hostname, rq_worker.pid)
            workers.append({
                "name": rq_worker.name, "state": state, "pid": rq_worker.pid, "host": rq_worker.hostname,
                "cpu": cpu, "memory": memory, "job": job_id,
                "task": task.name if task else (job_id[:8] if job_id else None),
                "running_s": max(now - task.started, 0.0) if task and task.started else None,
                "attempts": rq_worker.successful_job_count + rq_worker.failed_job_count,
            })  # fmt: skip
        self.usage.forget_others({r["pid"] for r in workers if r["pid"] is not None})
        return sorted(workers, key=lambda r: r["name"])

    def refresh(self, plots: bool = False) -> None:
        """Read Redis once and set the widget's traits; with ``plots``, redraw the plots too. (The
        monitor's thread and a button's click may both refresh: one at a time.)"""
        with self._refreshing:
            self._refresh(plots)

    def _refresh(self, plots: bool) -> None:
        data = self.data = self.read()
        self._show_header()
        for state, widget in self.counts.items():
            widget.value = views.counter(state, data["totals"][state])
        self.attempts.value = (
            f"<span title='attempts that ended, and how many of them were retried'>"
            f"{sum(data['totals'].values())} tasks · {data['attempts']} attempts · {data['retries']} retries</span>"
        )
        self.tasks.value = views.tasks_table(data["tasks"])
        self.running.value = views.running_table(data["running"])
        options = [(self._describe(e), e["id"]) for e in data["recent"]]
        if options != list(self.recent.options):
            selected = self.recent.value
            self.recent.options = options
            if selected in {value for _, value in options}:
                self.recent.value = selected
        self.workers.value = views.workers_table(data["workers"])
        self.queues.value = views.queues_table(data["queues"])
        if plots and self.with_plots:
            # Drawn again only if they could change: an idle lab's monitor costs no drawing.
            drawn = (data["latest_event"], self.window.value)
            if drawn != self._plotted or data["running"]:
                self.refresh_plots()
                self._plotted = drawn
            self._last_plot = time.monotonic()

    def _show_header(self) -> None:
        where = (f"<b>tasklab</b> &nbsp; {html.escape(str(self.lab.url))} &nbsp; namespace "
                 f"<code>{html.escape(self.lab.namespace)}</code> &nbsp; ")  # fmt: skip
        if self.status in ("stopped", "lab stopped"):
            when = time.strftime("%H:%M:%S", time.localtime(self.stopped_at or time.time()))
            why = "the lab was stopped" if self.status == "lab stopped" else "monitor stopped"
            note = " (run <code>%tasklab start</code>, then <code>%tasklab monitor</code>)" if (
                self.status == "lab stopped") else "; <i>restart monitor</i> starts it again"  # fmt: skip
            state = (
                f"<span class='tasklab-stopped' style='background:{views.COLOURS['FAILURE']};color:white;"
                f"border-radius:3px;padding:0 4px'>{why} at {when}</span>{note}; what it shows is as it was then"
            )
        else:
            state = f"<small>{time.strftime('%H:%M:%S')}</small>"
        self.header.value = where + state

    def refresh_plots(self) -> None:
        """Draw the plots from the latest events (:data:`defaults.MONITOR_PLOT_EVENTS` at most). One
        drawing at a time (the monitor's thread, the window menu): each draws into the same figures."""
        with self._refreshing:
            self._refresh_plots()

    def _refresh_plots(self) -> None:
        frame = fold(read_recent_columns(self.lab.connection, defaults.MONITOR_PLOT_EVENTS))
        frame = frame[frame["namespace"] == self.lab.namespace]
        window = self.window.value or None
        if self.stream_canvas is not None:
            with self._drawing:  # the canvas draws on the kernel's thread when the browser asks
                figure = self.stream_canvas.figure
                zoomed = self._zoomed(figure)
                task_stream(frame, window=window, fig=figure)
                if zoomed is not None:  # keep what the user zoomed to
                    figure.axes[0].set_xlim(zoomed[0])
                    figure.axes[0].set_ylim(zoomed[1])
                self._drawn_limits = self._limits(figure)
                self.stream_marks = figure.marks
            if self.stream_canvas.syncing_data_url:
                # No browser has set the canvas up yet: it does so when the kernel is between
                # cells. Until then the stream is also shown as an image, which the thread updates.
                self.images["stream"].value = to_svg(figure)
                self.stream_canvas.draw_idle()
            else:  # drawn and sent now: a request from the browser is read only between cells
                self.stream_canvas.draw()
        else:
            stream = task_stream(frame, window=window, fig=self._figures.get("stream"))
            self.stream_marks = stream.marks  # type: ignore[attr-defined]
            self.images["stream"].value = to_svg(stream)
            self._figures["stream"] = stream
        # Each figure is drawn into again, which spares making its axes anew.
        self._figures["runtime"] = runtime_distribution(frame, fig=self._figures.get("runtime"))
        self._figures["throughput"] = throughput(frame, fig=self._figures.get("throughput"))
        self.images["runtime"].value = to_svg(self._figures["runtime"])
        self.images["throughput"].value = to_svg(self._figures["throughput"])
        self._last_plot = time.monotonic()

    @staticmethod
    def _limits(figure: Any) -> Any:
        return (figure.axes[0].get_xlim(), figure.axes[0].get_ylim()) if figure.axes else None

    def _zoomed(self, figure: Any) -> Any:
        """The interactive stream's limits if the user zoomed or panned it since it was drawn."""
        limits = self._limits(figure)
        return limits if limits is not None and limits != getattr(self, "_drawn_limits", limits) else None

    def _clicked(self, event: Any) -> None:
        """A click on the interactive stream: the attempt under it, if any, is selected."""
        if event.inaxes is None or event.xdata is None or self.stream_marks is None or self.stream_marks.empty:
            return
        self.select_at(float(event.xdata), float(event.ydata))

    def select_at(self, x: float, y: float) -> dict[str, Any] | None:
        """Select the attempt drawn at ``(x, y)`` of the task stream (seconds, lane): its details
        show below the monitor's recent attempts, as when it is chosen there. The attempt's row."""
        marks = self.stream_marks
        lane = marks[(marks["lane"] == round(y)) & (abs(y - marks["lane"]) <= 0.4)]
        hit = lane[(lane["left"] <= x) & (x <= lane["right"])]
        if hit.empty:
            return None
        row = hit.iloc[0].to_dict()
        ran = row["end"] - row["start"]
        self.selected.value = (
            f"selected: <b>{html.escape(str(row['name']))}</b> {row['task_id'][:8]} attempt {row['attempt']} "
            f"{badge(str(row['state']))} on {html.escape(str(row['worker']))}, ran {ran:.3f} s, "
            f"waited {row['start'] - row['queued']:.3f} s"
        )
        self._show_details(row["task_id"])
        return row

    def _canvas_ready(self) -> None:
        """The browser set the interactive stream up: the image that stood in for it goes."""
        self.images["stream"].layout.display = "none"

    def _redraw_plots(self) -> None:
        if self.with_plots and not self.lab._closed:
            self._act(self.refresh_plots)

    @staticmethod
    def _describe(event: dict[str, Any]) -> str:
        state = _EVENT_STATE.get(event["e"], event["e"])
        when = time.strftime("%H:%M:%S", time.localtime(float(event["ts"])))
        error = f"  {event['x']}" if event.get("x") else ""
        attempt = f" (attempt {int(event.get('n', 0)) + 1})" if event.get("n", "0") != "0" else ""
        workflow = f"  [workflow {event['wf'][:8]}]" if event.get("wf") else ""
        return f"{when}  {state:<8} {event['t']}{attempt}{error}  {event['id'][:8]}{workflow}"

    def _show_details(self, job_id: str | None) -> None:
        if not job_id:
            self.details.value = ""
            return
        result = AsyncResult(job_id, self.lab)
        parts = [f"<b>{html.escape(job_id)}</b> {badge(result.state)}"]
        if result.traceback:
            parts.append(f"<pre style='color:#c62828'>{html.escape(result.traceback)}</pre>")
        output = result.output
        if output:
            parts.append(f"<pre>{html.escape(output[-4000:])}</pre>")
        self.details.value = "".join(parts)

    # -- controls --

    def _act(self, action: Any, *args: Any, **kwargs: Any) -> None:
        try:
            self.message.value = html.escape(str(action(*args, **kwargs) or ""))
        except Exception as exc:
            self.message.value = f"<span style='color:#c62828'>{html.escape(f'{type(exc).__name__}: {exc}')}</span>"
        self.refresh()

    def _scale(self, delta: int) -> str:
        current = len(self.lab.pool) if self.lab.pool is not None else 0
        pool = self.lab.workers(max(0, current + delta))
        return f"{len(pool)} local workers"

    def revoke_selected(self) -> str:
        """Revoke the selected job, or stop it if it runs; what was done, or why nothing was (as
        ``revoke`` warns: it had already finished)."""
        job_id = self.recent.value
        if not job_id:
            return "select an attempt first"
        refused = AsyncResult(job_id, self.lab)._revoke(terminate=True)
        return refused if refused is not None else f"revoked {job_id}"

    def retry_selected(self, original: bool = False) -> str:
        """Submit the selected job again with the same arguments, on its own or the current code."""
        if not self.recent.value:
            return "select an attempt first"
        job = Job.fetch(self.recent.value, connection=self.lab.connection, serializer=Serializer)
        name, version = job.meta[keys.META_TASK], job.meta[keys.META_VERSION]
        if not original:
            version = self.lab.registry.current_version(self.lab.namespace, name)
        result = task_for(version, name).apply_async(job.args, job.kwargs)
        return f"resubmitted {name} (v{version[:7]}) as {result.id}"

    def purge_finished(self) -> str:
        """Delete the finished and failed jobs (and their results) of this lab's queues."""
        removed = 0
        for queue in list(self.lab._queues.values()) or [self.lab.queue()]:
            for registry_class in (FinishedJobRegistry, FailedJobRegistry):
                registry = registry_class(queue.name, connection=self.lab.connection)
                for job_id in registry.get_job_ids():
                    AsyncResult(job_id, self.lab).forget()
                    registry.remove(job_id)
                    removed += 1
        return f"purged {removed} finished jobs"

    # -- running --

    def start(self) -> Monitor:
        """Update the widget from a background thread until :meth:`close` (or the lab stops)."""
        if self.lab._closed:
            self._lab_stopped()
            return self
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._set_status("running")
            self._thread = threading.Thread(target=self._loop, name="tasklab-monitor", daemon=True)
            self._thread.start()
        return self

    def restart(self) -> Monitor:
        """Start a stopped monitor again (its *restart monitor* button)."""
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.message.value = ""
        return self.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            if self.lab._closed:
                self._lab_stopped()
                return
            try:
                self.refresh(plots=time.monotonic() - self._last_plot >= self.plot_interval)
            except Exception as exc:
                if self.lab._closed:  # stopped while this refresh read Redis
                    continue
                self.message.value = f"<span style='color:#c62828'>monitor: {html.escape(str(exc))}</span>"
            self._stop.wait(max(self.interval - (time.monotonic() - started), 0.05))

    def close(self) -> None:
        """Stop updating: the widget stays, saying that it stopped and when, with its controls greyed
        until *restart monitor*."""
        self._stop.set()
        if self.status != "lab stopped":
            self._set_status("stopped")

    def _lab_stopped(self) -> None:
        """The lab was shut down (``%tasklab stop``): no worker runs, nothing can be done from here."""
        self._stop.set()
        self._set_status("lab stopped")
        self.workers.value = views.workers_table([], lab_stopped=True)
        self.running.value = views.running_table([])

    def _set_status(self, status: str) -> None:
        self.status = status
        running = status == "running"
        self.stopped_at = None if running or status == "idle" else time.time()
        for control in self.controls:
            control.disabled = not running
        self.restart_button.disabled = status != "stopped"
        if not running:
            self.message.value = ""
        self._show_header()

    # -- display --

    def snapshot_html(self) -> str:
        """The current state as plain HTML: what a notebook shows without a live kernel."""
        if not self.data:
            self.data = self.read()
        data = self.data
        counts = " ".join(views.counter(s, data["totals"][s]) for s in STATES)
        unserved = "".join(
            f"<div>{badge('PENDING')} {html.escape(unserved_hint(q['name']))}</div>"
            for q in data["queues"] if not q["served"]
        )  # fmt: skip
        return (
            f"<div><b>tasklab monitor</b> (snapshot; live when the kernel runs)<br>{counts}"
            + views.tasks_table(data["tasks"])
            + f"<small>{len(data['workers'])} workers</small>{unserved}{self._stream_snapshot()}</div>"
        )

    def _stream_snapshot(self) -> str:
        """The task stream as an image in the page (for a notebook shown without its kernel)."""
        figure = self.stream_canvas.figure if self.stream_canvas is not None else self._figures.get("stream")
        if figure is None or not figure.axes:
            return ""
        with self._refreshing, self._drawing:  # not while the monitor's thread draws into it
            png = to_png(figure)  # pixels: a page may refuse an SVG image
        width = round(STREAM_SIZE[0] * CSS_DPI)
        encoded = base64.b64encode(png).decode()
        return (
            f"<br><img alt='task stream' style='width:{width}px;max-width:100%' src='data:image/png;base64,{encoded}'>"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        bundle["text/html"] = self.snapshot_html()
        return bundle


def _has_ipympl() -> bool:
    import importlib.util

    return importlib.util.find_spec("ipympl") is not None


def _stream_canvas(on_click: Any, drawing: Any, ready: Any) -> Any:
    """An interactive figure for the task stream (ipympl's canvas widget: zoom, pan, click). It
    draws on the kernel's thread when the browser asks; ``drawing`` keeps that apart from the
    monitor's thread, which draws the figure anew. ``ready()`` is called once a browser set it up."""
    from ipympl.backend_nbagg import Canvas, FigureManager
    from matplotlib.figure import Figure

    class StreamCanvas(Canvas):
        def draw(self) -> None:
            with drawing:
                super().draw()

        def _handle_message(self, object: Any, content: dict[str, Any], buffers: Any) -> None:
            super()._handle_message(object, content, buffers)
            if content.get("type") == "initialized":
                ready()

    figure = Figure(figsize=STREAM_SIZE, dpi=CSS_DPI)
    canvas = StreamCanvas(figure)
    FigureManager(canvas, 0)
    canvas.header_visible = False
    canvas.footer_visible = False
    canvas.resizable = False
    canvas.toolbar_position = "right"
    canvas.mpl_connect("button_press_event", on_click)
    return canvas
