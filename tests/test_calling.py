"""Celery's calling API (issue 15): link and link_error, children and collect(), expires, signatures by
name and by method, send_task, eager labs, task_id given again, and rate limits measured at the start.

Where a behaviour comes from Celery's docs (the Calling guide, the Canvas guide, the Tasks guide),
the test runs the docs' example with only the imports changed, and asserts the documented outcome.
"""

from __future__ import annotations

import itertools
import time
from datetime import datetime, timedelta, timezone

import pytest
from rq import get_current_job

import tasklab
from tasklab.engine import keys

from .conftest import task_cell, wait_for

# -- the tasks of Celery's examples, as a module of tasks (shipped to the workers by import path) --


@tasklab.task(name="tasks.add")
def add(x, y):
    return x + y


@tasklab.task(name="tasks.mul")
def mul(x, y):
    return x * y


@tasklab.task(name="tasks.fails")
def fails(x, y):
    raise ValueError(f"cannot add {x} and {y}")


@tasklab.task(name="tasks.error_handler")
def error_handler(request, exc, traceback):
    print(f"Task {request.id} raised exception: {exc!r}\n{traceback!r}")
    get_current_job().connection.rpush("errback:new", f"{request.id} {exc!r}")


@tasklab.task(name="tasks.on_failed_id")
def on_failed_id(task_id, label):
    get_current_job().connection.rpush("errback:old", f"{label} {task_id}")
    return task_id


@tasklab.task(name="tasks.note")
def note(key, *args):
    get_current_job().connection.rpush(key, repr(args))
    return args


@tasklab.task(name="tasks.log_result")
def log_result(value, key="linked:log"):
    get_current_job().connection.rpush(key, repr(value))
    return value


@tasklab.task(name="tasks.wait_for_gate")
def wait_for_gate(gate):
    get_current_job().connection.blpop(gate, timeout=30)
    return gate


#: What the errbacks of an eager lab's tasks saw (they run in this process).
errback_calls: list[tuple] = []


@tasklab.task(name="tasks.remember_error")
def remember_error(request, exc, traceback):
    errback_calls.append(("new", request.id, repr(exc), "Traceback" in traceback))


@tasklab.task(name="tasks.remember_id")
def remember_id(task_id):
    errback_calls.append(("old", task_id))


@tasklab.task(name="tasks.my_expiry", bind=True)
def my_expiry(self):
    return self.request.expires


@tasklab.task(name="tasks.ticket", rate_limit="100/m")
def ticket(n):
    return n


# -- link and link_error: the Calling guide --


def test_link_applies_the_callback_with_the_parent_value_first(lab):
    lab.workers(2)
    # Calling guide, "Linking (callbacks/errbacks)": (2 + 2) + 16 = 20
    result = add.apply_async((2, 2), link=add.s(16))
    assert result.get(timeout=10) == 4
    (child,) = wait_for(lambda: result.children, 10, "the callback to be applied")
    assert child.get(timeout=10) == 20
    assert child.task_name == "tasks.add"


def test_children_and_collect_as_in_the_canvas_guide(lab):
    lab.workers(2)
    # Canvas guide, "Callbacks": res.get() -> 4, res.children[0].get() -> 64, collect() -> [(res, 4), (child, 64)]
    res = add.apply_async((2, 2), link=mul.s(16))
    assert res.get(timeout=10) == 4
    assert len(res.children) == 1, "the callback is queued with the parent's success, in the same transaction"
    assert res.children[0].get(timeout=10) == 64
    assert list(res.collect(timeout=10)) == [(res, 4), (res.children[0], 64)]
    assert tasklab.AsyncResult(res.id, lab).children == res.children, "children are read from Redis"


def test_collect_follows_callbacks_of_callbacks_in_celerys_order(lab):
    lab.workers(2)
    first = add.s(1).set(link=mul.s(100))  # the callback's own callback
    second = mul.s(3)
    res = add.apply_async((1, 1), link=[first, second])
    values = [value for _, value in res.collect(timeout=10)]
    assert values == [2, 3, 6, 300], "breadth first, as Celery's iterdeps: the parent, its children, theirs"


def test_iterdeps_of_a_result_not_ready_is_an_incomplete_stream(lab):
    res = wait_for_gate.apply_async(("gate:deps",), link=log_result.s("linked:deps"))
    deps = res.iterdeps()
    assert next(deps) == (None, res)
    with pytest.raises(tasklab.IncompleteStream, match="intermediate=True"):
        next(deps)
    assert list(res.iterdeps(intermediate=True)) == [(None, res)], "its callbacks are not known yet"
    lab.workers(1)
    lab.connection.rpush("gate:deps", 1)
    assert [value for _, value in res.collect(timeout=10)] == ["gate:deps", "gate:deps"]


