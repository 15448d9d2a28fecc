"""Events, history DataFrames, plots and the monitor widget (headless: checked by its state)."""

from __future__ import annotations

import io
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

import tasklab
from tasklab.diagnostics.frames import fold
from tasklab.diagnostics.plots import drawn_marks, runtime_distribution, task_stream, throughput, to_png, to_svg
from tasklab.diagnostics.stream import read_recent_columns
from tasklab.engine import events
from tasklab.widgets.monitor import Monitor

from .conftest import OK_BAD_GATED as TASKS
from .conftest import run_cell, task_cell, wait_for


@pytest.fixture
def ran(shell, lab):
    """A few successes, a failure with one retry, run on two workers."""
    lab.workers(2)
    task_cell(shell, TASKS, "--autoretry-for ValueError --max-retries 1 --retry-backoff 0.05")
    ns = shell.user_ns
    ns["ok"].map_async(range(4)).get(timeout=10)
    with pytest.raises(ValueError):
        ns["bad"].delay(7).get(timeout=10)
    return ns


def test_history_has_one_row_per_attempt(ran, lab):
    frame = tasklab.history()
    assert {"task_id", "name", "version", "state", "attempt", "worker", "submitted_at", "started_at", "finished_at",
            "wait_s", "run_s", "error"} <= set(frame.columns)  # fmt: skip
    assert len(frame) == 6
    ok = frame[frame["name"] == "ok"]
    assert set(ok["state"]) == {"SUCCESS"} and (ok["attempt"] == 0).all()
    bad = frame[frame["name"] == "bad"].sort_values("attempt")
    assert list(bad["state"]) == ["RETRY", "FAILURE"] and list(bad["attempt"]) == [0, 1]
    assert bad["error"].str.startswith("ValueError: bad 7").all()
    assert (frame["wait_s"] >= 0).all() and (frame["run_s"] >= 0).all()
    assert set(frame["worker"]) <= set(lab.pool.names)
    assert frame["version"].eq(ran["ok"]._tl_version).all()
    assert isinstance(frame["started_at"].dtype, pd.DatetimeTZDtype)


def test_history_filters_by_name_and_time(ran, lab):
    assert set(tasklab.history(name="ok")["name"]) == {"ok"}
    assert len(tasklab.history(name=["ok", "bad"])) == 6
    assert tasklab.history(since=pd.Timestamp.now(tz="UTC") + pd.Timedelta(hours=1)).empty
    assert len(tasklab.history(since=600)) == 6
    assert tasklab.history(until=pd.Timestamp("2000-01-01", tz="UTC")).empty


def test_stats_per_task(ran):
    table = tasklab.stats().set_index("name")
    assert table.loc["ok", "SUCCESS"] == 4 and table.loc["ok", "retries"] == 0
    assert table.loc["bad", "FAILURE"] == 1 and table.loc["bad", "RETRY"] == 1 and table.loc["bad", "retries"] == 1
    assert table.loc["ok", "run_p95_s"] >= table.loc["ok", "run_p50_s"] > 0
    assert table.loc["ok", "throughput_per_s"] > 0
    assert tasklab.stats(name="ok").index.size == 1


def test_history_survives_a_restart(tmp_path):
    data = tmp_path / "data"
    lab = tasklab.Lab(data_dir=data, autostart_workers=False)
    try:
        lab.workers(1)
        ns: dict = {}
        tasklab.register_cell("def one():\n    return 1\n", ns, app=lab)
        ns["one"].delay().get(timeout=10)
    finally:
        lab.shutdown()
    wait_for(lambda: not lab.server.is_running(), 10, "the embedded server to stop")
    again = tasklab.Lab(data_dir=data, autostart_workers=False)
    try:
        frame = again.history()
        assert list(frame["state"]) == ["SUCCESS"] and list(frame["name"]) == ["one"]
    finally:
        again.shutdown()


def test_events_are_read_incrementally(ran, lab):
    (last_id, _), *_ = lab.connection.xrevrange(events.STREAM, "+", "-", count=1)
    ran["ok"].delay(99).get(timeout=10)
    new = lab.connection.xread({events.STREAM: last_id}, count=100)[0][1]
    kinds = [events.decode(i, f)["e"] for i, f in new]
    assert kinds == ["submitted", "succeeded"], "a short task's start is not written: no STARTED event"


