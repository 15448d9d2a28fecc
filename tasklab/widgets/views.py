"""The monitor's HTML: state badges, tables, per-task progress bars. Pure functions of the data a
monitor read (see :meth:`tasklab.widgets.monitor.Monitor.read`), so that the live widget and its
static snapshot show the same thing."""

from __future__ import annotations

import html
import time
from typing import Any

from ..client.progress import unserved_hint

#: Task states, in the order the counters show them.
STATES = ("PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED", "LOST")
#: One colour per state; the progress bars and the plots use the same ones.
COLOURS = {
    "PENDING": "#757575", "STARTED": "#1565c0", "RETRY": "#ef6c00", "SUCCESS": "#2e7d32",
    "FAILURE": "#c62828", "REVOKED": "#6d4c41", "LOST": "#ad1457",
}  # fmt: skip
#: What each counter counts, shown as its tooltip.
MEANING = {
    "PENDING": "tasks waiting in a queue, or due later",
    "STARTED": "tasks running now",
    "RETRY": "tasks whose last attempt failed, waiting for the next",
    "SUCCESS": "tasks that succeeded",
    "FAILURE": "tasks that failed for good",
    "REVOKED": "tasks revoked",
    "LOST": "tasks whose worker was lost",
}
#: A progress bar's parts: (label, colour, the task row's keys it sums).
BAR_PARTS = (
    ("succeeded", COLOURS["SUCCESS"], ("succeeded",)),
    ("failed", COLOURS["FAILURE"], ("failed", "revoked", "lost")),
    ("running", COLOURS["STARTED"], ("running",)),
    ("waiting", "#bdbdbd", ("waiting",)),
)


def badge(state: str) -> str:
    colour = COLOURS.get(state, "#757575")
    return f'<span style="background:{colour};color:white;border-radius:3px;padding:0 4px">{state}</span>'


def counter(state: str, count: int) -> str:
    return f'<span title="{html.escape(MEANING.get(state, state))}">{badge(state)} <b>{count}</b></span>'


def table(header: list[str], rows: list[list[Any]], empty: str = "") -> str:
    head = "".join(f"<th style='text-align:left;padding:0 8px'>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:0 8px'>{c}</td>" for c in row) + "</tr>" for row in rows
    )  # fmt: skip
    note = f"<div style='color:#757575;font-size:12px'>{html.escape(empty)}</div>" if empty and not rows else ""
    return f"<table style='font-family:monospace;font-size:12px'><tr>{head}</tr>{body}</table>{note}"


def progress_bar(task: dict[str, Any], width: int = 240) -> str:
    """One task name's tasks as a bar: succeeded, failed, running, waiting (as Dask's progress)."""
    total = max(task["submitted"], sum(task[k] for _, _, keys in BAR_PARTS for k in keys), 1)
    parts, legend = [], []
    for label, colour, keys in BAR_PARTS:
        count = sum(task[k] for k in keys)
        if count:
            parts.append(f"<div title='{count} {label}' style='width:{100 * count / total:.2f}%;background:{colour}'>"
                         "</div>")  # fmt: skip
            legend.append(f"<span style='color:{colour}'>{count} {label}</span>")
    bar = (f"<div class='tasklab-progress' style='display:flex;width:{width}px;height:12px;background:#eeeeee;"
           f"border-radius:2px;overflow:hidden'>{''.join(parts)}</div>")  # fmt: skip
    return f"<div style='display:flex;gap:8px;align-items:center'>{bar}<span>{' · '.join(legend)}</span></div>"


def tasks_table(tasks: list[dict[str, Any]]) -> str:
    return table(
        ["task", "version", "progress", "tasks", "attempts", "retries", "p50 s", "p95 s"],
        [[html.escape(t["name"]), t["version"], progress_bar(t), t["submitted"], t["attempts"], t["retries"],
          seconds(t["p50_s"]), seconds(t["p95_s"])] for t in tasks],
        "no tasks yet",
    )  # fmt: skip


def reported(progress: tuple[str, float, float] | None, width: int = 120) -> str:
    """A running task's reported progress, ``(state, done, of)``, as a small bar with its numbers."""
    if progress is None:
        return ""
    state, done, of = progress
    return (f'<progress value="{min(done, of):g}" max="{of:g}" style="width:{width}px"></progress> '
            f"{done:g}/{of:g} {html.escape(state)}")  # fmt: skip


def running_table(running: list[dict[str, Any]]) -> str:
    """The running tasks; ``progress`` is what a task reported of its progress (see :func:`reported`)."""
    return table(
        ["task", "id", "attempt", "worker", "running for", "progress"],
        [[html.escape(r["name"]), r["id"][:8], r["attempt"], html.escape(str(r["worker"] or "")),
          duration(r["running_s"]), reported(r.get("progress"))] for r in running],
        "nothing running",
    )  # fmt: skip


def workers_table(workers: list[dict[str, Any]], lab_stopped: bool = False) -> str:
    if lab_stopped:
        return table(["worker"], [], "no workers: the lab is stopped")
    return table(
        ["worker", "state", "host", "pid", "cpu %", "memory", "running", "for", "progress", "attempts"],
        [[html.escape(r["name"]), worker_state(r["state"]), html.escape(str(r["host"])), r["pid"], _cpu(r["cpu"]),
          _memory(r["memory"]), html.escape(r["task"] or ""), duration(r["running_s"]), reported(r.get("progress")),
          r["attempts"]] for r in workers],
        "no workers",
    )  # fmt: skip


def queues_table(queues: list[dict[str, Any]]) -> str:
    return table(
        ["queue", "waiting", "scheduled", "running", "workers"],
        [[html.escape(q["name"]), q["waiting"], q["scheduled"], q["running"], served(q)] for q in queues],
    )


def worker_state(state: str) -> str:
    colour = {"lost": COLOURS["FAILURE"], "stale": COLOURS["RETRY"], "busy": COLOURS["STARTED"]}.get(state)
    return f"<span style='color:{colour}'>{state}</span>" if colour else html.escape(state)


def served(queue: dict[str, Any]) -> str:
    if queue["served"]:
        return "served"
    return f"<span style='color:{COLOURS['FAILURE']}'>{html.escape(unserved_hint(queue['name']))}</span>"


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def duration(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.1f} s" if value < 120 else time.strftime("%H:%M:%S", time.gmtime(value))


def _cpu(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _memory(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MB"