def test_links_as_a_list_are_applied_in_order_and_an_immutable_one_gets_no_value(lab):
    lab.workers(1)
    # Calling guide: link=[add.s(16), other_task.s()]; "reset_buffers.si()" ignores the result
    res = add.apply_async((2, 2), link=[add.s(16), note.si("linked:immutable", "no value")])
    assert res.get(timeout=10) == 4
    first, second = wait_for(lambda: res.children, 10, "the callbacks")
    assert first.get(timeout=10) == 20
    assert second.get(timeout=10) == ("no value",)
    assert lab.connection.lrange("linked:immutable", 0, -1) == [b"('no value',)"]


def test_signature_link_and_on_error_methods(lab):
    lab.workers(1)
    # Canvas guide: s = add.s(2, 2); s.link(mul.s(4)); s.link(log_result.s())
    s = add.s(2, 2)
    returned = s.link(mul.s(4))
    s.link(log_result.s())
    assert isinstance(returned, tasklab.Signature) and returned.name == "tasks.mul", "link returns the callback"
    res = s.delay()
    first, second = wait_for(lambda: res.children, 10, "the callbacks")
    assert first.get(timeout=10) == 16
    assert second.get(timeout=10) == 4
    assert lab.connection.lrange("linked:log", 0, -1) == [b"4"]
    # on_error returns the signature itself, for chaining: add.s(2, 2).on_error(errback).delay()
    chained = fails.s(2, 2).on_error(on_failed_id.s("chained"))
    assert chained.name == "tasks.fails"
    failed = chained.delay()
    with pytest.raises(ValueError, match="cannot add 2 and 2"):
        failed.get(timeout=10)
    wait_for(lambda: lab.connection.lrange("errback:old", 0, -1), 10, "the errback")
    assert lab.connection.lrange("errback:old", 0, -1) == [f"chained {failed.id}".encode()]


def test_link_error_calls_a_celery5_errback_with_request_exc_traceback(lab):
    lab.workers(1)
    # Calling guide: error_handler(request, exc, traceback), add.apply_async((2, 2), link_error=error_handler.s())
    result = fails.apply_async((2, 2), link_error=error_handler.s())
    with pytest.raises(ValueError):
        result.get(timeout=10)
    assert lab.connection.lrange("errback:new", 0, -1) == [f"{result.id} ValueError('cannot add 2 and 2')".encode()], (
        "called in the worker before the failure was recorded, with the failed task's request and exception"
    )
    assert f"Task {result.id} raised exception: ValueError('cannot add 2 and 2')" in result.output
    assert "Traceback" in result.output, "the traceback is the third argument"
    assert result.children == [], "a failed task applied no callback"


def test_link_error_submits_an_old_style_errback_with_the_task_id(lab):
    lab.workers(1)
    result = fails.apply_async((1, 2), link=add.s(1), link_error=on_failed_id.s("old"))
    with pytest.raises(ValueError):
        result.get(timeout=10)
    wait_for(lambda: lab.connection.lrange("errback:old", 0, -1), 10, "the errback to run")
    assert lab.connection.lrange("errback:old", 0, -1) == [f"old {result.id}".encode()]
    assert result.state == "FAILURE" and result.children == []
    names = set(lab.history()["name"])
    assert "tasks.add" not in names, "the link callback of a failed task is never applied"


def test_errbacks_are_not_called_for_a_retry(lab):
    lab.workers(1)
    flaky = lab.task(name="tasks.flaky", autoretry_for=(KeyError,), max_retries=2, retry_backoff=False,
                     default_retry_delay=0)(_flaky)  # fmt: skip
    result = flaky.apply_async(("flaky:count",), link_error=on_failed_id.s("retried"))
    with pytest.raises(KeyError):
        result.get(timeout=15)
    assert result.retries == 2 and lab.connection.get("flaky:count") == b"3"
    # Submitted with the final failure's record, before get() could see it: one, not one per attempt.
    assert len(lab.history(name="tasks.on_failed_id")) == 1
    wait_for(lambda: lab.connection.lrange("errback:old", 0, -1), 10, "the errback")
    assert lab.connection.lrange("errback:old", 0, -1) == [f"retried {result.id}".encode()]


