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

from ..engine import events
from .stream import no_collection, read_columns

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


def fold(frame: pd.DataFrame) -> History:
    """Fold events (one row each, as :func:`~tasklab.diagnostics.stream.read_columns` reads them)
    into one row per attempt (see :data:`COLUMNS`), with numpy's and pandas' operations on whole
    columns: no Python runs per event.

    An attempt is a task id and an attempt number (a submit opens attempt 0). Its state is that of
    its latest event other than the submit (PENDING if none); its times are those of its start and
    of its outcome; it waited from the task's submit, or for a retry from when the retry was due.
    Each of its other columns is the latest value its events gave (a name and namespace, the first).
    A DUPLICATE event (a late outcome of a settled attempt) is a row of its own.
    """
    kind_codes, kinds = pd.factorize(frame["e"].to_numpy(dtype=object))
    duplicate = kind_codes == _code_of(kinds, events.DUPLICATE)
    ev, dup = (frame[~duplicate], frame[duplicate]) if duplicate.any() else (frame, frame.iloc[0:0])
    kind_codes = kind_codes[~duplicate]
    count = len(ev)
    submit = kind_codes == _code_of(kinds, events.SUBMITTED)
    start = kind_codes == _code_of(kinds, events.STARTED)
    outcome = ~submit & ~start
    ts = ev["ts"].to_numpy(dtype=np.float64)
    n = ev["n"].to_numpy(dtype=np.float64)
    attempt = np.where(submit | np.isnan(n), 0, np.nan_to_num(n)).astype(np.int64)
    id_codes, task_ids = pd.factorize(ev["id"].to_numpy(dtype=object))
    # Each event's attempt, numbered in the order of the attempts' first events.
    group, _ = pd.factorize(id_codes.astype(np.int64) * (int(attempt.max(initial=0)) + 2) + attempt)
    groups = int(group.max(initial=-1)) + 1
    rows_of = _Latest(group, groups)
    first = rows_of.first()

    # A task's submit time: its latest submit's (or when it was due, if later).
    at = np.nan_to_num(ev["at"].to_numpy(dtype=np.float64), nan=0.0)
    submit_rows = np.flatnonzero(submit)
    latest_submit = np.full(len(task_ids), -1)
    np.maximum.at(latest_submit, id_codes[submit_rows], submit_rows)
    submitted = _take(np.maximum(ts, at), latest_submit)

    def latest(column: str, where: np.ndarray) -> np.ndarray:
        values = ev[column].to_numpy()
        return _take(values, rows_of.last(where & pd.notna(values)))

    x = ev["x"].to_numpy(dtype=object)
    failed = np.flatnonzero(outcome & pd.notna(x))
    error = np.full(count, None, dtype=object)
    messages = ev["msg"].to_numpy(dtype=object)[failed]
    error[failed] = [
        f"{t}: {m if isinstance(m, str) else ''}".rstrip(": ") for t, m in zip(x[failed], messages, strict=True)
    ]
    last_state = rows_of.last(~submit)
    names = np.array([_STATE.get(k, str(k).upper()) for k in kinds] + ["STARTED", "PENDING"], dtype=object)
    state_code = np.where(start, len(kinds), kind_codes)
    state = names[np.where(last_state >= 0, state_code[np.maximum(last_state, 0)], len(kinds) + 1)]
    finished = _take(ts, rows_of.last(outcome))
    run = latest("run", outcome)
    following = latest("next", outcome)
    task_of = id_codes[first]
    attempt_of = attempt[first]
    # When each attempt was due: a retry from its previous attempt's "next", else the task's submit.
    span = int(attempt.max(initial=0)) + 2
    due = pd.Series(following, index=task_of.astype(np.int64) * span + attempt_of + 1).dropna()
    due = due[~due.index.duplicated(keep="last")]
    submitted_at = due.reindex(task_of.astype(np.int64) * span + attempt_of).to_numpy(dtype=np.float64, copy=True)
    submitted_at[attempt_of == 0] = np.nan
    submitted_at = np.where(np.isnan(submitted_at), submitted[task_of], submitted_at)
    started = _take(ts, rows_of.last(start))
    # A short attempt's outcome says where it ran, in place of its STARTED event (see tasklab.engine.worker).
    everywhere = np.ones(count, dtype=bool)
    rows = pd.DataFrame({
        "task_id": np.asarray(task_ids, dtype=object)[task_of],
        "attempt": attempt_of, "name": ev["t"].to_numpy(dtype=object)[first],
        "namespace": ev["ns"].to_numpy(dtype=object)[first], "order": first.astype(np.float64), "state": state,
        "run": run, "worker": latest("w", ~submit), "version": latest("v", everywhere),
        "queue": latest("q", everywhere), "error": _take(error, rows_of.last(pd.notna(error))),
        "workflow": latest("wf", everywhere), "submitted_at": submitted_at,
        "started_at": np.where(np.isnan(started), finished - run, started), "finished_at": finished,
    })  # fmt: skip
    if len(dup):
        ids = dup["id"].to_numpy(dtype=object)
        submit_of = pd.Series(submitted, index=task_ids) if len(task_ids) else pd.Series(dtype=np.float64)
        late = pd.DataFrame({
            "task_id": ids, "attempt": pd.to_numeric(dup["n"], errors="coerce").fillna(0).astype("int64"),
            "name": dup["t"], "namespace": dup["ns"], "state": "DUPLICATE", "worker": dup["w"],
            "finished_at": pd.to_numeric(dup["ts"], errors="coerce"), "error": "late " + dup["x"].fillna(""),
            "workflow": dup["wf"], "submitted_at": submit_of.reindex(ids).to_numpy(),
            "order": np.flatnonzero(duplicate) - np.arange(duplicate.sum()) - 0.5,  # just before the next event
        })  # fmt: skip
        rows = pd.concat([rows, late], ignore_index=True)
    return _finish(rows)


