"""What happened, as pandas DataFrames: one row per attempt, or one row per task.

Both read the event stream (see :mod:`tasklab.engine.events`), which lives in Redis: with the
embedded server it survives kernel restarts. Filter by time (``since``/``until``: a
datetime, or seconds ago as a number) and by task name; the time filter is applied in Redis.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import redis

from .. import defaults
from ..engine import events
from .stream import bound, columns_of, no_collection, read_columns

#: The columns of :func:`history`, those a reader wants first: a short id, the task, how it went,
#: durations in milliseconds. The rest are for analysis: full ids, timestamps, seconds.
COLUMNS = [
    "id", "name", "state", "attempt", "run_ms", "wait_ms", "worker", "error",
    "started_at", "finished_at", "submitted_at", "task_id", "version", "queue", "namespace", "workflow",
    "wait_s", "run_s",
]  # fmt: skip
#: How many of :data:`COLUMNS` a history frame shows when it is displayed (all are in the frame).
SHOWN = 8
#: Characters of an error a displayed history shows.
SHOWN_ERROR = 60
#: Characters of a task id in the ``id`` column: enough to tell a run's tasks apart.
SHORT_ID = 8
_STATE = {
    events.SUCCEEDED: "SUCCESS",
    events.FAILED: "FAILURE",
    events.RETRY: "RETRY",
    events.REVOKED: "REVOKED",
    events.LOST: "LOST",
    events.DUPLICATE: "DUPLICATE",
}


def read_events(connection: redis.Redis, since: Any = None, until: Any = None) -> list[dict[str, str]]:
    """Every event between ``since`` and ``until``, oldest first, one dict each (for a few; a
    history reads columns, see :func:`tasklab.diagnostics.stream.read_columns`)."""
    start, end = bound(since, "-"), bound(until, "+")
    found: list[dict[str, str]] = []
    while True:
        chunk = connection.xrange(events.STREAM, start, end, count=defaults.HISTORY_READ_CHUNK)
        found.extend(events.decode_all(chunk))
        if len(chunk) < defaults.HISTORY_READ_CHUNK:
            return found
        start = "(" + chunk[-1][0].decode()


def read_recent(connection: redis.Redis, count: int) -> list[dict[str, str]]:
    """The last ``count`` events, oldest first: a read whose cost does not grow with the history."""
    newest_first = connection.xrevrange(events.STREAM, "+", "-", count=count)
    return events.decode_all(list(reversed(newest_first)))


def attempts(rows: list[dict[str, str]]) -> pd.DataFrame:
    """Fold decoded events into one row per attempt (see :data:`COLUMNS`)."""
    return fold(columns_of(rows))


def fold(frame: pd.DataFrame) -> History:
    """Fold events (one row each, as :func:`~tasklab.diagnostics.stream.read_columns` reads them)
    into one row per attempt (see :data:`COLUMNS`), with pandas' grouped operations.

    An attempt is a task id and an attempt number (a submit opens attempt 0). Its state is that of
    its latest event other than the submit (PENDING if none); its times are those of its start and
    of its outcome; it waited from the task's submit, or for a retry from when the retry was due.
    A DUPLICATE event (a late outcome of a settled attempt) is a row of its own.
    """
    kind = frame["e"]
    duplicate = (kind == events.DUPLICATE).to_numpy()
    ev, dup = frame[~duplicate], frame[duplicate]
    kind = ev["e"]
    ts = pd.to_numeric(ev["ts"], errors="coerce")
    submit = kind == events.SUBMITTED
    start = kind == events.STARTED
    outcome = ~submit & ~start
    attempt = pd.to_numeric(ev["n"], errors="coerce").fillna(0).astype("int64").where(~submit, 0)
    at = pd.to_numeric(ev["at"], errors="coerce").fillna(0)
    submitted = pd.Series(np.maximum(ts, at).where(submit).to_numpy(), index=ev["id"].to_numpy()).dropna()
    submitted = submitted[~submitted.index.duplicated(keep="last")]
    error = (ev["x"] + ": " + ev["msg"].fillna("")).str.rstrip(": ").where(outcome & ev["x"].notna())
    names = {k: _STATE.get(k, str(k).upper()) for k in kind.dropna().unique()}  # a few kinds: each named once
    state = kind.map(names).where(outcome, "STARTED").where(~submit)
    parts = pd.DataFrame({
        "task_id": ev["id"], "attempt": attempt, "name": ev["t"], "namespace": ev["ns"],
        "order": np.arange(len(ev)), "state": state,
        "started": ts.where(start), "finished": ts.where(outcome),
        "run": pd.to_numeric(ev["run"], errors="coerce").where(outcome),
        "worker": ev["w"].where(~submit), "version": ev["v"].where(~outcome), "queue": ev["q"].where(~outcome),
        "error": error, "workflow": ev["wf"], "next": pd.to_numeric(ev["next"], errors="coerce").where(outcome),
    })  # fmt: skip
    grouped = parts.groupby(["task_id", "attempt"], sort=False)
    rows = grouped.last()  # the latest value of each column that has one
    rows[["name", "namespace", "order"]] = grouped[["name", "namespace", "order"]].first()
    rows = rows.reset_index()
    rows["state"] = rows["state"].fillna("PENDING")
    # When each attempt was due: a retry from its previous attempt's "next", else the task's submit.
    due = rows[["task_id", "attempt", "next"]].dropna(subset=["next"])
    due_at = pd.Series(due["next"].to_numpy(), index=pd.MultiIndex.from_arrays([due["task_id"], due["attempt"] + 1]))
    due_at = due_at[~due_at.index.duplicated(keep="last")]
    key = pd.MultiIndex.from_arrays([rows["task_id"], rows["attempt"]])
    rows["submitted_at"] = due_at.reindex(key).to_numpy()
    first = rows["attempt"] == 0
    rows.loc[first, "submitted_at"] = np.nan
    rows["submitted_at"] = rows["submitted_at"].fillna(rows["task_id"].map(submitted))
    rows["started_at"] = rows["started"].fillna(rows["finished"] - rows["run"])
    rows["finished_at"] = rows["finished"]
    if len(dup):
        late = pd.DataFrame({
            "task_id": dup["id"], "attempt": pd.to_numeric(dup["n"], errors="coerce").fillna(0).astype("int64"),
            "name": dup["t"], "namespace": dup["ns"], "state": "DUPLICATE", "worker": dup["w"],
            "finished_at": pd.to_numeric(dup["ts"], errors="coerce"), "error": "late " + dup["x"].fillna(""),
            "workflow": dup["wf"], "submitted_at": dup["id"].map(submitted),
            "order": np.flatnonzero(duplicate) - np.arange(duplicate.sum()) - 0.5,  # just before the next event
        })  # fmt: skip
        rows = pd.concat([rows, late], ignore_index=True)
    return _finish(rows)


def _finish(rows: pd.DataFrame) -> History:
    """Timestamps, durations and short ids for folded attempt rows; sorted by when they were due."""
    frame = rows.reindex(columns=[*COLUMNS, "order"])
    for column in ("submitted_at", "started_at", "finished_at"):
        seconds = pd.to_numeric(frame[column], errors="coerce")
        frame[column] = pd.to_datetime(seconds, unit="s", utc=True).astype("datetime64[ms, UTC]")
    frame["wait_s"] = (frame["started_at"] - frame["submitted_at"]).dt.total_seconds().clip(lower=0)
    frame["run_s"] = (frame["finished_at"] - frame["started_at"]).dt.total_seconds()
    frame["wait_ms"] = (frame["wait_s"] * 1000).round(1)
    frame["run_ms"] = (frame["run_s"] * 1000).round(1)
    for column in ("name", "state", "worker", "error", "task_id", "version", "queue", "namespace", "workflow"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None).infer_objects()
    frame["id"] = frame["task_id"].str[:SHORT_ID]
    frame["attempt"] = frame["attempt"].fillna(0).astype(int)
    frame = frame.sort_values(["submitted_at", "attempt", "order"], kind="stable")
    return History(frame[COLUMNS].reset_index(drop=True))


class History(pd.DataFrame):
    """:func:`history`'s frame: every column, for analysis, shown with the first :data:`SHOWN` of
    :data:`COLUMNS` (short ids, durations in ms, errors cut short) and a line naming the others, so
    that a row fits on one line of a notebook. Rows selected from it show the same way; a choice of
    columns shows as those columns."""

    _metadata: list[str] = []

    @property
    def _constructor(self) -> type[History]:
        return History

    def for_reading(self) -> pd.DataFrame:
        """What is displayed: the first columns, errors cut short (a plain DataFrame)."""
        shown = [c for c in COLUMNS[:SHOWN] if c in self.columns]
        view = pd.DataFrame(self[shown])
        if "error" in view.columns:
            view["error"] = [_short_error(error) if isinstance(error, str) else "" for error in view["error"]]
        return view

    def _hidden(self) -> list[str]:
        return [c for c in self.columns if c not in COLUMNS[:SHOWN]]

    def _note(self) -> str:
        hidden = self._hidden()
        return f"{len(self)} attempts; also in the frame: {', '.join(hidden)}" if hidden else ""

    def _whole(self) -> bool:
        """Whether this frame has history's columns (rows may be left out), not a choice of them."""
        return list(self.columns) == COLUMNS

    def __repr__(self) -> str:
        if not self._whole():
            return pd.DataFrame.__repr__(self)
        note = self._note()
        rows = pd.get_option("display.max_rows")
        text = self.for_reading().to_string(max_rows=rows, min_rows=pd.get_option("display.min_rows"))
        return text + (f"\n({note})" if note else "")

    def _repr_html_(self) -> str:
        if not self._whole():
            return pd.DataFrame(self).to_html(notebook=True, max_rows=pd.get_option("display.max_rows"))
        html = self.for_reading().to_html(notebook=True, max_rows=pd.get_option("display.max_rows"))
        note = self._note()
        return f"{html}<p style='font-size: 85%'>{note}</p>" if note else html