def _flaky(key):
    get_current_job().connection.incr(key)
    raise KeyError(key)


def test_link_error_of_a_workflow_follows_the_step_that_failed(lab):
    lab.workers(1)
    result = (add.s(1, 1) | fails.s(2)).apply_async(link_error=on_failed_id.s("chain"))
    with pytest.raises(ValueError, match="cannot add 2 and 2"):
        result.get(timeout=10)
    wait_for(lambda: lab.connection.lrange("errback:old", 0, -1), 10, "the errback")
    assert lab.connection.lrange("errback:old", 0, -1) == [f"chain {result.id}".encode()]
    with pytest.raises(tasklab.CanvasError, match="chain the callback after it"):
        (add.s(1, 1) | add.s(2)).apply_async(link=add.s(3))


def test_bad_callbacks_are_refused_at_submit(lab):
    with pytest.raises(tasklab.CanvasError, match=r"Write tasks.add.s\(...\)"):
        add.apply_async((1, 1), link=add)
    with pytest.raises(tasklab.CanvasError, match="takes neither"):
        fails.apply_async((1, 1), link_error=add.s())
    with pytest.raises(tasklab.ArgumentsError):
        add.apply_async((1, 1), link=add.s(1, 2))  # add(value, 1, 2) does not fit
    with pytest.raises(tasklab.CanvasError, match="countdown"):
        add.apply_async((1, 1), link=add.s(1).set(countdown=5))
    with pytest.raises(tasklab.ConfigurationError, match="map_async and starmap_async"):
        add.starmap_async([(1, 1), (2, 2)], link=add.s(1))
    assert lab.connection.llen("rq:queue:default") == 0, "nothing was submitted"


# -- expires --


def test_expires_revokes_a_task_not_started_in_time(lab):
    # Calling guide: add.apply_async((10, 10), expires=60), and a datetime
    kept = add.apply_async((10, 10), expires=60)
    late = add.apply_async((10, 10), expires=datetime.now(timezone.utc) + timedelta(seconds=0.3))
    seconds = add.apply_async((1, 1), expires=0.3)
    wait_for(lambda: time.time() > late._job().meta[keys.META_EXPIRES] + 0.05, 5, "the expiry to pass")
    lab.workers(1)
    assert kept.get(timeout=10) == 20
    for result in (late, seconds):
        with pytest.raises(tasklab.TaskRevokedError, match="expired"):
            result.get(timeout=10)
        assert result.state == "REVOKED"
    rows = lab.history().set_index("task_id")
    assert rows.loc[late.id, "state"] == "REVOKED"
    assert rows.loc[late.id, "error"].startswith("expired"), "the history says why"
    assert rows.loc[kept.id, "state"] == "SUCCESS"
    when = datetime.now(timezone.utc) + timedelta(minutes=1)
    seen = datetime.fromisoformat(my_expiry.apply_async(expires=when).get(timeout=10))
    assert abs((seen - when).total_seconds()) < 0.001, "self.request.expires, as Celery's, in ISO 8601"


def test_a_callbacks_expires_counts_from_when_it_is_applied(lab):
    """As Celery: link=sig.set(expires=1) gives the callback a second from its parent's success, not
    from the submit (the parent here takes longer than that)."""
    lab.workers(1)
    submitted = time.time()
    parent = wait_for_gate.apply_async(("gate:cb-expires",), link=add.si(2, 3).set(expires=1))
    wait_for(lambda: time.time() > submitted + 1.2, 5, "a second to pass since the submit")
    lab.connection.rpush("gate:cb-expires", 1)
    assert parent.get(timeout=10) == "gate:cb-expires"
    (callback,) = parent.children
    assert callback.get(timeout=10) == 5, "applied a moment ago, it had not expired"


def test_expires_is_checked_when_given(lab):
    with pytest.raises(tasklab.ConfigurationError, match="expires"):
        add.apply_async((1, 1), expires=-1)
    with pytest.raises(tasklab.ConfigurationError, match="expires"):
        add.apply_async((1, 1), expires="soon")


def test_countdown_as_in_the_calling_guide(lab):
    lab.workers(1)
    started = time.monotonic()
    result = add.apply_async((2, 2), countdown=3)
    assert result.get(timeout=10) == 4  # "this takes at least 3 seconds to return"
    assert time.monotonic() - started >= 3


# -- signatures by name and by method, send_task, lab.AsyncResult --


