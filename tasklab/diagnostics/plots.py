"""Timing plots with matplotlib. Each takes a history DataFrame (or reads the current lab's history)
and returns a Figure; :func:`to_svg` renders one for an ``Image`` widget (the monitor's), and
:func:`to_png` as pixels.

Figures are made with ``matplotlib.figure.Figure`` directly, not ``pyplot``, so drawing from
a monitor's thread touches no global state and leaves no figure open. Each figure's size is the
size it is shown at (:data:`CSS_DPI` pixels an inch): its SVG is that size, and sharp at any pixel
ratio; :func:`to_png` renders it at :data:`PIXEL_RATIO` times that, so that it stays sharp on a
high-density screen. Given the figure it drew before (``fig=``), a plot draws into it again.

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
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, PathPatch
from matplotlib.path import Path
from matplotlib.ticker import AutoLocator, ScalarFormatter

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


def _figure(size: tuple[float, float], fig: Figure | None = None, *, twin: bool = False) -> tuple[Figure, Any]:
    """A figure of ``size`` and its axes (with ``twin``, the second y axis is made as well): a new
    one, or ``fig`` emptied of what it drew. Its axes are kept, as making new ones (each with its
    ticks) costs more than anything a plot of a few thousand attempts draws."""
    if fig is None or len(fig.axes) != (2 if twin else 1):
        if fig is None:
            fig = Figure(figsize=size, dpi=CSS_DPI)
        else:
            fig.clear()
        ax = fig.add_subplot()
        if twin:
            ax.twinx()
        return fig, ax
    for ax in fig.axes:
        for artist in [*ax.patches, *ax.lines, *ax.collections, *ax.texts, *ax.artists, *ax.images]:
            artist.remove()
        legend = ax.get_legend()
        if legend is not None:
            legend.remove()
        ax.set_title("")
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.ignore_existing_data_limits = True
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(AutoLocator())
            axis.set_major_formatter(ScalarFormatter())
        ax.set_autoscale_on(True)
    return fig, fig.axes[0]


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


def _rectangles(left: np.ndarray, right: np.ndarray, lane: np.ndarray, half: float = 0.32) -> Path:
    """One path holding a rectangle per mark (``left`` to ``right``, ``lane`` +/- ``half``)."""
    verts = np.empty((len(left), 5, 2))
    verts[:, [0, 3, 4], 0] = left[:, None]
    verts[:, [1, 2], 0] = right[:, None]
    verts[:, [0, 1, 4], 1] = (lane - half)[:, None]
    verts[:, [2, 3], 1] = (lane + half)[:, None]
    codes = np.tile(np.array([Path.MOVETO, Path.LINETO, Path.LINETO, Path.LINETO, Path.CLOSEPOLY], Path.code_type),
                    len(left))  # fmt: skip
    return Path(verts.reshape(-1, 2), codes)


def _segments(start: np.ndarray, end: np.ndarray, lane: np.ndarray) -> Path:
    """One path holding a horizontal segment per mark."""
    verts = np.empty((len(start), 2, 2))
    verts[:, 0, 0], verts[:, 1, 0], verts[:, :, 1] = start, end, lane[:, None]
    codes = np.tile(np.array([Path.MOVETO, Path.LINETO], Path.code_type), len(start))
    return Path(verts.reshape(-1, 2), codes)


def drawn_marks(fig: Figure) -> int:
    """How many attempt marks the task stream ``fig`` holds: its rectangles, counted in what it draws."""
    return sum(
        int(np.count_nonzero(np.asarray(patch.get_path().codes) == Path.CLOSEPOLY))
        for ax in fig.axes for patch in ax.patches if str(patch.get_gid()).startswith("stream-")
    )  # fmt: skip


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
    fig, ax = _figure(STREAM_SIZE, fig)
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
    lanes = marks["lane"].to_numpy(float)
    # Everything of one kind is one compound path: Agg fills one path of 1,000 rectangles many
    # times faster than 1,000 paths, and building it is a few array operations.
    # add_artist, not add_patch: the limits are set below, and add_patch's bound of a path walks it in Python.
    ax.add_artist(PathPatch(_segments(marks["queued"].to_numpy(float), marks["left"].to_numpy(float), lanes),
                           fill=False, edgecolor=_WAIT, linewidth=1, zorder=0.5))  # fmt: skip  # under the marks
    labels: dict[str, tuple[str, str | None]] = {}
    for (state, name), group in marks.groupby(["state", "name"], sort=False):
        label, edge, hatch = OUTCOMES.get(str(state), (str(state).lower(), "#6d4c41", "...."))
        labels[label] = (edge, hatch)
        path = _rectangles(group["left"].to_numpy(float), group["right"].to_numpy(float),
                           group["lane"].to_numpy(float))  # fmt: skip
        patch = PathPatch(
            path, facecolor=colours[str(name)], edgecolor=edge, linewidth=1.2 if edge != "none" else 0, hatch=hatch,
            alpha=0.55 if state == "STARTED" else 1.0,
        )  # fmt: skip
        patch.set_gid(f"stream-{state}")
        ax.add_artist(patch)
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


def runtime_distribution(frame: pd.DataFrame | None = None, *, fig: Figure | None = None) -> Figure:
    """Run-time distribution per task name, as box plots with the points over them. With ``fig``,
    draws into it, in place of what it showed."""
    frame = _frame(frame)
    fig, ax = _figure(SMALL_SIZE, fig)
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


def throughput(frame: pd.DataFrame | None = None, *, bins: int = 40, fig: Figure | None = None) -> Figure:
    """Attempts finished per second (bars, left axis), and the queue depth: tasks submitted but not
    started (line, right axis), over time. With ``fig``, draws into it, in place of what it showed."""
    frame = _frame(frame)
    fig, ax = _figure(SMALL_SIZE, fig, twin=True)
    depth_ax = fig.axes[1]
    if frame.empty or frame["submitted_at"].isna().all():
        depth_ax.set_visible(False)
        return _empty(fig, ax, "Throughput and queue depth")
    depth_ax.set_visible(True)
    origin = frame["submitted_at"].min()
    seconds = lambda column: (frame[column].dropna() - origin).dt.total_seconds().to_numpy()  # noqa: E731
    submitted, started, finished = seconds("submitted_at"), seconds("started_at"), seconds("finished_at")
    end = max(np.max(finished, initial=0), np.max(started, initial=0), np.max(submitted, initial=0)) or 1.0
    edges = np.linspace(0, end, bins + 1)
    done, _ = np.histogram(finished, edges)
    width = edges[1] - edges[0]
    bars = ax.stairs(done / width, edges, fill=True, color="#90caf9", label="attempts finished / s")  # one patch
    ax.set_xlabel("seconds since the first submit")
    ax.set_ylabel("attempts finished / s")
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


def to_svg(fig: Figure) -> bytes:
    """``fig`` as SVG (for an ``ipywidgets.Image`` of format ``svg+xml``), shown at the size it was
    made for: sharp at any pixel ratio, and cheaper to make than a PNG of twice that size (here, a
    quarter of the time for the task stream, half for the throughput), for its text is left to the
    browser (in matplotlib's fonts, or the closest it has)."""
    buffer = io.BytesIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "tasklab"}):  # the same figure, the same bytes
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


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
