"""Timing plots with matplotlib. Each takes a history DataFrame (or reads the current lab's history)
and returns a Figure; :func:`to_png` renders one for an ``Image`` widget.

Figures are made with ``matplotlib.figure.Figure`` directly, not ``pyplot``, so drawing from
a monitor's thread touches no global state and leaves no figure open. Each figure's size is the
size it is shown at (:data:`CSS_DPI` pixels an inch); :func:`to_png` renders it at
:data:`PIXEL_RATIO` times that, so that it stays sharp on a high-density screen.

Colours: each task name has one (:func:`task_colours`, never a state's colour); how an attempt
ended is drawn by its outline and hatching, in the state colours of the monitor's counters, and
every one of them is named in the legend.
"""

from __future__ import annotations

import io
import itertools
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .. import defaults
from ..core.app import default_app
from .frames import history

#: Pixels an inch, as browsers lay figures out: a figure of 10 x 3.2 inches is shown 960 x 307.
CSS_DPI = 96
#: Device pixels per CSS pixel the images are rendered for (2 on most high-density screens).
PIXEL_RATIO = 2
#: Sizes, in inches: the task stream spans the monitor; the two others share a row.
STREAM_SIZE = (10.0, 3.2)
SMALL_SIZE = (5.2, 3.0)
#: Pixels kept free between two attempts drawn side by side, and the narrowest an attempt is drawn.
GAP_PX, MIN_PX = 2.0, 2.0

#: How an attempt ended: (legend label, outline colour, hatching); the colours are the monitor's.
OUTCOMES = {
    "SUCCESS": ("succeeded", "none", None),
    "RETRY": ("failed, retried", "#ef6c00", "////"),
    "FAILURE": ("failed", "#c62828", "xxxx"),
    "REVOKED": ("revoked or lost", "#6d4c41", "...."),
    "LOST": ("revoked or lost", "#6d4c41", "...."),
    "DUPLICATE": ("late duplicate", "#6d4c41", "...."),
    "STARTED": ("running", "#1565c0", None),
}
#: Task colours: matplotlib's tab10 without its green, red, orange, brown and pink (the states' colours).
_PALETTE = ["#1f77b4", "#9467bd", "#17becf", "#bcbd22", "#7f7f7f", "#aec7e8", "#c5b0d5", "#9edae5", "#dbdb8d"]
_WAIT = "#9e9e9e"


def _frame(frame: pd.DataFrame | None) -> pd.DataFrame:
    return frame if frame is not None else history(default_app().connection)


def task_colours(names: Any) -> dict[str, str]:
    """One colour per task name, the same in every plot."""
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(sorted(set(names)))}


def _figure(size: tuple[float, float]) -> tuple[Figure, Any]:
    fig = Figure(figsize=size, dpi=CSS_DPI)
    return fig, fig.add_subplot()


def _empty(fig: Figure, ax: Any, title: str) -> Figure:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no tasks yet", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def stream_marks(
    frame: pd.DataFrame, *, window: float | None = defaults.STREAM_WINDOW, now: pd.Timestamp | None = None
) -> pd.DataFrame:
    """What :func:`task_stream` draws: one row per attempt that ran within the window (the last
    ``window`` seconds up to the latest event; ``None``: all), with its lane, its times (seconds
    since the window's start) and its outcome."""
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    ran = frame.dropna(subset=["started_at"])
    if ran.empty:
        return pd.DataFrame(columns=["task_id", "attempt", "name", "state", "worker", "lane", "queued", "start",
                                     "end", "error", "origin"])  # fmt: skip
    end_at = ran["finished_at"].fillna(now)
    latest = end_at.max()
    first = ran["submitted_at"].fillna(ran["started_at"]).min()
    origin = first if window is None else max(first, latest - pd.Timedelta(seconds=window))
    shown = ran[end_at >= origin]
    workers = sorted(shown["worker"].fillna("?").unique())
    marks = pd.DataFrame({
        "task_id": shown["task_id"], "attempt": shown["attempt"], "name": shown["name"], "state": shown["state"],
        "worker": shown["worker"].fillna("?"), "error": shown["error"],
        "queued": (shown["submitted_at"].fillna(shown["started_at"]) - origin).dt.total_seconds().clip(lower=0),
        "start": (shown["started_at"] - origin).dt.total_seconds(),
        "end": (end_at[end_at >= origin] - origin).dt.total_seconds(),
    })  # fmt: skip
    marks["lane"] = marks["worker"].map({w: i for i, w in enumerate(workers)})
    marks["origin"] = origin
    return marks.sort_values(["lane", "start"]).reset_index(drop=True)


