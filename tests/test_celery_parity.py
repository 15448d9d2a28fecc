"""Celery parity (issue 15): ``app.task(fn)`` on an importable function, ``ignore_result``'s
``get()``, and ``after_return`` only for a final outcome."""

from __future__ import annotations

import time

import pytest

import tasklab

from . import shipped_tasks
from .conftest import GATED, task_cell, wait_for


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
    assert shell.user_ns["quiet"].map(range(3)).get(timeout=5) == [None, None, None]
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
    hooks = lab.connection.lrange(f"{succeeded.id}:hooks", 0, -1)
    assert hooks == [b"on_retry", b"on_retry", b"after_return SUCCESS"]
    hooks = lab.connection.lrange(f"{failed.id}:hooks", 0, -1)
    assert hooks == [b"on_retry", b"on_retry", b"after_return FAILURE"]
