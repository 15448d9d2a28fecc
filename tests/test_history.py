"""tasklab.history() reads well in a notebook and keeps every column for analysis."""

from __future__ import annotations

import pandas as pd

import tasklab
from tasklab.diagnostics.frames import COLUMNS, SHOWN

from .conftest import task_cell


def test_history_reads_well_and_keeps_the_raw_columns(shell, lab):
    lab.workers(1)
    task_cell(shell, "def ok(x):\n    return x\n\ndef bad():\n    raise ValueError('no ' + 'x' * 200)\n")
    results = [shell.user_ns["ok"].delay(i) for i in range(3)]
    failing = shell.user_ns["bad"].apply_async()
    for r in results:
        r.get(timeout=10)
    failing.get(timeout=10, propagate=False)
    frame = tasklab.history()
    assert list(frame.columns) == COLUMNS
    assert list(frame.columns[:SHOWN]) == ["id", "name", "state", "attempt", "run_ms", "wait_ms", "worker", "error"]
    assert (frame["id"] == frame["task_id"].str[:8]).all()
    assert ((frame["run_ms"] - frame["run_s"] * 1000).abs() < 0.1).all()
    assert frame["started_at"].dtype == "datetime64[ms, UTC]"
    # Shown, a row fits on a line: the first columns, errors cut short, and a note naming the rest.
    text = repr(frame)
    rows = text.splitlines()
    assert len(rows) == 1 + len(frame) + 1, text  # header, one line per attempt, the note
    assert max(len(row) for row in rows[:-1]) <= 150, text
    assert "task_id" not in rows[0] and "also in the frame: started_at" in rows[-1]
    assert "no xxxxx" in text and "x" * 100 not in text
    assert "also in the frame" in frame._repr_html_()
    # Selections and analysis keep working on the raw columns.
    assert isinstance(frame[frame["state"] == "SUCCESS"], pd.DataFrame)
    assert len(frame[frame["state"] == "SUCCESS"]) == 3
    assert frame.groupby("name")["run_s"].count().to_dict() == {"bad": 1, "ok": 3}
    chosen = repr(frame[["task_id", "run_s"]])
    assert "task_id" in chosen.splitlines()[0] and "also in the frame" not in chosen, "a choice of columns shows them"
    assert "also in the frame" in repr(frame[frame["name"] == "ok"]), "rows of it show as history does"
