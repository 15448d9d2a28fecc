"""Results in a notebook: a set's live view (counts per state, a progress bar), the queues nobody serves,
and revoking what already finished. Widgets are checked headlessly, by their trait values."""

from __future__ import annotations

import pytest
import redis

import tasklab
from tasklab.client.progress import unserved_queues
from tasklab.client.result import ResultSet
from tasklab.widgets import result_view
from tasklab.widgets.result_view import live_set_view, live_view

from .conftest import OK_BAD_GATED as TASKS
from .conftest import run_cell, task_cell, wait_for


@pytest.fixture
def t(shell):
    task_cell(shell, TASKS)
    return shell.user_ns


def watched(view: object) -> bool:
    with result_view._lock:
        return view in result_view._watched


def round_trips(monkeypatch: pytest.MonkeyPatch, connection: redis.Redis) -> list[list[str]]:
    """Record each round trip to Redis from now on: the commands of a pipeline, or one command."""
    trips: list[list[str]] = []
    execute = redis.client.Pipeline.execute

    def pipelined(pipe: redis.client.Pipeline, *args: object, **kwargs: object) -> object:
        trips.append([str(command[0]) for command, _ in pipe.command_stack])
        return execute(pipe, *args, **kwargs)

    one = connection.execute_command

    def single(*args: object, **kwargs: object) -> object:
        trips.append([str(args[0])])
        return one(*args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", pipelined)
    monkeypatch.setattr(connection, "execute_command", single)
    return trips


def test_a_set_shows_live_counts_and_a_progress_bar(t, lab):
    lab.workers(1)
    results = t["gated"].map_async(["set-a", "set-b", "set-c"])
    view = live_set_view(results)
    assert view.bar.max == 3 and view.bar.value == 0 and watched(view)
    wait_for(lambda: "STARTED" in view.lines.value, 10, "the watcher to show the running member")
    assert "PENDING</b> 2" in view.lines.value and view.bar.value == 0 and view.bar.bar_style == ""
    lab.connection.rpush("set-a", 1)
    wait_for(lambda: view.bar.value == 1, 10, "the bar to count the first finished member")
    assert "SUCCESS</b> 1" in view.lines.value and "1 / 3 finished" in view.done.value
    lab.connection.rpush("set-b", 1)
    lab.connection.rpush("set-c", 1)
    wait_for(lambda: view.bar.value == 3, 10, "the bar to fill")
    assert view.bar.bar_style == "success" and "SUCCESS</b> 3" in view.lines.value
    assert "PENDING" not in view.lines.value and "STARTED" not in view.lines.value
    wait_for(lambda: not watched(view), 5, "the watcher to forget the finished set")


def test_a_set_with_a_failure_ends_red_and_says_so_in_text(t, lab):
    lab.workers(1)
    results = ResultSet([t["ok"].delay(1), t["bad"].delay(2), t["ok"].delay(3)])
    view = live_set_view(results)
    wait_for(lambda: view.bar.value == 3, 10, "every member to finish")
    assert view.bar.bar_style == "danger"
    assert results._repr_mimebundle_()["text/plain"] == "<ResultSet: 3 tasks, 2 SUCCESS, 1 FAILURE>"
    assert view.progress.counts == {"SUCCESS": 2, "FAILURE": 1}
    assert results.states() == ["SUCCESS", "FAILURE", "SUCCESS"]
    assert results.completed_count() == 2 and results.failed() and results.ready() and not results.successful()


def test_a_set_is_read_in_one_round_trip_and_finished_members_are_not_read_again(t, lab, monkeypatch):
    lab.workers(1, queues=["default"])
    done = t["ok"].map_async(range(20))
    done.get(timeout=10)
    waiting = t["ok"].map_async(range(30), queue="io")
    both = ResultSet(tasklab.AsyncResult(r.id, lab) for r in [*done, *waiting])  # no outcome cached by get()
    first = both.progress()
    assert first.counts == {"SUCCESS": 20, "PENDING": 30} and first.unserved == {"io"}
    trips = round_trips(monkeypatch, lab.connection)
    again = both.progress(since=first)
    assert trips == [["HMGET"] * 30], "one pipeline, only of the members not finished before"
    assert again.states == first.states and again.unserved == {"io"}
    trips.clear()
    assert both.states() == ["SUCCESS"] * 20 + ["PENDING"] * 30 and both.ready() is False
    assert trips == [["HMGET"] * 50, ["HMGET"] * 50], "one pipeline each"
    trips.clear()
    assert done.states() == ["SUCCESS"] * 20 and trips == [], "the outcomes get() read are final"


def test_whether_a_queue_is_served_is_asked_at_most_every_few_seconds(lab, monkeypatch):
    assert unserved_queues(lab, ["io", "default"]) == ["default", "io"]
    trips = round_trips(monkeypatch, lab.connection)
    assert unserved_queues(lab, ["io"]) == ["io"] and trips == []
    assert unserved_queues(lab, ["cpu"]) == ["cpu"] and trips == [["SCARD"]]
    monkeypatch.setattr(tasklab.defaults, "UNSERVED_CHECK_INTERVAL", 0.0)
    trips.clear()
    unserved_queues(lab, ["io", "cpu"])
    assert trips == [["SCARD", "SCARD"]]


def test_a_set_as_a_cells_last_expression(t, shell, lab, monkeypatch):
    results = run_cell(shell, "rs = ok.map_async(range(50)); rs")
    data, _ = shell.display_formatter.format(results)
    assert data["text/plain"] == "<ResultSet: 50 tasks, 50 PENDING>", "one line, not 50 ids"
    assert "application/vnd.jupyter.widget-view+json" not in data, "no kernel: the static HTML"
    assert '<progress value="0" max="50"' in data["text/html"] and "PENDING</b> 50" in data["text/html"]
    monkeypatch.setattr(shell, "kernel", object(), raising=False)
    data, _ = shell.display_formatter.format(results)
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["text/plain"] == "<ResultSet: 50 tasks, 50 PENDING>" and "<progress" in data["text/html"]
    (view,) = [v for v in result_view._watched if getattr(v, "results", None) is results]
    lab.workers(1)
    wait_for(lambda: view.bar.value == 50, 20, "the displayed view to fill")
    assert view.bar.bar_style == "success"


def test_a_groups_results_as_a_cells_last_expression(t, shell, lab):
    lab.workers(1)
    group = run_cell(shell, "from tasklab import group\ng = group(ok.s(i) for i in range(3)).apply_async(); g")
    assert group.get(timeout=10) == [0, 1, 2]
    data, _ = shell.display_formatter.format(group)
    assert data["text/plain"] == f"<GroupResult {group.id}: 3 tasks, 3 SUCCESS>"
    assert f"GroupResult {group.id}" in data["text/html"]


def test_a_single_result_in_a_kernel_keeps_its_own_text(t, shell, lab, monkeypatch):
    monkeypatch.setattr(shell, "kernel", object(), raising=False)
    result = run_cell(shell, "r = ok.delay(1); r")
    data, _ = shell.display_formatter.format(result)
    assert data["text/plain"] == f"<AsyncResult: {result.id}>"
    assert "application/vnd.jupyter.widget-view+json" in data


def test_badges_name_a_queue_no_worker_serves(t, lab):
    lab.workers(1, queues=["default"])
    stuck = t["ok"].apply_async((1,), queue="io")
    fine = t["gated"].delay("served-gate")
    badge = live_view(stuck)
    hint = (
        "no worker serves queue 'io': start one with lab.workers(n, queues=[..., 'io']) or `tasklab worker --queues io`"
    )
    assert "PENDING" in badge.value and hint.replace("'", "&#x27;") in badge.value
    wait_for(lambda: fine.state == "STARTED", 10, "the served job to start")
    assert "no worker serves" not in live_view(fine).value
    view = live_set_view(ResultSet([stuck, fine]))
    pending = next(line for line in view.lines.value.split("<div>") if "PENDING" in line)
    assert "no worker serves queue &#x27;io&#x27;" in pending
    assert "default" not in view.lines.value, "the served queue is not named"
    lab.connection.rpush("served-gate", 1)
    assert fine.get(timeout=10) == "served-gate"
    for widget in (badge, view.widget):
        widget.close()


def test_the_note_goes_once_the_job_runs(t, lab):
    stuck = t["ok"].delay(5)
    badge = live_view(stuck)
    assert "no worker serves queue &#x27;default&#x27;" in badge.value
    lab.workers(1)
    wait_for(lambda: "SUCCESS" in badge.value, 10, "the badge to show SUCCESS")
    assert "no worker serves" not in badge.value


def test_revoking_a_finished_task_says_it_did_nothing(t, lab):
    lab.workers(1)
    failed, succeeded = t["bad"].delay(1), t["ok"].delay(2)
    with pytest.raises(ValueError):
        failed.get(timeout=10)
    succeeded.get(timeout=10)
    with pytest.warns(
        tasklab.TaskLabWarning, match=rf"{failed.id} already finished \(FAILURE\): nothing to revoke"
    ) as caught:
        failed.revoke()
    assert caught[0].filename == __file__, "the warning points at the caller's line"
    with pytest.warns(tasklab.TaskLabWarning, match=r"already finished \(SUCCESS\): nothing to revoke"):
        succeeded.revoke(terminate=True)
    assert failed.state == "FAILURE" and succeeded.state == "SUCCESS"
    with pytest.warns(tasklab.TaskLabWarning, match=r"2 of 2 tasks were not revoked; the first: .* already finished"):
        ResultSet([failed, succeeded]).revoke()


def test_revoking_a_step_that_a_failure_stopped_names_its_state(t, lab):
    lab.workers(1)
    chain = (t["bad"].s(1) | t["ok"].s()).apply_async()
    with pytest.raises(ValueError):
        chain.get(timeout=10)
    wait_for(lambda: chain.state == "FAILURE", 10, "the stopped step to be FAILURE")
    with pytest.warns(tasklab.TaskLabWarning, match=r"already finished \(FAILURE\): nothing to revoke"):
        chain.revoke()
    assert chain.state == "FAILURE"


def test_revoking_a_running_task_without_terminate_says_how(t, lab):
    lab.workers(1)
    running = t["gated"].delay("running-gate")
    wait_for(lambda: running.state == "STARTED", 10, "the job to start")
    with pytest.warns(tasklab.TaskLabWarning, match=r"is running \(STARTED\).*revoke\(terminate=True\)"):
        running.revoke()
    lab.connection.rpush("running-gate", 1)
    assert running.get(timeout=10) == "running-gate"


def test_showing_a_set_reads_its_states_once(t, shell, lab, monkeypatch):
    import tasklab.client.result as result_module

    rs = t["ok"].map_async([(i,) for i in range(5)])
    calls = []
    real = result_module.read_states
    monkeypatch.setattr(result_module, "read_states", lambda results: calls.append(len(results)) or real(results))
    data, _ = shell.display_formatter.format(rs)
    assert data["text/plain"] == "<ResultSet: 5 tasks, 5 PENDING>" and len(calls) == 1, calls