def test_plots_return_figures(ran):
    frame = tasklab.history()
    for make in (task_stream, runtime_distribution, throughput):
        fig = make(frame)
        assert isinstance(fig, Figure)
        assert to_png(fig).startswith(b"\x89PNG")
        assert isinstance(make(frame.iloc[0:0]), Figure), "an empty history still plots"
    assert drawn_marks(task_stream(frame)) == len(frame), "one mark per attempt"
    for make in (task_stream, runtime_distribution, throughput):  # drawn again into the figure it drew
        fig = make(frame.iloc[0:0])
        assert make(frame, fig=fig) is fig and to_svg(fig) == to_svg(make(frame)), make.__name__


def test_an_idle_labs_monitor_does_not_draw_its_plots_again(ran, lab):
    monitor = Monitor(lab, interactive=False)
    monitor.refresh(plots=True)
    assert bytes(monitor.images["throughput"].value).startswith(b"<?xml")
    for image in monitor.images.values():
        image.value = b""  # drawn again, they would not be empty
    monitor.refresh(plots=True)
    assert all(image.value == b"" for image in monitor.images.values()), "nothing happened: nothing drawn"
    ran["ok"].delay(5).get(timeout=10)
    monitor.refresh(plots=True)
    assert all(bytes(image.value).startswith(b"<?xml") for image in monitor.images.values()), "a new event"
    for image in monitor.images.values():
        image.value = b""
    monitor.window.value = 600.0  # a wider window: drawn again at once
    assert all(bytes(image.value).startswith(b"<?xml") for image in monitor.images.values())


def test_monitor_state_after_tasks(ran, lab):
    monitor = lab.monitor(display=False, plots=False)
    totals = monitor.data["totals"]
    # Tasks by their final state: the retried task failed for good, and is no longer in RETRY.
    assert totals == {"PENDING": 0, "STARTED": 0, "RETRY": 0, "SUCCESS": 4, "FAILURE": 1, "REVOKED": 0, "LOST": 0}
    assert (monitor.data["attempts"], monitor.data["retries"]) == (6, 1), "attempts and retries are counted apart"
    assert "<b>4</b>" in monitor.counts["SUCCESS"].value and "<b>0</b>" in monitor.counts["RETRY"].value
    assert "5 tasks · 6 attempts · 1 retries" in monitor.attempts.value
    rows = {t["name"]: t for t in monitor.data["tasks"]}
    assert rows["ok"]["succeeded"] == 4 and rows["bad"]["retries"] == 1
    assert (rows["bad"]["submitted"], rows["bad"]["failed"], rows["bad"]["attempts"]) == (1, 1, 2)
    # The workers' attempts are the tasks' attempts: a retried attempt is not a failed task on either.
    assert sum(w["attempts"] for w in monitor.data["workers"]) == monitor.data["attempts"]
    assert "failed" not in monitor.workers.value
    assert rows["ok"]["version"] == ran["ok"]._tl_version[:7]
    assert "ok" in monitor.tasks.value and "bad" in monitor.tasks.value
    labels = [label for label, _ in monitor.recent.options]
    assert len(monitor.recent.options) == 5, "one line per job: its latest state"
    assert any("FAILURE" in label and "ValueError" in label for label in labels)
    assert {w["state"] for w in monitor.data["workers"]} == {"idle"} and len(monitor.data["workers"]) == 2