def test_signatures_by_name_and_by_method_as_in_the_canvas_guide(lab):
    lab.workers(1)
    # Canvas guide: signature('tasks.add', args=(2, 2), countdown=10); add.signature((2, 2), countdown=10)
    by_name = tasklab.signature("tasks.add", args=(2, 2), countdown=10)
    by_method = add.signature((2, 2), countdown=10)
    assert repr(by_name) == repr(by_method) == "tasks.add.s(2, 2)"
    assert by_name.options == by_method.options == {"countdown": 10}
    assert by_name.task is add
    assert by_name.apply_async(countdown=0).get(timeout=10) == 4, "options given when applied win"
    assert lab.signature("tasks.mul", args=(3,), kwargs={"y": 4}).delay().get(timeout=10) == 12
    assert mul.signature((2,), immutable=True).immutable


def test_send_task_and_lab_async_result(lab):
    lab.workers(1)
    # Calling guide / app API: app.send_task('tasks.add', args=[2, 2]); app.AsyncResult(id)
    sent = lab.send_task("tasks.add", args=[2, 2], kwargs={})
    assert sent.get(timeout=10) == 4
    again = lab.AsyncResult(sent.id)
    assert again.state == "SUCCESS" and again.get(timeout=1) == 4
    assert lab.send_task("tasks.add", (1,), {"y": 2}, queue="default").get(timeout=10) == 3


def test_a_cell_task_is_found_by_name_through_redis(shell, lab):
    lab.workers(1)
    task_cell(shell, "def double(x):\n    return 2 * x\n")
    assert lab.send_task("double", (21,)).get(timeout=10) == 42
    task_cell(shell, "def double(x):\n    return 3 * x\n")  # run again, changed: the new version is current
    assert lab.send_task("double", (21,)).get(timeout=10) == 63


def test_an_unknown_name_is_refused_at_once(lab):
    with pytest.raises(tasklab.NotRegistered, match=r"No task is called 'tasks\.nope'.*Known: .*tasks\.add"):
        tasklab.signature("tasks.nope", args=(1,))
    with pytest.raises(tasklab.NotRegistered):
        lab.send_task("tasks.nope")
    assert isinstance(tasklab.NotRegistered("x"), tasklab.TaskLabError)


# -- eager labs (Celery's task_always_eager) --


def test_an_eager_lab_runs_delay_in_this_process(server):
    eager = tasklab.connect(data_dir=server.data_dir, autostart_workers=False, eager=True)
    try:
        result = add.delay(2, 2)
        assert isinstance(result, tasklab.EagerResult)
        assert result.get() == 4 and result.state == "SUCCESS"
        linked = add.apply_async((2, 2), link=mul.s(16))
        assert [child.get() for child in linked.children] == [64]
        errback_calls.clear()
        failed = fails.apply_async((1, 1), link_error=[remember_error.s(), remember_id.s()], link=add.s(1))
        assert failed.state == "FAILURE" and failed.children == []
        with pytest.raises(ValueError):
            failed.get()
        assert errback_calls == [("new", failed.id, "ValueError('cannot add 1 and 1')", True), ("old", failed.id)]
        assert add.starmap_async([(1, 2), (3, 4)]).get() == [3, 7]
        assert ~add.starmap([(1, 2), (3, 4)]) == [3, 7], "Celery's one-job starmap, eagerly too"
        assert eager.pool is None, "no worker was started"
        with pytest.raises(tasklab.ArgumentsError):
            add.delay(1)
    finally:
        eager.shutdown()
    with pytest.raises(tasklab.ConfigurationError, match="eager"):
        tasklab.Lab(data_dir=server.data_dir, eager="yes")


# -- task_id given again --


def test_a_live_task_id_is_refused(lab):
    waiting = wait_for_gate.apply_async(("gate:live",), task_id="reused-live")
    with pytest.raises(tasklab.ConfigurationError, match="has not finished"):
        add.apply_async((1, 1), task_id="reused-live")
    assert waiting.state == "PENDING"
    lab.workers(1)
    wait_for(lambda: waiting.state == "STARTED", 10, "the gated task to start")
    with pytest.raises(tasklab.ConfigurationError, match="started"):
        add.apply_async((1, 1), task_id="reused-live")
    lab.connection.rpush("gate:live", 1)
    assert waiting.get(timeout=10) == "gate:live"


