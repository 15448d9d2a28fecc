"""Celery parity (issue 15), the task's own side: ``app.task(fn)`` on an importable function,
``ignore_result``'s ``get()``, the lifecycle hooks (``after_return`` only for a final outcome, the
result stored before ``on_success``), and ``task.apply()``. The other areas have their own modules:
test_calling.py, test_canvas.py and test_canvas_celery.py, test_request.py, test_shipping.py."""

from __future__ import annotations

import time

import pytest

import tasklab

from . import shipped_tasks
from .conftest import GATED, task_cell, wait_for
from .test_request import SEEN


def test_task_of_a_plain_importable_function_runs_on_a_worker(lab):
    lab.workers(1, queues=["default", "io"])
    scale = lab.task(shipped_tasks.plain_scale, queue="io")
    result = scale.delay(3, factor=5)
    assert result.get(timeout=10) == 15
    assert lab.queue("io").fetch_job(result.id).origin == "io", "the option given with the function applies"
    assert not scale._tl_version.startswith("py:"), "the import path holds the plain function, not the task"
    assert callable(shipped_tasks.plain_scale) and not isinstance(shipped_tasks.plain_scale, tasklab.Task)


def test_the_worker_rebuilds_the_task_with_its_name_and_options(lab):
    lab.workers(1, queues=["default", "io"])
    first = lab.task(shipped_tasks.plain_described, bind=True, name="described", queue="io", max_retries=7)
    second = tasklab.task(shipped_tasks.plain_described, bind=True, name="described_again", app=lab)
    assert first.delay(1).get(timeout=10) == {"x": 1, "name": "described", "queue": "io", "max_retries": 7}
    assert second.delay(2).get(timeout=10) == {"x": 2, "name": "described_again", "queue": "default",
                                               "max_retries": None}  # fmt: skip
    assert first._tl_version != second._tl_version, "the name and options are part of the version"
    again = lab.task(shipped_tasks.plain_described, bind=True, name="described", queue="io", max_retries=7)
    assert again.delay(3).get(timeout=10)["name"] == "described"
    assert again._tl_version == first._tl_version, "the same task is the same version"


def test_module_level_decorated_task_still_ships_by_path(lab):
    lab.workers(1)
    assert shipped_tasks.add.delay(1, 2).get(timeout=10) == 3
    assert shipped_tasks.add._tl_version == "py:tests.shipped_tasks:add"


def test_get_of_an_ignored_result_returns_none_at_once(shell, lab):
    lab.workers(1)
    task_cell(shell, GATED)
    task_cell(shell, "def quiet(x):\n    return x\n", "--ignore-result")
    running = shell.user_ns["gated"].apply_async(("gate:ignored",), ignore_result=True)
    wait_for(lambda: running.state == "STARTED", 10, "the gated task to start")
    started = time.monotonic()
    assert running.get(timeout=5) is None, "as Celery: nothing to wait for"
    assert tasklab.AsyncResult(running.id, lab).get(timeout=5) is None, "a result made from the id reads the job"
    assert time.monotonic() - started < 1
    assert running.state == "STARTED", "the state is still read while the job exists"
    lab.connection.set("gate:ignored", 1)
    wait_for(lambda: not lab.connection.exists(f"rq:job:{running.id}"), 10, "the ignored job to finish")
    assert running.get() is None
    assert shell.user_ns["quiet"].delay(1).get(timeout=5) is None, "a task with ignore_result=True"
    assert shell.user_ns["quiet"].map_async(range(3)).get(timeout=5) == [None, None, None]
    assert shell.user_ns["quiet"].apply_async((1,), ignore_result=False).get(timeout=10) == 1


def test_after_return_is_not_called_for_a_retry(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        """
import tasklab
from rq import get_current_job

class Hooked(tasklab.Task):
    def on_retry(self, exc, task_id, args, kwargs, einfo):
        get_current_job().connection.rpush(f"{task_id}:hooks", "on_retry")
    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        get_current_job().connection.rpush(f"{task_id}:hooks", f"after_return {status}")
""",
    )
    task_cell(
        shell,
        "def flaky(fail):\n    from rq import get_current_job\n    from tasklab.engine.keys import META_RETRIES\n"
        "    if get_current_job().meta.get(META_RETRIES, 0) < 2:\n        raise KeyError('again')\n"
        "    if fail:\n        raise ValueError('for good')\n    return 'done'\n",
        "--base Hooked --autoretry-for KeyError --max-retries 3 --retry-backoff 0.05",
    )
    succeeded = shell.user_ns["flaky"].delay(False)
    failed = shell.user_ns["flaky"].delay(True)
    assert succeeded.get(timeout=20) == "done"
    with pytest.raises(ValueError, match="for good"):
        failed.get(timeout=20)
    # A success's hooks run once its result is stored (see test_the_result_is_stored_before_on_success_runs).
    hooks = wait_for(lambda: (h := lab.connection.lrange(f"{succeeded.id}:hooks", 0, -1)) and len(h) >= 3 and h, 10,
                     "after_return of the success")  # fmt: skip
    assert hooks == [b"on_retry", b"on_retry", b"after_return SUCCESS"]
    hooks = lab.connection.lrange(f"{failed.id}:hooks", 0, -1)
    assert hooks == [b"on_retry", b"on_retry", b"after_return FAILURE"]