def test_monitor_shows_busy_workers_and_tracebacks(ran, lab):
    running = ran["gated"].delay("monitor-gate")
    wait_for(lambda: running.state == "STARTED", 10, "the job to start")
    monitor = Monitor(lab, plots=False)
    monitor.refresh()
    busy = [w for w in monitor.data["workers"] if w["job"] == running.id]
    assert busy and busy[0]["state"] == "busy" and busy[0]["task"] == "gated" and busy[0]["running_s"] >= 0
    assert busy[0]["cpu"] is not None and busy[0]["memory"] > 0, "a worker on this host: psutil reads it"
    assert "gated" in monitor.workers.value and " MB" in monitor.workers.value
    assert monitor.data["totals"]["STARTED"] == 1
    (row,) = monitor.data["running"]
    assert (row["id"], row["name"], row["worker"]) == (running.id, "gated", busy[0]["name"])
    assert running.id[:8] in monitor.running.value

    class Reporting(Monitor):  # the hook a task's progress reports reach the monitor through
        def read_progress(self, job_ids):
            return {job_id: ("PROGRESS", 2.0, 4.0) for job_id in job_ids}

    reporting = Reporting(lab, plots=False)
    reporting.refresh()
    assert reporting.data["progress"] == {running.id: ("PROGRESS", 2.0, 4.0)}
    for table in (reporting.running.value, reporting.workers.value):
        assert '<progress value="2" max="4"' in table and "2/4 PROGRESS" in table
    assert "<progress" not in monitor.running.value, "nothing reported, nothing shown"
    failed_id = next(value for label, value in monitor.recent.options if "FAILURE" in label)
    monitor.recent.value = failed_id
    assert "ValueError: bad 7" in monitor.details.value
    lab.connection.rpush("monitor-gate", 1)
    running.get(timeout=10)


def test_monitor_controls(ran, lab):
    monitor = Monitor(lab, plots=False)
    monitor.refresh()
    failed_id = next(value for label, value in monitor.recent.options if "FAILURE" in label)
    monitor.recent.value = failed_id
    assert "resubmitted bad" in monitor.retry_selected(original=True)
    assert "resubmitted bad" in monitor.retry_selected(original=False)
    monitor._scale(+1)
    assert len(lab.pool) == 3
    monitor.remove_worker.click()
    assert len(lab.pool) == 2 and "2 local workers" in monitor.message.value
    wait_for(lambda: tasklab.stats().set_index("name").loc["bad", "FAILURE"] == 3, 15, "the resubmitted jobs")
    assert "purged" in monitor.purge_finished()
    assert not lab.queue().finished_job_registry.get_job_ids()
    queued = ran["gated"].apply_async(("never",), countdown=60)
    monitor.refresh()
    monitor.recent.options = [("queued", queued.id)]
    monitor.recent.value = queued.id
    monitor.revoke_button.click()
    assert queued.state == "REVOKED" and monitor.message.value == f"revoked {queued.id}"


def test_the_monitors_revoke_of_a_finished_task_says_it_did_nothing(ran, lab):
    monitor = Monitor(lab, plots=False)
    monitor.refresh()
    failed_id = next(value for label, value in monitor.recent.options if "FAILURE" in label)
    monitor.recent.value = failed_id
    monitor.revoke_button.click()
    message = monitor.message.value
    assert f"{failed_id} already finished (FAILURE): nothing to revoke" in message, message
    assert not message.startswith("revoked") and "Warning" not in message
    assert tasklab.AsyncResult(failed_id, lab).state == "FAILURE"


def test_the_monitor_marks_queues_no_worker_serves(shell, lab):
    lab.workers(1, queues=["default"])
    task_cell(shell, TASKS)
    stuck = shell.user_ns["ok"].apply_async((1,), queue="io")
    shell.user_ns["ok"].delay(2).get(timeout=10)
    monitor = Monitor(lab, plots=False)
    monitor.refresh()
    rows = {q["name"]: q for q in monitor.data["queues"]}
    assert rows["io"]["served"] is False and rows["io"]["waiting"] == 1
    assert rows["default"]["served"] is True and rows["default"]["waiting"] == 0
    hint = "no worker serves queue &#x27;io&#x27;: start one with lab.workers(n, queues=[..., &#x27;io&#x27;])"
    io_row, default_row = (row for row in monitor.queues.value.split("<tr>") if "io" in row or "default" in row)
    assert hint in io_row and "served" in default_row and "no worker" not in default_row
    assert hint in monitor.snapshot_html()
    assert stuck.state == "PENDING"


def test_monitor_updates_live_and_stops(ran, lab):
    monitor = Monitor(lab, interval=0.05, plots=True, plot_interval=0.05, interactive=False).start()
    try:
        successes = lambda: monitor.data.get("totals", {}).get("SUCCESS")  # noqa: E731
        wait_for(lambda: successes() == 4, 10, "the monitor's first refresh")
        ran["ok"].delay(5).get(timeout=10)
        wait_for(lambda: successes() == 5, 10, "the monitor to see the new success")
        for image in monitor.images.values():
            wait_for(lambda image=image: bytes(image.value).startswith(b"<?xml"), 10, "the plots to render")
    finally:
        monitor.close()
    monitor._thread.join(timeout=5)
    assert not monitor._thread.is_alive()


