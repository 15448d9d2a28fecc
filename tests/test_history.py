"""tasklab.history() reads well in a notebook and keeps every column for analysis."""

from __future__ import annotations

import time

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


def test_short_attempts_say_where_they_ran(shell, lab):
    """Short attempts write no STARTED event: each row still has its queue, version, worker and times,
    from the SUBMITTED event for a first attempt and from the outcome's own fields for a retry."""
    task_cell(
        shell,
        "from rq import get_current_job\n\n"
        "def once(key):\n"
        "    if get_current_job().connection.incr(key) == 1:\n"
        "        raise ConnectionError('once')\n"
        "    return 'ok'\n",
        "--autoretry-for ConnectionError --max-retries 1 --retry-backoff 1",
    )
    result = shell.user_ns["once"].delay("t:once")
    lab.workers(1)
    assert result.get(timeout=10) == "ok"
    rows = lab.history(name="once").sort_values("attempt").to_dict("records")
    assert [(row["attempt"], row["state"]) for row in rows] == [(0, "RETRY"), (1, "SUCCESS")]
    versions = {row["version"] for row in rows}
    assert {row["queue"] for row in rows} == {"default"} and len(versions) == 1 and None not in versions
    for row in rows:
        assert row["worker"] and row["submitted_at"] <= row["started_at"] <= row["finished_at"]


def test_history_folds_every_kind_of_event(lab):
    """The events of a retried task, a task lost and requeued (acks_late), a late duplicate, a
    countdown, and a running one, written as the runtime writes them, fold into these attempts."""
    from tasklab.engine import events

    ns, emit = lab.namespace, events.emit
    with lab.connection.pipeline(transaction=False) as pipe:
        emit(pipe, events.SUBMITTED, "retried", "fetch", ns, q="io", v="v1")
        emit(pipe, events.STARTED, "retried", "fetch", ns, n=0, w="w1", q="io")
        emit(pipe, events.RETRY, "retried", "fetch", ns, n=0, w="w1", run=0.01, x="IOError", msg="down",
             next=repr(2e9))  # fmt: skip
        emit(pipe, events.STARTED, "retried", "fetch", ns, n=1, w="w2", v="v2")
        emit(pipe, events.SUCCEEDED, "retried", "fetch", ns, n=1, w="w2", run=0.02)
        emit(pipe, events.SUBMITTED, "lost", "crunch", ns, v="v1")
        emit(pipe, events.STARTED, "lost", "crunch", ns, n=0, w="w3")
        emit(pipe, events.LOST, "lost", "crunch", ns, n=0, w="w3", x="WorkerLostError", msg="", next=repr(2e9 + 5))
        emit(pipe, events.DUPLICATE, "lost", "crunch", ns, n=0, w="w3", x="SUCCESS")
        emit(pipe, events.SUBMITTED, "later", "crunch", ns, at=repr(3e9))
        emit(pipe, events.SUBMITTED, "running", "crunch", ns, wf="flow")
        emit(pipe, events.STARTED, "running", "crunch", ns, n=0, w="w1", wf="flow")
        # A short attempt, its start never written: its outcome says where it ran.
        emit(pipe, events.SUBMITTED, "short", "fetch", ns, q="io", v="v1")
        emit(pipe, events.RETRY, "short", "fetch", ns, n=0, w="w1", run=0.01, x="IOError", msg="down",
             next=repr(2e9), q="io", v="v1")  # fmt: skip
        emit(pipe, events.SUCCEEDED, "short", "fetch", ns, n=1, w="w2", run=0.02, q="io2", v="v2", ts=2e9 + 1)
        pipe.execute()
    frame = lab.history().set_index(["task_id", "attempt", "state"])
    rows = {key: row for key, row in frame.iterrows()}
    assert set(rows) == {("retried", 0, "RETRY"), ("retried", 1, "SUCCESS"), ("lost", 0, "LOST"),
                         ("lost", 0, "DUPLICATE"), ("later", 0, "PENDING"),
                         ("running", 0, "STARTED"), ("short", 0, "RETRY"), ("short", 1, "SUCCESS")}  # fmt: skip
    first, second = rows[("retried", 0, "RETRY")], rows[("retried", 1, "SUCCESS")]
    assert (first["error"], first["worker"], first["queue"], first["version"]) == ("IOError: down", "w1", "io", "v1")
    assert (second["worker"], second["version"]) == ("w2", "v2") and pd.isna(second["error"])
    assert second["submitted_at"] == pd.Timestamp(2e9, unit="s", tz="UTC"), "a retry waits from when it was due"
    assert rows[("lost", 0, "LOST")]["error"] == "WorkerLostError"
    assert rows[("lost", 0, "DUPLICATE")]["error"] == "late SUCCESS"
    assert rows[("later", 0, "PENDING")]["submitted_at"] == pd.Timestamp(3e9, unit="s", tz="UTC"), "a countdown"
    assert rows[("running", 0, "STARTED")]["workflow"] == "flow"
    short = rows[("short", 1, "SUCCESS")]
    assert (short["worker"], short["queue"], short["version"]) == ("w2", "io2", "v2")
    assert short["started_at"] == pd.Timestamp(2e9 + 1 - 0.02, unit="s", tz="UTC").floor("ms"), "its end less its run"
    assert pd.isna(rows[("running", 0, "STARTED")]["finished_at"])
    due = list(zip(lab.history()["task_id"], lab.history()["attempt"], strict=True))
    assert due[:5] == [("retried", 0), ("lost", 0), ("lost", 0), ("running", 0), ("short", 0)], "as they were due"
    assert due[5:] == [("retried", 1), ("short", 1), ("later", 0)]