def _short_error(error: str) -> str:
    if len(error) <= SHOWN_ERROR:
        return error
    return error[: SHOWN_ERROR - 1] + "…"


def history(
    connection: redis.Redis,
    *,
    since: Any = None,
    until: Any = None,
    name: str | list[str] | None = None,
    namespace: str | None = None,
) -> pd.DataFrame:
    """One row per attempt (see :data:`COLUMNS`): id (short), name, state, attempt, run_ms, wait_ms,
    worker, error; then started_at, finished_at, submitted_at (UTC, to the millisecond), task_id,
    version, queue, namespace, workflow, wait_s, run_s. Displayed, it shows the first eight."""
    with no_collection():
        frame = fold(read_columns(connection, since, until))
    if name is not None:
        frame = frame[frame["name"].isin([name] if isinstance(name, str) else name)]
    if namespace is not None:
        frame = frame[frame["namespace"] == namespace]
    return History(frame.reset_index(drop=True))


def stats(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per task name: attempts counted by their state, retries, mean/p50/p95 run time, throughput."""
    columns = ["name", "attempts", "SUCCESS", "FAILURE", "RETRY", "REVOKED", "LOST", "PENDING", "STARTED",
               "retries", "run_mean_s", "run_p50_s", "run_p95_s", "throughput_per_s"]  # fmt: skip
    if frame.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for name, group in frame.groupby("name", sort=True):
        counts = group["state"].value_counts()
        run = group["run_s"].dropna()
        finished = group["finished_at"].dropna()
        span = (finished.max() - group["submitted_at"].min()).total_seconds() if len(finished) else np.nan
        row = {"name": name, "attempts": len(group), "retries": int((group["attempt"] > 0).sum())}
        row.update({state: int(counts.get(state, 0)) for state in columns[2:9]})
        row.update(
            run_mean_s=run.mean() if len(run) else np.nan,
            run_p50_s=run.quantile(0.5) if len(run) else np.nan,
            run_p95_s=run.quantile(0.95) if len(run) else np.nan,
            throughput_per_s=len(finished) / span if span and span > 0 else np.nan,
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)