class Recorded(tasklab.Task):
    """Records its hooks and requests in ``calls``; fails while ``request.retries < fails``."""

    calls: list = []
    autoretry_for = (KeyError,)
    max_retries = 2

    def run(self, x, fails=0):
        r = self.request
        self.calls.append(("run", r.id, r.retries, r.is_eager, r.called_directly, r.correlation_id))
        if r.retries < fails:
            raise KeyError(f"attempt {r.retries}")
        if x < 0:
            raise ValueError("negative")
        return x * 2

    def before_start(self, task_id, args, kwargs):
        self.calls.append(("before_start", task_id, args, kwargs))

    def on_success(self, retval, task_id, args, kwargs):
        self.calls.append(("on_success", retval))

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        self.calls.append(("on_retry", str(exc)))

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        self.calls.append(("on_failure", type(exc).__name__, "ValueError" in str(einfo)))

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        self.calls.append(("after_return", status))


def test_apply_runs_the_task_here_with_its_hooks_and_no_redis(monkeypatch):
    monkeypatch.setenv("TASKLAB_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing may be reached
    Recorded.calls = []
    result = Recorded.apply((3,), task_id="here")
    assert isinstance(result, tasklab.EagerResult) and result.id == "here"
    assert (result.state, result.result, result.get(timeout=1), result.traceback) == ("SUCCESS", 6, 6, None)
    assert result.ready() and result.successful() and not result.failed()
    assert Recorded.calls == [("before_start", "here", (3,), {}), ("run", "here", 0, True, False, "here"),
                              ("on_success", 6), ("after_return", "SUCCESS")]  # fmt: skip
    assert Recorded().request.is_eager is False, "the eager request is gone afterwards"


def test_apply_fails_retries_at_once_and_propagates():
    Recorded.calls = []
    failed = Recorded.apply((-1,), {"fails": 1})
    assert failed.state == "FAILURE" and failed.failed() and not failed.successful() and failed.ready()
    assert isinstance(failed.result, ValueError) and "ValueError: negative" in failed.traceback
    with pytest.raises(ValueError, match="negative"):
        failed.get()
    assert isinstance(failed.get(propagate=False), ValueError)
    assert [c[0] for c in Recorded.calls] == ["before_start", "run", "on_retry", "before_start", "run",
                                              "on_failure", "after_return"]  # fmt: skip
    assert Recorded.calls[4][2] == 1 and Recorded.calls[5] == ("on_failure", "ValueError", True)
    Recorded.calls = []
    exhausted = Recorded.apply((1,), {"fails": 5})
    assert isinstance(exhausted.result, KeyError) and exhausted.retries == 2, "max_retries=2, then the error"
    assert [c[0] for c in Recorded.calls].count("on_retry") == 2


def test_apply_of_a_cell_task_needs_no_worker(shell, lab):
    task_cell(shell, SEEN, "--bind")
    seen = shell.user_ns["seen"].apply((1, 2)).get()
    assert seen["is_eager"] is True and seen["values"] == [1, 2] and seen["correlation_id"] == seen["id"]
    assert lab.connection.llen("rq:queue:default") == 0, "nothing was submitted"


SLOW_HANDLER = """
import tasklab
from rq import get_current_job


class SlowToCelebrate(tasklab.Task):
    def run(self, x):
        print("ran", x)
        return x * 2

    def on_success(self, retval, task_id, args, kwargs):
        get_current_job().connection.blpop(f"{task_id}:gate", timeout=30)  # held until the test opens it
        print("on_success", retval, self.request.id == task_id)

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        print("after_return", status)
"""


def test_the_result_is_stored_before_on_success_runs(shell, lab):
    """As Celery: a slow on_success does not delay get(); what the hooks print is output all the same."""
    lab.workers(1)
    task_cell(shell, SLOW_HANDLER)
    result = shell.user_ns["SlowToCelebrate"]().delay(21)
    assert result.get(timeout=10) == 42, "get() returns while on_success waits for its gate"
    assert result.state == "SUCCESS"
    lab.connection.rpush(f"{result.id}:gate", 1)
    assert result.output.splitlines() == ["ran 21", "on_success 42 True", "after_return SUCCESS"]