def test_monitor_has_a_static_snapshot(ran, lab):
    monitor = lab.monitor(display=False, plots=False)
    bundle = monitor._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "tasklab monitor" in bundle["text/html"] and "<b>4</b>" in bundle["text/html"]


def test_result_output_is_live_in_a_kernel(ran, lab):
    from tasklab.widgets.result_view import live_view

    running = ran["gated"].delay("view-gate")
    view = live_view(running)
    assert "PENDING" in view.value or "STARTED" in view.value
    wait_for(lambda: "STARTED" in view.value, 10, "the badge to show STARTED")
    lab.connection.rpush("view-gate", 1)
    wait_for(lambda: "SUCCESS" in view.value, 10, "the badge to show SUCCESS")
    bundle = running._repr_mimebundle_()
    assert "SUCCESS" in bundle["text/html"], "outside a kernel: the static HTML"


def test_the_extension_shows_results_as_live_badges_in_a_kernel(shell, lab, monkeypatch):
    lab.workers(1)
    run_cell(shell, "%%task\ndef one():\n    return 1\n")
    result = run_cell(shell, "r = one.delay(); r")
    data, _ = shell.display_formatter.format(result)
    assert "application/vnd.jupyter.widget-view+json" not in data, "no kernel: the static badge"
    assert result.id in data["text/html"]
    monkeypatch.setattr(shell, "kernel", object(), raising=False)
    data, _ = shell.display_formatter.format(result)
    assert "application/vnd.jupyter.widget-view+json" in data and result.id in data["text/html"]


FLAKY = """
def flaky(x):
    raise ConnectionError(f"flaky {x}")
"""


def test_the_counters_count_tasks_by_their_current_state(shell, lab):
    """Unfinished tasks by where they stand (waiting, running, waiting for a retry), finished ones by
    their final state; a monitor made while they run and one made before agree."""
    lab.workers(1)
    task_cell(shell, TASKS)
    task_cell(shell, FLAKY, "--autoretry-for ConnectionError --max-retries 1 --retry-backoff 60")
    before = Monitor(lab, plots=False)
    before.refresh()
    ns = shell.user_ns
    retrying = ns["flaky"].delay(1)
    wait_for(lambda: retrying.state == "RETRY", 10, "the flaky task's first attempt to fail")
    held = [ns["gated"].delay("count-gate") for _ in range(2)]
    wait_for(lambda: held[0].state == "STARTED", 10, "the first gated task to start")
    ns["ok"].delay(1)  # waits behind the gated one on the single worker
    after = Monitor(lab, plots=False)
    for monitor in (before, after):
        monitor.refresh()
        assert monitor.data["totals"] == {"PENDING": 2, "STARTED": 1, "RETRY": 1, "SUCCESS": 0, "FAILURE": 0,
                                          "REVOKED": 0, "LOST": 0}, monitor.data["totals"]  # fmt: skip
        rows = {t["name"]: t for t in monitor.data["tasks"]}
        assert (rows["gated"]["running"], rows["gated"]["waiting"], rows["gated"]["submitted"]) == (1, 1, 2)
        assert (rows["flaky"]["retrying"], rows["flaky"]["retries"], rows["flaky"]["attempts"]) == (1, 1, 1)
        assert "1 running" in monitor.tasks.value and "1 waiting" in monitor.tasks.value
    lab.connection.rpush("count-gate", 1, 1)
    for result in held:
        result.get(timeout=10)
    wait_for(lambda: ns["ok"].delay(2).get(timeout=10) == 2, 10, "the worker to be free")
    retrying.revoke()
    for monitor in (before, after):
        monitor.refresh()
        totals = monitor.data["totals"]
        assert (totals["SUCCESS"], totals["REVOKED"], totals["PENDING"], totals["STARTED"], totals["RETRY"]) == (
            4, 1, 0, 0, 0)  # fmt: skip
        bar = {t["name"]: t for t in monitor.data["tasks"]}["gated"]
        assert (bar["succeeded"], bar["running"], bar["waiting"]) == (2, 0, 0)