def test_events_are_read_by_name_whatever_their_order():
    """Events whose fields come in another order (not written by emit) are read by their names."""
    from tasklab.diagnostics.stream import _columns

    ordered = [b"e", b"submitted", b"id", b"a", b"t", b"x", b"ns", b"n", b"ts", b"1.5"]
    shuffled = [b"ts", b"2.5", b"ns", b"n", b"e", b"started", b"w", b"w1", b"id", b"a", b"t", b"x"]
    frame = _columns([b"1-0", b"2-0"], [ordered, shuffled])
    assert list(frame["e"]) == ["submitted", "started"] and list(frame["ts"]) == [1.5, 2.5]
    assert frame["w"].isna().tolist() == [True, False] and frame["w"][1] == "w1" and list(frame["id"]) == ["a", "a"]
    frame = _columns([b"1-0", b"2-0"], [ordered, ordered])
    assert list(frame["e"]) == ["submitted", "submitted"] and frame["w"].isna().all()


def test_any_text_in_an_event_comes_back_whole_and_earlier_entries_are_read_in_place(lab):
    """A value holding the record's separator, a quote or line breaks comes back whole, both in a
    history and from one event's decode; a name such as "NA" stays a name; and entries of the
    stream's earlier form (a stream field per event field) are read in their place among records."""
    from tasklab.engine import events

    ns, message = lab.namespace, 'bad "value":\n\tline two\r\n\x1fafter the separator'

    def earlier(pipe, **fields):
        fields.update(t="legacy", ns=ns, ts=repr(time.time()))
        pipe.execute_command("XADD", events.STREAM, "*", *[item for pair in fields.items() for item in pair])

    with lab.connection.pipeline(transaction=False) as pipe:
        earlier(pipe, e=events.SUBMITTED, id="old", q="default")
        events.emit(pipe, events.SUBMITTED, "new", "NA", ns, q="default")
        earlier(pipe, e=events.STARTED, id="old", n="0", w="w0")
        events.emit(pipe, events.STARTED, "new", "NA", ns, n=0, w="w1")
        events.emit(pipe, events.SUCCEEDED, "old", "legacy", ns, n=0, w="w0", run=0.25)
        events.emit(pipe, events.FAILED, "new", "NA", ns, n=0, w="w1", run=0.5, x="ValueError", msg=message)
        pipe.execute()
    rows = lab.history().set_index("task_id")
    assert (rows.loc["new", "name"], rows.loc["new", "state"]) == ("NA", "FAILURE")
    assert rows.loc["new", "error"] == "ValueError: " + message
    old = rows.loc["old"]
    assert (old["state"], old["worker"], old["queue"]) == ("SUCCESS", "w0", "default")
    assert old["started_at"] <= rows.loc["new", "started_at"], "started by its event of the earlier form"
    decoded = [events.decode(entry_id, fields) for entry_id, fields in lab.connection.xrange(events.STREAM)]
    assert [(e["e"], e["id"]) for e in decoded] == [
        ("submitted", "old"), ("submitted", "new"), ("started", "old"), ("started", "new"),
        ("succeeded", "old"), ("failed", "new"),
    ]  # fmt: skip
    assert decoded[-1]["msg"] == message and decoded[-1]["t"] == "NA" and "next" not in decoded[-1]