def _drawn(marks: pd.DataFrame, span: float, width_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Where each mark is drawn: inset by :data:`GAP_PX` so that back-to-back attempts stay apart,
    and at least :data:`MIN_PX` wide."""
    per_px = span / max(width_px, 1.0)
    start, end = marks["start"].to_numpy(float), marks["end"].to_numpy(float)
    inset = np.minimum(GAP_PX * per_px / 2, np.maximum(end - start - MIN_PX * per_px, 0) / 2)
    left = start + inset
    return left, np.maximum(end - inset, left + MIN_PX * per_px)


def task_stream(
    frame: pd.DataFrame | None = None,
    *,
    window: float | None = defaults.STREAM_WINDOW,
    dependencies: bool = True,
    now: pd.Timestamp | None = None,
    fig: Figure | None = None,
) -> Figure:
    """A timeline of the last ``window`` seconds of activity (``None``: all of it): one lane per
    worker, one mark per attempt in its task's colour, outlined and hatched by how it ended, with
    the time it waited in the queue as a grey line before it. With ``dependencies``, arrows join
    the attempts of one workflow in the order they ran. ``fig.marks`` holds what was drawn (see
    :func:`stream_marks`, plus the drawn ``left`` and ``right`` edges). With ``fig``, draws into it
    (an interactive figure), in place of what it showed."""
    frame = _frame(frame)
    if fig is None:
        fig, ax = _figure(STREAM_SIZE)
    else:
        fig.clear()
        ax = fig.add_subplot()
    marks = stream_marks(frame, window=window, now=now)
    fig.marks = marks  # type: ignore[attr-defined]
    if marks.empty:
        return _empty(fig, ax, "Task stream")
    fig.subplots_adjust(left=0.16, right=0.98, bottom=0.16, top=0.80)  # fixed: a layout engine costs more
    origin = marks["origin"].iloc[0]
    span = max(float(marks["end"].max()), 1e-3) * 1.02
    width_px = STREAM_SIZE[0] * CSS_DPI * (0.98 - 0.16)
    marks["left"], marks["right"] = _drawn(marks, span, width_px)
    colours = task_colours(marks["name"])
    lanes = marks["lane"].to_numpy()
    ax.hlines(lanes, marks["queued"], marks["left"], colors=_WAIT, linewidth=1, zorder=0.5)  # under the marks
    labels: dict[str, tuple[str, str | None]] = {}
    for state, group in marks.groupby("state", sort=False):
        label, edge, hatch = OUTCOMES.get(str(state), (str(state).lower(), "#6d4c41", "...."))
        labels[label] = (edge, hatch)
        verts = [[(x0, v - 0.32), (x1, v - 0.32), (x1, v + 0.32), (x0, v + 0.32)]
                 for x0, x1, v in zip(group["left"], group["right"], group["lane"], strict=True)]  # fmt: skip
        faces = [colours[n] for n in group["name"]]
        collection = PolyCollection(
            verts, facecolors=faces, edgecolors=edge, linewidths=1.2 if edge != "none" else 0, hatch=hatch,
            alpha=0.55 if state == "STARTED" else 1.0,
        )  # fmt: skip
        collection.set_gid(f"stream-{state}")
        ax.add_collection(collection)
    if dependencies and marks["task_id"].isin(frame.dropna(subset=["workflow"])["task_id"]).any():
        steps = marks.merge(frame[["task_id", "attempt", "workflow"]].dropna(), on=["task_id", "attempt"])
        for _, flow in steps.sort_values("start").groupby("workflow"):
            points = list(zip(flow["left"], flow["lane"], strict=True))
            for (x0, y0), (x1, y1) in itertools.pairwise(points):
                ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "alpha": 0.4})
    workers = marks.drop_duplicates("lane").sort_values("lane")["worker"]
    ax.set_xlim(0, span)
    ax.set_ylim(-0.6, len(workers) - 0.4)
    ax.set_yticks(range(len(workers)), [w[-20:] for w in workers])
    start_text = origin.tz_convert(datetime.now().astimezone().tzinfo).strftime("%H:%M:%S")
    ax.set_xlabel(f"seconds since {start_text}")
    handles: list[Any] = [Patch(facecolor=c, label=n) for n, c in colours.items()]
    handles += [Patch(facecolor="white", edgecolor=e if e != "none" else "#424242", hatch=h, label=label)
                for label, (e, h) in labels.items()]  # fmt: skip
    handles.append(Line2D([], [], color=_WAIT, linewidth=1, label="waiting in the queue"))
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=min(len(handles), 6),
              fontsize="small", frameon=False, handlelength=1.5, columnspacing=1.0)  # fmt: skip
    return fig


def runtime_distribution(frame: pd.DataFrame | None = None) -> Figure:
    """Run-time distribution per task name, as box plots with the points over them."""
    frame = _frame(frame)
    fig, ax = _figure(SMALL_SIZE)
    ran = frame.dropna(subset=["run_s"])
    if ran.empty:
        return _empty(fig, ax, "Run time per task")
    names = sorted(ran["name"].unique())
    colours = task_colours(names)
    data = [ran.loc[ran["name"] == n, "run_s"].to_numpy() for n in names]
    ax.boxplot(data, orientation="horizontal", showfliers=False, medianprops={"color": "black"})
    rng = np.random.default_rng(0)
    for i, (name, values) in enumerate(zip(names, data, strict=True), start=1):
        ax.scatter(values, i + rng.uniform(-0.15, 0.15, len(values)), s=6, alpha=0.5, color=colours[name])
    ax.set_yticks(range(1, len(names) + 1), names)
    ax.set_xlabel("run time (s)")
    ax.set_title("Run time per task", fontsize="medium")
    fig.subplots_adjust(left=0.25, right=0.97, bottom=0.16, top=0.9)
    return fig


def throughput(frame: pd.DataFrame | None = None, *, bins: int = 40) -> Figure:
    """Attempts finished per second (bars, left axis), and the queue depth: tasks submitted but not
    started (line, right axis), over time."""
    frame = _frame(frame)
    fig, ax = _figure(SMALL_SIZE)
    if frame.empty or frame["submitted_at"].isna().all():
        return _empty(fig, ax, "Throughput and queue depth")
    origin = frame["submitted_at"].min()
    seconds = lambda column: (frame[column].dropna() - origin).dt.total_seconds().to_numpy()  # noqa: E731
    submitted, started, finished = seconds("submitted_at"), seconds("started_at"), seconds("finished_at")
    end = max(np.max(finished, initial=0), np.max(started, initial=0), np.max(submitted, initial=0)) or 1.0
    edges = np.linspace(0, end, bins + 1)
    done, _ = np.histogram(finished, edges)
    width = edges[1] - edges[0]
    bars = ax.bar(edges[:-1], done / width, width=width, align="edge", color="#90caf9", label="attempts finished / s")
    ax.set_xlabel("seconds since the first submit")
    ax.set_ylabel("attempts finished / s")
    depth_ax = ax.twinx()
    times = np.linspace(0, end, 200)
    depth = np.searchsorted(np.sort(submitted), times, side="right") - np.searchsorted(
        np.sort(started), times, side="right"
    )  # fmt: skip
    (line,) = depth_ax.plot(times, np.maximum(depth, 0), color="black", linewidth=1, label="queue depth")
    depth_ax.set_ylabel("queue depth (tasks)")
    depth_ax.set_ylim(bottom=0)
    ax.legend(handles=[bars, line], loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=2, fontsize="small",
              frameon=False)  # fmt: skip
    fig.subplots_adjust(left=0.16, right=0.86, bottom=0.16, top=0.86)
    return fig


def to_png(fig: Figure, dpi: float | None = None) -> bytes:
    """``fig`` rendered to PNG bytes (for an ``ipywidgets.Image``): by default at its shown size
    times :data:`PIXEL_RATIO`."""
    buffer = io.BytesIO()
    # Fast compression: a monitor redraws often, and the bytes go over a local socket.
    fig.savefig(buffer, format="png", dpi=dpi or fig.dpi * PIXEL_RATIO, pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


def shown_size(fig: Figure) -> tuple[int, int]:
    """The size, in CSS pixels, a figure is made to be shown at."""
    width, height = fig.get_size_inches()
    return round(width * CSS_DPI), round(height * CSS_DPI)
