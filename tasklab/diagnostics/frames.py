"""What happened, as pandas DataFrames: one row per attempt, or one row per task.

Both read the event stream (see :mod:`tasklab.engine.events`), which lives in Redis: with the
embedded server it survives kernel restarts. Filter by time (``since``/``until``: a
datetime, or seconds ago as a number) and by task name; the time filter is applied in Redis.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import redis

from .. import defaults
from ..engine import events

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


def _stream_bound(when: Any, default: str) -> str:
    if when is None:
        return default
    if isinstance(when, int | float):
        when = datetime.now(timezone.utc).timestamp() - when
    elif isinstance(when, datetime | pd.Timestamp):
        when = pd.Timestamp(when).tz_localize("UTC").timestamp() if pd.Timestamp(when).tzinfo is None else (
            pd.Timestamp(when).timestamp()
        )  # fmt: skip
    return str(int(float(when) * 1000))


def read_events(connection: redis.Redis, since: Any = None, until: Any = None) -> list[dict[str, str]]:
    """Every event between ``since`` and ``until``, oldest first."""
    start, end = _stream_bound(since, "-"), _stream_bound(until, "+")
    found: list[dict[str, str]] = []
    while True:
        chunk = connection.xrange(events.STREAM, start, end, count=defaults.HISTORY_READ_CHUNK)
        found.extend(events.decode(entry_id, fields) for entry_id, fields in chunk)
        if len(chunk) < defaults.HISTORY_READ_CHUNK:
            return found
        start = "(" + chunk[-1][0].decode()


def read_recent(connection: redis.Redis, count: int) -> list[dict[str, str]]:
    """The last ``count`` events, oldest first: a read whose cost does not grow with the history."""
    newest_first = connection.xrevrange(events.STREAM, "+", "-", count=count)
    return [events.decode(entry_id, fields) for entry_id, fields in reversed(newest_first)]


def _ts(value: str | None) -> float:
    return float(value) if value else np.nan


def attempts(rows: list[dict[str, str]]) -> pd.DataFrame:
    """Fold events into one row per attempt (see :data:`COLUMNS`)."""
    table: dict[tuple[str, int], dict[str, Any]] = {}
    submitted: dict[str, float] = {}
    resubmitted: dict[tuple[str, int], float] = {}

    def attempt(event: dict[str, str], n: int) -> dict[str, Any]:
        key = (event["id"], n)
        row = table.get(key)
        if row is None:
            row = table[key] = dict.fromkeys(COLUMNS)
            row.update(task_id=event["id"], name=event["t"], attempt=n, state="PENDING", namespace=event["ns"])
            row["submitted_at"] = resubmitted.get(key, submitted.get(event["id"], np.nan))
        return row

    for event in rows:
        kind, n = event["e"], int(event.get("n", 0))
        if kind == events.DUPLICATE:  # a late outcome of a settled attempt: a row of its own
            row = table[(event["id"], n, event["stream_id"])] = dict.fromkeys(COLUMNS)  # type: ignore[index]
            row.update(task_id=event["id"], name=event["t"], attempt=n, state="DUPLICATE", namespace=event["ns"])
            row.update(worker=event.get("w"), finished_at=_ts(event["ts"]), error=f"late {event.get('x', '')}")
            row["submitted_at"] = submitted.get(event["id"], np.nan)
            continue
        if kind == events.SUBMITTED:
            submitted[event["id"]] = max(_ts(event["ts"]), _ts(event.get("at")) if event.get("at") else 0)
            row = attempt(event, 0)
            row.update(submitted_at=submitted[event["id"]], version=event.get("v"), queue=event.get("q"))
        else:
            row = attempt(event, n)
            if kind == events.STARTED:
                row.update(started_at=_ts(event["ts"]), worker=event.get("w"), state="STARTED")
                row["version"] = event.get("v") or row["version"]
                row["queue"] = event.get("q") or row["queue"]
            else:
                row["state"] = _STATE.get(kind, kind.upper())
                row["finished_at"] = _ts(event["ts"])
                row["worker"] = event.get("w") or row["worker"]
                if "run" in event and row["started_at"] is None:
                    row["started_at"] = row["finished_at"] - float(event["run"])
                if event.get("x"):
                    row["error"] = f"{event['x']}: {event.get('msg', '')}".rstrip(": ")
                if event.get("next"):
                    resubmitted[(event["id"], n + 1)] = float(event["next"])
        if event.get("wf"):
            row["workflow"] = event["wf"]
    frame = pd.DataFrame(list(table.values()), columns=COLUMNS)
    for column in ("submitted_at", "started_at", "finished_at"):
        seconds = pd.to_numeric(frame[column], errors="coerce")
        frame[column] = pd.to_datetime(seconds, unit="s", utc=True).astype("datetime64[ms, UTC]")
    frame["wait_s"] = (frame["started_at"] - frame["submitted_at"]).dt.total_seconds().clip(lower=0)
    frame["run_s"] = (frame["finished_at"] - frame["started_at"]).dt.total_seconds()
    frame["wait_ms"] = (frame["wait_s"] * 1000).round(1)
    frame["run_ms"] = (frame["run_s"] * 1000).round(1)
    frame["id"] = frame["task_id"].str[:SHORT_ID]
    frame["attempt"] = frame["attempt"].astype(int)
    frame = frame.sort_values(["submitted_at", "attempt"], kind="stable").reset_index(drop=True)
    return History(frame)


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
    frame = attempts(read_events(connection, since, until))
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
