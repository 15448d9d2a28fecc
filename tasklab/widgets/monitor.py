"""The live monitor: one ipywidgets widget with states, tasks, recent attempts, workers, queues
(marking those no live worker serves), plots.

It is built once and displayed once; a background thread then only sets trait values, about
twice a second, and renders the plots to PNG bytes for ``Image`` widgets at a slower pace
(drawing or displaying from a thread is not reliable in Jupyter). One refresh reads running
totals kept in Redis (see :mod:`tasklab.engine.events`), not the history, so it costs the same
however many tasks ran before. ``lab.monitor(display=False)`` (or ``Monitor(lab)``) builds it
without showing or starting it, for tests and scripts: :meth:`refresh` then updates it on the
caller's thread.
"""

from __future__ import annotations

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
from ..client.progress import progress_html, running_progress, unserved_hint, unserved_queues
from ..client.result import AsyncResult
from ..code.loader import task_for
from ..code.serialization import Serializer
from ..diagnostics.frames import attempts, read_recent
from ..diagnostics.plots import runtime_distribution, task_stream, throughput, to_png
from ..engine import events, keys
from ..engine.leases import LEASES

STATES = ("PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED", "LOST")
_BADGE = {
    "PENDING": "#757575", "STARTED": "#1565c0", "RETRY": "#ef6c00", "SUCCESS": "#2e7d32",
    "FAILURE": "#c62828", "REVOKED": "#6d4c41", "LOST": "#ad1457",
}  # fmt: skip
_EVENT_STATE = {events.SUCCEEDED: "SUCCESS", events.FAILED: "FAILURE", events.RETRY: "RETRY",
                events.DUPLICATE: "DUPLICATE",
                events.REVOKED: "REVOKED", events.LOST: "LOST", events.STARTED: "STARTED",
                events.SUBMITTED: "PENDING"}  # fmt: skip


def badge(state: str) -> str:
    colour = _BADGE.get(state, "#757575")
    return f'<span style="background:{colour};color:white;border-radius:3px;padding:0 4px">{state}</span>'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th style='text-align:left;padding:0 8px'>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:0 8px'>{c}</td>" for c in row) + "</tr>" for row in rows
    )  # fmt: skip
    return f"<table style='font-family:monospace;font-size:12px'><tr>{head}</tr>{body}</table>"