def test_a_stopped_monitor_says_so_greys_its_controls_and_restarts(ran, lab, shell):
    monitor = Monitor(lab, interval=0.05, plots=False).start()
    wait_for(lambda: monitor.data.get("totals"), 10, "the first refresh")
    assert monitor.status == "running" and not monitor.close_button.disabled and monitor.restart_button.disabled
    monitor.close()
    monitor._thread.join(timeout=5)
    assert monitor.status == "stopped" and "monitor stopped at" in monitor.header.value
    assert all(control.disabled for control in monitor.controls) and not monitor.restart_button.disabled
    frozen = monitor.data
    ran["ok"].delay(9).get(timeout=10)
    assert monitor.data is frozen, "a stopped monitor reads nothing"
    monitor.restart_button.click()
    assert monitor.status == "running" and not any(control.disabled for control in monitor.controls)
    wait_for(lambda: monitor.data["totals"]["SUCCESS"] == 5, 10, "the restarted monitor to see the new task")
    assert "stopped" not in monitor.header.value
    run_cell(shell, "%tasklab stop")
    wait_for(lambda: monitor.status == "lab stopped", 10, "the monitor to see the lab stop")
    assert not monitor._thread.is_alive() or monitor._thread.join(timeout=5) is None
    assert not monitor._thread.is_alive()
    assert "the lab was stopped at" in monitor.header.value and "%tasklab start" in monitor.header.value
    assert "no workers: the lab is stopped" in monitor.workers.value and "idle" not in monitor.workers.value
    assert all(control.disabled for control in monitor.controls) and monitor.restart_button.disabled
    assert monitor.start().status == "lab stopped", "a monitor of a stopped lab does not start"


SHORT = """
import time

def short(i):
    time.sleep(0.05)
    return i
"""


def separate_marks_in(png: bytes, fig) -> int:
    """Marks the rendered task stream shows apart: runs of coloured pixels along each lane's middle."""
    import io

    from matplotlib import image

    pixels = image.imread(io.BytesIO(png))[:, :, :3]
    scale = pixels.shape[1] / (fig.get_size_inches()[0] * fig.dpi)
    ax = fig.axes[0]
    (x0, _), (x1, _) = ax.transData.transform([(ax.get_xlim()[0], 0), (ax.get_xlim()[1], 0)])
    found = 0
    for lane in range(len(ax.get_yticks())):
        _, y = ax.transData.transform((0, lane))
        row = pixels[round((fig.get_size_inches()[1] * fig.dpi - y) * scale), round(x0 * scale) + 2 : round(x1 * scale)]
        coloured = (row.max(axis=1) - row.min(axis=1)) > 0.15  # not white, grey or black
        found += int(np.count_nonzero(np.diff(coloured.astype(int)) == 1) + coloured[0])
    return found


def test_the_task_stream_shows_each_attempt_apart(shell, lab):
    """50 short tasks back to back on two workers: one mark each, with a gap that shows."""
    lab.workers(2)
    task_cell(shell, SHORT)
    task_cell(shell, TASKS, "--autoretry-for ValueError --max-retries 1 --retry-backoff 0.05")
    for result in [shell.user_ns["short"].delay(i) for i in range(50)]:  # 50 jobs, whatever map means
        result.get(timeout=60)
    with pytest.raises(ValueError):
        shell.user_ns["bad"].delay(1).get(timeout=10)
    monitor = Monitor(lab, interactive=False)
    monitor.refresh(plots=True)
    marks = monitor.stream_marks
    assert len(marks[marks["name"] == "short"]) == 50 and set(marks["state"]) == {"SUCCESS", "RETRY", "FAILURE"}
    apart = 0
    for _, lane in marks.sort_values("left").groupby("lane"):
        apart += 1 + int((lane["left"].to_numpy()[1:] > lane["right"].to_numpy()[:-1]).sum())
    assert apart >= 50, f"only {apart} marks drawn apart"
    frame = fold(read_recent_columns(lab.connection, 3000))
    fig = task_stream(frame)
    png = to_png(fig)
    assert separate_marks_in(png, fig) >= 40, "the image shows the attempts apart"
    # The legend names every outcome drawn, in the plot (not in the title), and nothing else is red.
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"short", "bad", "failed, retried", "failed", "waiting in the queue"} <= set(legend)
    assert fig.axes[0].get_title() == ""
    # Crisp: vector images (SVG) of the size they are shown at, shown at their own aspect ratio.
    for name, (width, height) in {"stream": (960, 307.2), "runtime": (499.2, 288), "throughput": (499.2, 288)}.items():
        image = monitor.images[name]
        assert image.format == "svg+xml" and image.layout.width == f"{round(width)}px" and image.layout.height == "auto"
        svg = ElementTree.fromstring(bytes(image.value))
        assert (svg.get("width"), svg.get("height")) == (f"{width * 0.75:g}pt", f"{height * 0.75:g}pt"), name
    # As pixels (a snapshot's image), twice the size it is shown at.
    assert Image.open(io.BytesIO(to_png(fig))).size == (2 * 960, round(2 * 3.2 * 96))
    # A window of the latest activity: an older run is left out unless the window is widened.
    assert task_stream(frame, window=0.01).marks["end"].max() <= 0.011 + marks["end"].max()
    old = frame.copy()
    for column in ("submitted_at", "started_at", "finished_at"):
        old[column] = old[column] - pd.Timedelta(hours=1)
    both = pd.concat([old, frame])
    assert len(task_stream(both).marks) == len(frame) and len(task_stream(both, window=None).marks) == 2 * len(frame)