def test_a_finished_task_id_is_replaced_cleanly(lab):
    lab.workers(1)
    first = fails.apply_async((1, 1), task_id="reused-done")
    with pytest.raises(ValueError):
        first.get(timeout=10)
    second = wait_for_gate.apply_async(("gate:reused",), task_id="reused-done")
    assert second.state in ("PENDING", "STARTED"), "the old outcome is gone"
    with pytest.raises(tasklab.TimeoutError):
        second.get(timeout=0.5)  # waits for the new run, not the old failure
    lab.connection.rpush("gate:reused", 1)
    assert second.get(timeout=10) == "gate:reused"
    rows = lab.history()
    mine = rows[rows["task_id"] == "reused-done"]
    assert list(mine["state"]) == ["SUCCESS"] and list(mine["name"]) == ["tasks.wait_for_gate"]
    assert second.traceback is None


def test_a_workflow_takes_task_ids_as_one_task_does(lab):
    """The rule of task_id holds for a workflow's id and a step's own: a finished task's id is taken
    over cleanly (its old value is not returned), a live one is refused."""
    lab.workers(1)
    assert add.apply_async((1, 1), task_id="wf-reused").get(timeout=10) == 2
    again = (add.s(5, 5) | add.s(1)).apply_async(task_id="wf-reused")
    assert again.get(timeout=10) == 11, "the new workflow's value, not the old task's"
    running = wait_for_gate.apply_async(("gate:wf-live",), task_id="wf-live")
    with pytest.raises(tasklab.ConfigurationError, match="has not finished"):
        (add.s(1, 1) | add.s(1)).apply_async(task_id="wf-live")
    with pytest.raises(tasklab.ConfigurationError, match="has not finished"):
        tasklab.chain(add.s(1, 1).set(task_id="wf-live"), add.s(1)).apply_async()
    lab.connection.rpush("gate:wf-live", 1)
    assert running.get(timeout=10) == "gate:wf-live", "the live task was left alone"


# -- rate limits hold at the workers' start times --


def test_rate_limit_spacing_holds_at_start_times(lab):
    lab.workers(2)
    results = ticket.map_async(range(6))
    assert "RATE_LIMITED" in {r.state for r in results}, "jobs waiting for their slot say so"
    assert results.get(timeout=30) == list(range(6))
    rows = lab.history(name="tasks.ticket")
    assert list(rows["state"]) == ["SUCCESS"] * 6, "a job held back is no retry and no failure"
    assert list(rows["attempt"]) == [0] * 6
    starts = sorted(t.timestamp() for t in rows["started_at"])
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.6 - 0.05, f"starts came {min(gaps):.3f} s apart at 100/m: {gaps}"


def test_a_rate_limit_holds_for_later_steps_of_a_workflow(lab):
    """Three rate-limited members of a group that follows a first step become ready at once: the
    workers start them a slot apart, as Celery's limit does at the worker."""
    lab.workers(2)
    result = (add.s(1, 1) | tasklab.group(ticket.s(), ticket.s(), ticket.s())).apply_async()
    assert result.get(timeout=30) == [2, 2, 2]
    rows = lab.history(name="tasks.ticket")
    assert list(rows["state"]) == ["SUCCESS"] * 3 and list(rows["attempt"]) == [0] * 3
    starts = sorted(t.timestamp() for t in rows["started_at"])
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.6 - 0.05, f"starts came {min(gaps):.3f} s apart at 100/m: {gaps}"


def test_rate_limited_callbacks_are_held_back_at_their_start(lab):
    lab.workers(2)
    # Three callbacks are queued at once, with no slot taken at submit: the workers hold two back.
    res = add.apply_async((1, 1), link=[ticket.s(), ticket.s(), ticket.s()])
    children = wait_for(lambda: res.children, 10, "the callbacks")
    wait_for(lambda: "RATE_LIMITED" in {c.state for c in children}, 10, "a callback to be held back")
    assert [c.get(timeout=20) for c in children] == [2, 2, 2]
    assert [c.retries for c in children] == [0, 0, 0], "held back is not retried"
    rows = lab.history(name="tasks.ticket")
    assert list(rows["state"]) == ["SUCCESS"] * 3 and list(rows["attempt"]) == [0] * 3
    starts = sorted(t.timestamp() for t in rows["started_at"])
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.6 - 0.05, f"starts came {min(gaps):.3f} s apart at 100/m: {gaps}"
    logs = "".join(lab.worker_logs(None).values())
    assert "is held back by its rate limit" in logs and "RateLimited" not in logs, "one line, no traceback"
    assert [w.failed for w in lab.status().workers] == [0, 0], "no failed job is counted for the workers"