class Monitor:
    """A live view of one lab. ``tasklab.monitor()`` makes and shows one."""

    def __init__(
        self,
        lab: Any,
        *,
        interval: float = defaults.MONITOR_INTERVAL,
        plot_interval: float = defaults.MONITOR_PLOT_INTERVAL,
        plots: bool = True,
    ):
        self.lab = lab
        self.interval = interval
        self.plot_interval = plot_interval
        self.with_plots = plots
        self.data: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_plot = 0.0
        self._build()

    # -- the widget, built once --

    def _build(self) -> None:
        self.header = w.HTML()
        self.counts = {state: w.HTML(layout=w.Layout(margin="0 6px")) for state in STATES}
        self.tasks = w.HTML()
        self.recent = w.Select(options=[], rows=8, layout=w.Layout(width="100%"))
        self.details = w.HTML()
        self.workers = w.HTML()
        self.queues = w.HTML()
        self.add_worker = w.Button(description="+ worker", layout=w.Layout(width="auto"))
        self.remove_worker = w.Button(description="- worker", layout=w.Layout(width="auto"))
        self.revoke_button = w.Button(description="revoke", button_style="warning", layout=w.Layout(width="auto"))
        self.retry_current = w.Button(description="retry (current code)", layout=w.Layout(width="auto"))
        self.retry_original = w.Button(description="retry (original code)", layout=w.Layout(width="auto"))
        self.purge_button = w.Button(description="purge finished", layout=w.Layout(width="auto"))
        self.close_button = w.Button(description="stop monitor", layout=w.Layout(width="auto"))
        self.message = w.HTML()
        self.images = {
            "stream": w.Image(format="png", layout=w.Layout(width="100%", max_width="1000px")),
            "runtime": w.Image(format="png", layout=w.Layout(width="49%", max_width="500px")),
            "throughput": w.Image(format="png", layout=w.Layout(width="49%", max_width="500px")),
        }
        self.add_worker.on_click(lambda _: self._act(self._scale, +1))
        self.remove_worker.on_click(lambda _: self._act(self._scale, -1))
        self.revoke_button.on_click(lambda _: self._act(self.revoke_selected))
        self.retry_current.on_click(lambda _: self._act(self.retry_selected, original=False))
        self.retry_original.on_click(lambda _: self._act(self.retry_selected, original=True))
        self.purge_button.on_click(lambda _: self._act(self.purge_finished))
        self.close_button.on_click(lambda _: self.close())
        self.recent.observe(lambda change: self._show_details(change["new"]), names="value")
        controls = w.HBox([self.revoke_button, self.retry_current, self.retry_original, self.purge_button,
                           self.close_button])  # fmt: skip
        plots = w.VBox([self.images["stream"], w.HBox([self.images["runtime"], self.images["throughput"]])])
        self.widget = w.VBox([
            self.header,
            w.HBox(list(self.counts.values())),
            w.HTML("<b>Tasks</b>"), self.tasks,
            w.HTML("<b>Recent attempts</b> (select one for its traceback and output)"), self.recent, self.details,
            w.HTML("<b>Workers</b>"), self.workers, w.HBox([self.add_worker, self.remove_worker]),
            w.HTML("<b>Queues</b>"), self.queues,
            controls, self.message,
            plots,
        ])  # fmt: skip

    # -- reading Redis: one refresh --

    def read(self) -> dict[str, Any]:
        """Totals, per-task rows, recent attempts, workers and queues, from a constant number of reads
        (whether each queue has a worker is asked at most every few seconds)."""
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
            replies = pipe.execute()
        runtimes = replies[: len(names)]
        recent_raw = replies[len(names)]
        depth = replies[len(names) + 1 :]
        waiting = sum(depth[0::3]) + sum(depth[1::3])
        running = sum(depth[2::3])
        unserved = set(unserved_queues(lab, [queue.name for queue in queues]))
        queue_rows = [
            {"name": queue.name, "waiting": queued, "scheduled": scheduled, "running": started,
             "served": queue.name not in unserved}
            for queue, queued, scheduled, started in zip(queues, depth[0::3], depth[1::3], depth[2::3], strict=True)
        ]  # fmt: skip
        current = lab.registry.current(ns)
        tasks = []
        for name, values in zip(names, runtimes, strict=True):
            c = by_task[name]
            run = np.array([float(v) for v in values]) if values else np.array([])
            tasks.append({
                "name": name, "version": (current.get(name) or "")[:7],
                "submitted": c.get(events.SUBMITTED, 0), "succeeded": c.get(events.SUCCEEDED, 0),
                "failed": c.get(events.FAILED, 0), "retries": c.get(events.RETRY, 0),
                "lost": c.get(events.LOST, 0), "revoked": c.get(events.REVOKED, 0),
                "p50_s": float(np.percentile(run, 50)) if run.size else None,
                "p95_s": float(np.percentile(run, 95)) if run.size else None,
            })  # fmt: skip
        totals = {
            "PENDING": waiting,
            "STARTED": running,
            "RETRY": sum(t["retries"] for t in tasks),
            "SUCCESS": sum(t["succeeded"] for t in tasks),
            "FAILURE": sum(t["failed"] for t in tasks),
            "REVOKED": sum(t["revoked"] for t in tasks),
            "LOST": sum(t["lost"] for t in tasks),
        }
        recent, seen = [], set()
        for entry_id, fields in recent_raw:  # newest first: keep each job's latest event
            event = events.decode(entry_id, fields)
            if event["ns"] != ns or event["e"] == events.SUBMITTED or event["id"] in seen:
                continue
            seen.add(event["id"])
            recent.append(event)
            if len(recent) == defaults.MONITOR_RECENT:
                break
        workers = []
        seconds, micros = connection.time()
        now_ms = seconds * 1000 + micros // 1000
        lease_ends = {name.decode(): end for name, end in connection.zrange(LEASES, 0, -1, withscores=True)}
        for rq_worker in RQWorker.all(connection=connection):
            executions = rq_worker.get_current_executions(refresh=True)
            lost = lease_ends.get(rq_worker.name, now_ms + 1) < now_ms  # its lease ran out: not yet settled
            workers.append({
                "name": rq_worker.name, "state": "lost" if lost else str(rq_worker.get_state()), "pid": rq_worker.pid,
                "host": rq_worker.hostname, "job": executions[0].job_id if executions else None,
                "ok": rq_worker.successful_job_count, "failed": rq_worker.failed_job_count,
            })  # fmt: skip
        return {
            "totals": totals, "tasks": tasks, "recent": recent, "workers": sorted(workers, key=lambda r: r["name"]),
            "queues": queue_rows,
            # What running tasks report (self.update_state): job id -> (state, current, total).
            "progress": running_progress([AsyncResult(str(r["job"]), lab) for r in workers if r["job"]]),
        }  # fmt: skip

    def refresh(self, plots: bool = False) -> None:
        """Read Redis once and set the widget's traits; with ``plots``, redraw the plots too."""
        data = self.data = self.read()
        self.header.value = (
            f"<b>tasklab</b> &nbsp; {html.escape(str(self.lab.url))} &nbsp; namespace "
            f"<code>{html.escape(self.lab.namespace)}</code> &nbsp; <small>{time.strftime('%H:%M:%S')}</small>"
        )
        for state, widget in self.counts.items():
            widget.value = f"{badge(state)} <b>{data['totals'][state]}</b>"
        self.tasks.value = _table(
            ["task", "version", "submitted", "succeeded", "failed", "retries", "p50 s", "p95 s"],
            [[html.escape(t["name"]), t["version"], t["submitted"], t["succeeded"], t["failed"], t["retries"],
              _seconds(t["p50_s"]), _seconds(t["p95_s"])] for t in data["tasks"]],
        )  # fmt: skip
        options = [(self._describe(e), e["id"]) for e in data["recent"]]
        if options != list(self.recent.options):
            selected = self.recent.value
            self.recent.options = options
            if selected in {value for _, value in options}:
                self.recent.value = selected
        self.workers.value = _table(
            ["worker", "state", "pid", "host", "running", "ok", "failed", "progress"],
            [[html.escape(r["name"]), r["state"], r["pid"], html.escape(str(r["host"])), r["job"] or "",
              r["ok"], r["failed"], _progress_cell(data, r["job"])] for r in data["workers"]],
        )  # fmt: skip
        self.queues.value = _table(
            ["queue", "waiting", "scheduled", "running", "workers"],
            [[html.escape(q["name"]), q["waiting"], q["scheduled"], q["running"], _served(q)] for q in data["queues"]],
        )
        if plots and self.with_plots:
            self.refresh_plots()

    def refresh_plots(self) -> None:
        frame = attempts(read_recent(self.lab.connection, defaults.MONITOR_PLOT_EVENTS))
        frame = frame[frame["namespace"] == self.lab.namespace]
        self.images["stream"].value = to_png(task_stream(frame))
        self.images["runtime"].value = to_png(runtime_distribution(frame), dpi=60)
        self.images["throughput"].value = to_png(throughput(frame), dpi=60)
        self._last_plot = time.monotonic()

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
        """Update the widget from a background thread until :meth:`close`."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="tasklab-monitor", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if self.lab._closed:
                    break
                self.refresh(plots=time.monotonic() - self._last_plot >= self.plot_interval)
            except Exception as exc:
                self.message.value = f"<span style='color:#c62828'>monitor: {html.escape(str(exc))}</span>"
            self._stop.wait(max(self.interval - (time.monotonic() - started), 0.05))

    def close(self) -> None:
        """Stop updating (the widget stays, showing its last state)."""
        self._stop.set()
        self.message.value = "monitor stopped"

    # -- display --

    def snapshot_html(self) -> str:
        """The current state as plain HTML: what a notebook shows without a live kernel."""
        if not self.data:
            self.data = self.read()
        data = self.data
        counts = " ".join(f"{badge(s)} <b>{data['totals'][s]}</b>" for s in STATES)
        rows = [[html.escape(t["name"]), t["version"], t["succeeded"], t["failed"], t["retries"], _seconds(t["p50_s"])]
                for t in data["tasks"]]  # fmt: skip
        unserved = "".join(
            f"<div>{badge('PENDING')} {html.escape(unserved_hint(q['name']))}</div>"
            for q in data["queues"] if not q["served"]
        )  # fmt: skip
        return (
            f"<div><b>tasklab monitor</b> (snapshot; live when the kernel runs)<br>{counts}"
            + _table(["task", "version", "succeeded", "failed", "retries", "p50 s"], rows)
            + f"<small>{len(data['workers'])} workers</small>{unserved}</div>"
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        bundle["text/html"] = self.snapshot_html()
        return bundle


def _served(queue: dict[str, Any]) -> str:
    if queue["served"]:
        return "served"
    return f"<span style='color:#c62828'>{html.escape(unserved_hint(queue['name']))}</span>"


def _progress_cell(data: dict[str, Any], job_id: str | None) -> str:
    """A worker's progress column: a bar of what its running task reports (``self.update_state``), if it does."""
    reported = data["progress"].get(job_id) if job_id else None
    return progress_html(*reported) if reported is not None else ""


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"