def test_the_interactive_stream_selects_the_attempt_clicked(ran, lab):
    monitor = Monitor(lab)  # ipympl is installed: the stream is its canvas widget
    monitor.refresh(plots=True)
    assert monitor.stream_canvas is not None and monitor.stream_canvas in monitor.widget.children[-1].children
    marks = monitor.stream_marks
    failed = marks[marks["state"] == "FAILURE"].iloc[0]
    ax = monitor.stream_canvas.figure.axes[0]
    x, y = ax.transData.transform(((failed["left"] + failed["right"]) / 2, failed["lane"]))
    monitor.stream_canvas.callbacks.process("button_press_event", _click(monitor.stream_canvas, x, y))
    assert failed["task_id"][:8] in monitor.selected.value and "FAILURE" in monitor.selected.value
    assert "ValueError: bad 7" in monitor.details.value, "its traceback, as when chosen in the list"
    assert monitor.select_at(failed["right"] + 1000, failed["lane"]) is None, (
        "a click beside every mark selects nothing"
    )
    assert "<img alt='task stream'" in monitor.snapshot_html(), "without a kernel, the stream is an image"
    # A zoom is kept when the stream is drawn again.
    ax.set_xlim(0, 0.001)
    monitor.refresh_plots()
    assert monitor.stream_canvas.figure.axes[0].get_xlim() == (0, 0.001)


def _click(canvas, x, y):
    from matplotlib.backend_bases import MouseEvent

    return MouseEvent("button_press_event", canvas, x, y, button=1)


def test_throughput_labels_match_its_legend(ran):
    fig = throughput(tasklab.history())
    ax, depth = fig.axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["attempts finished / s", "queue depth"]
    assert ax.get_ylabel() == "attempts finished / s" and depth.get_ylabel().startswith("queue depth")


@pytest.mark.slow
def test_a_frozen_worker_shows_as_stale_then_lost(lab):
    import os
    import signal

    pool = lab.workers(1)
    frozen = pool.processes[0]
    monitor = Monitor(lab, plots=False)

    def states() -> list[str]:
        monitor.refresh()
        return [w["state"] for w in monitor.data["workers"]]

    # workers() returns once the worker has registered; it is idle once it has begun to wait for jobs.
    wait_for(lambda: states() == ["idle"], 10, "the new worker to be idle")
    seen: list[str] = []
    shown: list[str] = []

    def state() -> str | None:
        monitor.refresh()
        row = next((w for w in monitor.data["workers"] if w["name"] == frozen.name), None)
        if row is not None and (not seen or seen[-1] != row["state"]):
            seen.append(row["state"])
            shown.append(monitor.workers.value)
        return row["state"] if row is not None else "gone"

    os.kill(frozen.pid, signal.SIGSTOP)  # it stops renewing its lease
    try:
        wait_for(lambda: state() in ("lost", "gone"), 10, "the frozen worker's lease to run out")
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    assert "stale" in seen, f"it missed renewals before its lease ran out: {seen}"
    assert ">stale</span>" in shown[seen.index("stale")], "the table marks it"
