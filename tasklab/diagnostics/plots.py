"""Timing plots with matplotlib. Each takes a history DataFrame (or reads the current lab's history)
and returns a Figure; :func:`to_png` renders one for an ``Image`` widget.

Figures are made with ``matplotlib.figure.Figure`` directly, not ``pyplot``, so drawing from
a monitor's thread touches no global state and leaves no figure open.
"""

from __future__ import annotations

import io
import itertools
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..core.app import default_app
from .frames import history

_FAILED = {"FAILURE", "LOST", "REVOKED"}


def _frame(frame: pd.DataFrame | None) -> pd.DataFrame:
    return frame if frame is not None else history(default_app().connection)


def _colours(names: list[str]) -> dict[str, Any]:
    palette = colormaps["tab10"]
    return {name: palette(i % 10) for i, name in enumerate(sorted(names))}


def _empty(fig: Figure, ax: Any, title: str) -> Figure:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no tasks yet", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def task_stream(frame: pd.DataFrame | None = None, *, dependencies: bool = True) -> Figure:
    """A timeline: one lane per worker, a bar per attempt coloured by task name.

    Queue wait shows as a thin line before each bar; failures are hatched and outlined in
    red, retried attempts outlined in orange. With ``dependencies``, arrows join the
    attempts of one workflow in the order they ran.
    """
    frame = _frame(frame)
    fig = Figure(figsize=(10, 3.5))
    ax = fig.add_subplot()
    ran = frame.dropna(subset=["started_at"])
    if ran.empty:
        return _empty(fig, ax, "Task stream")
    origin = ran["submitted_at"].min()
    workers = sorted(ran["worker"].fillna("?").unique())
    lane = {w: i for i, w in enumerate(workers)}
    colours = _colours(list(ran["name"].unique()))
    now = pd.Timestamp.now(tz="UTC")
    y = ran["worker"].fillna("?").map(lane).to_numpy()
    start = (ran["started_at"] - origin).dt.total_seconds().to_numpy()
    end = (ran["finished_at"].fillna(now) - origin).dt.total_seconds().to_numpy()
    queued = (ran["submitted_at"].fillna(ran["started_at"]) - origin).dt.total_seconds().to_numpy()
    colour = [colours[n] for n in ran["name"]]
    ax.hlines(y, queued, start, colors=colour, linewidth=1, alpha=0.5)
    failed = ran["state"].isin(_FAILED).to_numpy()
    retried = (ran["state"] == "RETRY").to_numpy()
    width = np.maximum(end - start, 1e-4)
    for mask, edge, hatch in ((~failed & ~retried, "none", None), (retried, "orange", None), (failed, "red", "//")):
        if mask.any():  # one collection per style: a thousand bars draw as fast as one
            verts = [[(x, v - 0.3), (x + dx, v - 0.3), (x + dx, v + 0.3), (x, v + 0.3)]
                     for x, dx, v in zip(start[mask], width[mask], y[mask], strict=True)]  # fmt: skip
            faces = [c for c, m in zip(colour, mask, strict=True) if m]
            ax.add_collection(PolyCollection(verts, facecolors=faces, edgecolors=edge, linewidths=1.5, hatch=hatch))
    ax.autoscale_view()
    if dependencies and "workflow" in ran and ran["workflow"].notna().any():
        for _, steps in ran.dropna(subset=["workflow"]).sort_values("started_at").groupby("workflow"):
            points = [((r.started_at - origin).total_seconds(), lane.get(r.worker, 0)) for r in steps.itertuples()]
            for (x0, y0), (x1, y1) in itertools.pairwise(points):
                ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "alpha": 0.4})
    ax.set_yticks(range(len(workers)), [w[-18:] for w in workers])
    ax.set_xlabel("seconds since the first submit")
    ax.set_title("Task stream (line: waiting in the queue; hatched: failed; orange edge: retried)")
    handles = [Patch(color=c, label=n) for n, c in colours.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    fig.subplots_adjust(left=0.17, right=0.86, bottom=0.15, top=0.9)  # fixed: a layout engine costs more than drawing
    return fig


def runtime_distribution(frame: pd.DataFrame | None = None) -> Figure:
    """Run-time distribution per task name, as box plots with the points over them."""
    frame = _frame(frame)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    ran = frame.dropna(subset=["run_s"])
    if ran.empty:
        return _empty(fig, ax, "Run time")
    names = sorted(ran["name"].unique())
    data = [ran.loc[ran["name"] == n, "run_s"].to_numpy() for n in names]
    ax.boxplot(data, orientation="horizontal", showfliers=False)
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        ax.scatter(values, i + rng.uniform(-0.15, 0.15, len(values)), s=6, alpha=0.4)
    ax.set_yticks(range(1, len(names) + 1), names)
    ax.set_xlabel("run time (s)")
    ax.set_title("Run time per task")
    fig.subplots_adjust(left=0.22, right=0.97, bottom=0.15, top=0.9)
    return fig


def throughput(frame: pd.DataFrame | None = None, *, bins: int = 40) -> Figure:
    """Attempts finished per second, and the queue depth (submitted but not started), over time."""
    frame = _frame(frame)
    fig = Figure(figsize=(8, 3.5))
    ax = fig.add_subplot()
    if frame.empty or frame["submitted_at"].isna().all():
        return _empty(fig, ax, "Throughput and queue depth")
    origin = frame["submitted_at"].min()
    seconds = lambda column: (frame[column].dropna() - origin).dt.total_seconds().to_numpy()  # noqa: E731
    submitted, started, finished = seconds("submitted_at"), seconds("started_at"), seconds("finished_at")
    end = max(np.max(finished, initial=0), np.max(started, initial=0), np.max(submitted, initial=0)) or 1.0
    edges = np.linspace(0, end, bins + 1)
    done, _ = np.histogram(finished, edges)
    width = edges[1] - edges[0]
    ax.bar(edges[:-1], done / width, width=width, align="edge", alpha=0.6, label="finished per second")
    ax.set_xlabel("seconds since the first submit")
    ax.set_ylabel("attempts / s")
    depth_ax = ax.twinx()
    times = np.linspace(0, end, 200)
    depth = np.searchsorted(np.sort(submitted), times, side="right") - np.searchsorted(
        np.sort(started), times, side="right"
    )  # fmt: skip
    depth_ax.plot(times, np.maximum(depth, 0), color="black", linewidth=1, label="queue depth")
    depth_ax.set_ylabel("waiting")
    fig.legend(loc="upper right", fontsize="small", frameon=False)
    ax.set_title("Throughput and queue depth")
    fig.subplots_adjust(left=0.1, right=0.9, bottom=0.15, top=0.88)
    return fig


def to_png(fig: Figure, dpi: int = 80) -> bytes:
    """``fig`` rendered to PNG bytes (for an ``ipywidgets.Image``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