def _code_of(kinds: Any, kind: str) -> int:
    """``kind``'s code among the factorized ``kinds``, or -1 (which no event has) if absent."""
    found = np.flatnonzero(np.asarray(kinds, dtype=object) == kind)
    return int(found[0]) if len(found) else -1


def _take(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values[rows]``, missing (NaN, or None for text) where ``rows`` is -1."""
    values = np.asarray(values)
    if values.dtype.kind != "f":
        values = values.astype(object)
    missing = rows < 0
    taken = values[np.where(missing, 0, rows)] if len(values) else np.full(len(rows), np.nan, dtype=values.dtype)
    if missing.any():
        taken = taken.copy()
        taken[missing] = np.nan if taken.dtype.kind == "f" else None
    return taken


class _Latest:
    """The first and the latest rows of each group that meet a condition, in whole-column passes."""

    def __init__(self, group: np.ndarray, groups: int) -> None:
        self.group, self.groups = group, groups

    def last(self, where: np.ndarray) -> np.ndarray:
        """Per group, its latest row where ``where`` holds, or -1."""
        rows = np.flatnonzero(where)
        found = np.full(self.groups, -1, dtype=np.int64)
        np.maximum.at(found, self.group[rows], rows)
        return found

    def first(self) -> np.ndarray:
        """Per group, its first row."""
        found = np.full(self.groups, len(self.group), dtype=np.int64)
        np.minimum.at(found, self.group, np.arange(len(self.group)))
        return found


def _finish(rows: pd.DataFrame) -> History:
    """Timestamps, durations and short ids for folded attempt rows; sorted by when they were due."""
    frame = rows.reindex(columns=[*COLUMNS, "order"])
    seconds = {
        column: pd.to_numeric(frame[column], errors="coerce")
        for column in ("submitted_at", "started_at", "finished_at")
    }
    for column, values in seconds.items():
        frame[column] = pd.to_datetime(values, unit="s", utc=True).astype("datetime64[ms, UTC]")
    # From the times as written, not as shown (to the millisecond): a short task runs for less than one.
    frame["wait_s"] = (seconds["started_at"] - seconds["submitted_at"]).clip(lower=0)
    frame["run_s"] = seconds["finished_at"] - seconds["started_at"]
    frame["wait_ms"] = (frame["wait_s"] * 1000).round(1)
    frame["run_ms"] = (frame["run_s"] * 1000).round(1)
    for column in ("name", "state", "worker", "error", "task_id", "version", "queue", "namespace", "workflow"):
        if frame[column].dtype == object:  # text columns are pandas' text already: only these need it
            frame[column] = frame[column].where(frame[column].notna(), None).infer_objects()
    task_ids = frame["task_id"]  # a comprehension: a third faster than .str[:SHORT_ID] here
    frame["id"] = pd.Series([t[:SHORT_ID] if isinstance(t, str) else t for t in task_ids.to_numpy(dtype=object)],
                            index=frame.index, dtype=task_ids.dtype)  # fmt: skip
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
