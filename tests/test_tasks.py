"""Tasks on real workers: versions, hooks, base classes, output, results and failures."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

import tasklab
from tasklab.client.submit import EXECUTE
from tasklab.engine import keys

from .conftest import run_cell, task_cell, wait_for

GATE = """
from rq import get_current_job

def wait_for_gate(name):
    # Block until the test pushes to the Redis list `name`: a synchronisation point, not a sleep.
    get_current_job().connection.blpop(name, timeout=30)
"""


def test_queued_job_keeps_its_version(shell, lab):
    task_cell(shell, "def which():\n    return 'v1'\n")
    first = shell.user_ns["which"]
    queued = first.delay()  # no workers yet: it waits in the queue
    task_cell(shell, "def which():\n    return 'v2'\n")
    later = shell.user_ns["which"].delay()
    lab.workers(1)
    assert queued.get(timeout=10) == "v1"
    assert later.get(timeout=10) == "v2"
    assert first._tl_version != shell.user_ns["which"]._tl_version


def test_scheduled_job_keeps_its_version(shell, lab):
    lab.workers(1)
    task_cell(shell, "def which():\n    return 'old'\n")
    delayed = shell.user_ns["which"].apply_async(countdown=0.3)
    task_cell(shell, "def which():\n    return 'new'\n")
    assert delayed.state == "PENDING"
    assert delayed.get(timeout=10) == "old"


def test_hooks_run_in_celery_order(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        """
import tasklab

class Traced(tasklab.Task):
    def before_start(self, task_id, args, kwargs):
        print("before_start", args)
    def on_success(self, retval, task_id, args, kwargs):
        print("on_success", retval)
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        print("on_failure", type(exc).__name__, "Traceback" in str(einfo))
    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        print("after_return", status)
""",
    )
    task_cell(shell, "def half(x):\n    print('run')\n    return 1 / x\n", "--base Traced")
    ok = shell.user_ns["half"].delay(2)
    assert ok.get(timeout=10) == 0.5
    assert ok.output.split("\n")[:-1] == [
        "before_start (2,)",
        "run",
        "on_success 0.5",
        "after_return SUCCESS",
    ]
    bad = shell.user_ns["half"].delay(0)
    with pytest.raises(ZeroDivisionError):
        bad.get(timeout=10)
    assert bad.output.split("\n")[:-1] == [
        "before_start (0,)", "run", "on_failure ZeroDivisionError True", "after_return FAILURE",
    ]  # fmt: skip


def test_hook_exception_is_logged_and_outcome_stands(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        """
import tasklab

class Noisy(tasklab.Task):
    def on_success(self, retval, task_id, args, kwargs):
        raise RuntimeError("hook broke")

class Sum(Noisy):
    def run(self, a, b):
        return a + b
""",
    )
    result = shell.user_ns["Sum"].delay(2, 3)
    assert result.get(timeout=10) == 5
    assert result.state == "SUCCESS"
    assert f"on_success hook of task Sum (job {result.id}) raised" in result.output
    assert "RuntimeError: hook broke" in result.output
    assert any(f"job {result.id}" in text for text in lab.worker_logs(tail=None).values())


def test_instance_lives_across_jobs_with_a_sqlite_connection(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        """
import os
import sqlite3
import tasklab

class DatabaseTask(tasklab.Task):
    _db = None

    @property
    def db(self):
        if self._db is None:
            self._db = sqlite3.connect(":memory:")
            self._db.execute("create table seen (n integer)")
        return self._db
""",
    )
    task_cell(
        shell,
        """
import os

def record(self, n):
    self.db.execute("insert into seen values (?)", (n,))
    count = self.db.execute("select count(*) from seen").fetchone()[0]
    return os.getpid(), id(self.db), count
""",
        "--base DatabaseTask --bind",
    )
    results = [shell.user_ns["record"].delay(i).get(timeout=10) for i in range(3)]
    assert len({pid for pid, _, _ in results}) == 1
    assert len({db for _, db, _ in results}) == 1, "one connection per worker process, reused"
    assert [count for _, _, count in results] == [1, 2, 3]


def test_caching_base_class(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        """
import tasklab

class Cached(tasklab.Task):
    def __call__(self, *args, **kwargs):
        cache = self.__dict__.setdefault("_cache", {})
        key = (args, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = super().__call__(*args, **kwargs)
        return cache[key]
""",
    )
    task_cell(shell, "calls = []\n\ndef slow_square(x):\n    calls.append(x)\n    return x * x, len(calls)\n",
              "--base Cached")  # fmt: skip
    task = shell.user_ns["slow_square"]
    assert tuple(task.delay(4).get(timeout=10)) == (16, 1)
    assert tuple(task.delay(4).get(timeout=10)) == (16, 1), "the second call is served from the cache"
    assert tuple(task.delay(5).get(timeout=10)) == (25, 2)


def test_metrics_base_class_records_durations(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        """
import time
import tasklab

class Timed(tasklab.Task):
    durations = []

    def before_start(self, task_id, args, kwargs):
        self._started = time.perf_counter()

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        type(self).durations.append((self.name, status, time.perf_counter() - self._started))

class Report(Timed):
    def run(self):
        return [(name, status) for name, status, seconds in Timed.durations if seconds >= 0]
""",
    )
    task_cell(shell, "def work(x):\n    return x\n", "--base Timed")
    for i in range(3):
        shell.user_ns["work"].delay(i).get(timeout=10)
    assert shell.user_ns["Report"].delay().get(timeout=10) == [("work", "SUCCESS")] * 3


def test_call_override_checks_and_transforms(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        """
import tasklab

class Positive(tasklab.Task):
    def __call__(self, x):
        if x < 0:
            raise ValueError(f"{self.name} needs x >= 0, got {x}")
        return {"value": super().__call__(x)}
""",
    )
    task_cell(shell, "def root(x):\n    return x ** 0.5\n", "--base Positive")
    assert shell.user_ns["root"].delay(9).get(timeout=10) == {"value": 3.0}
    with pytest.raises(ValueError, match="root needs x >= 0"):
        shell.user_ns["root"].delay(-1).get(timeout=10)


def test_bind_gives_the_request(shell, lab):
    lab.workers(1)
    task_cell(shell, "def whoami(self, a, b=2):\n    r = self.request\n"
                     "    return self.name, r.id, r.args, r.kwargs, r.retries, r.worker, r.called_directly\n",
              "--bind")  # fmt: skip
    result = shell.user_ns["whoami"].delay(1, b=3)
    name, job_id, args, kwargs, retries, worker, direct = result.get(timeout=10)
    assert (name, job_id, list(args), kwargs, retries) == ("whoami", result.id, [1], {"b": 3}, 0)
    assert worker == lab.pool.names[0] and direct is False
    assert shell.user_ns["whoami"](5)[6] is True, "called locally, the request is empty"


def test_output_is_captured_per_attempt(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        """
import sys
import tasklab

log = tasklab.get_task_logger(__name__)

def chatty(n):
    print("to stdout", n)
    print("to stderr", n, file=sys.stderr)
    log.info("logged %s", n)
    return n
""",
    )
    result = shell.user_ns["chatty"].delay(7)
    assert result.get(timeout=10) == 7
    assert "to stdout 7" in result.output and "to stderr 7" in result.output and "logged 7" in result.output
    (log_text,) = lab.worker_logs(tail=None).values()
    assert "to stdout 7" in log_text, "output also goes to the worker log"


def test_output_is_bounded(shell, lab):
    lab.workers(1)
    task_cell(shell, "def flood():\n    for i in range(20000):\n        print(f'line {i:05d} ' + 'x' * 20)\n")
    result = shell.user_ns["flood"].delay()
    result.get(timeout=20)
    assert len(result.output) < 66 * 1024
    assert result.output.rstrip().endswith("line 19999 " + "x" * 20)
    assert "earlier characters dropped" in result.output


def test_exception_type_and_traceback_with_cell_lines(shell, lab):
    lab.workers(1)
    task_cell(shell, "def fail(x):\n    y = x + 1\n    raise KeyError(f'no {y}')\n")
    result = shell.user_ns["fail"].delay(1)
    with pytest.raises(KeyError, match="no 2") as info:
        result.get(timeout=10)
    version = shell.user_ns["fail"]._tl_version[:7]
    assert f"<task fail v{version}>" in result.traceback
    assert "raise KeyError(f'no {y}')" in result.traceback, "the cell's own line is shown"
    assert "rq/worker" not in result.traceback, "the traceback starts at the task's own code"
    notes = "".join(getattr(info.value, "__notes__", []))
    if sys.version_info >= (3, 11):
        assert "raise KeyError" in notes and "rq/worker" not in notes
    assert result.state == "FAILURE" and result.failed() and not result.successful()
    assert isinstance(result.result, KeyError)
    assert isinstance(result.get(timeout=1, propagate=False), KeyError)


def test_exception_that_cannot_be_rebuilt_becomes_task_error(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        """
class TwoArgs(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")

def odd():
    raise TwoArgs(1, 2)
""",
    )
    with pytest.raises(tasklab.TaskError) as info:
        shell.user_ns["odd"].delay().get(timeout=10)
    assert info.value.exc_type.endswith("TwoArgs")
    assert "raise TwoArgs(1, 2)" in info.value.remote_traceback


def test_states_and_result_attributes(shell, lab):
    lab.workers(1)
    task_cell(shell, GATE + "\ndef gated(name):\n    wait_for_gate(name)\n    return 'done'\n")
    result = shell.user_ns["gated"].delay("gate-1")
    wait_for(lambda: result.state == "STARTED", 10, "the job to start")
    assert not result.ready() and result.result is None and result.date_done is None
    with pytest.raises(tasklab.TimeoutError):
        result.get(timeout=0.2)
    with pytest.raises(TimeoutError):  # also the builtin, as users catch it
        result.get(timeout=0.05)
    lab.connection.rpush("gate-1", 1)
    assert result.get(timeout=10) == "done"
    assert result.state == result.status == "SUCCESS" and result.ready() and result.successful()
    assert result.result == "done" and result.traceback is None and result.retries == 0
    assert result.date_done is not None
    again = tasklab.AsyncResult(result.id)
    assert again.get(timeout=1) == "done" and again.state == "SUCCESS"
    assert tasklab.AsyncResult("no-such-job").state == "PENDING"


def test_revoke_a_queued_job(shell, lab):
    task_cell(shell, "def never():\n    return 'ran'\n")
    result = shell.user_ns["never"].delay()
    result.revoke()
    assert result.state == "REVOKED"
    lab.workers(1)
    marker = shell.user_ns["never"].delay()
    assert marker.get(timeout=10) == "ran"
    assert result.state == "REVOKED", "a revoked job never runs"
    with pytest.raises(tasklab.TaskRevokedError):
        result.get(timeout=2)
    with pytest.warns(tasklab.TaskLabWarning, match="only a job that has not finished"):
        marker.revoke()


def test_await_a_result(shell, lab):
    lab.workers(1)
    task_cell(shell, "def three():\n    return 3\n")
    task = shell.user_ns["three"]

    async def main():
        return await task.delay()

    assert asyncio.run(main()) == 3


def test_get_inside_a_task_is_refused(shell, lab):
    lab.workers(2)
    task_cell(shell, "def inner():\n    return 1\n\ndef outer():\n    return inner.delay().get(timeout=5)\n")
    with pytest.raises(tasklab.InsideTaskError, match=r"Never call result\.get"):
        shell.user_ns["outer"].delay().get(timeout=10)


def test_unserialisable_argument_fails_at_submit(shell, lab):
    task_cell(shell, "def use(path, lock):\n    return path\n")
    with pytest.raises(tasklab.SerializationError) as info:
        shell.user_ns["use"].delay("a.png", threading.Lock())
    message = str(info.value)
    assert "argument 'lock'" in message and "_thread.lock" in message
    with pytest.raises(tasklab.SerializationError, match=r"item 1\)"):
        shell.user_ns["use"].starmap_async([("a", 1), ("b", threading.Lock())])
    assert lab.queue().count == 0, "nothing was submitted"


def test_arguments_that_do_not_fit_fail_at_submit(shell, lab):
    task_cell(shell, "def pair(a, b):\n    return a, b\n")
    with pytest.raises(TypeError, match="pair"):
        shell.user_ns["pair"].delay(1)
    assert lab.queue().count == 0


def test_unknown_task_version_fails_with_not_registered(lab):
    lab.workers(1)
    job = lab.queue().enqueue_call(
        EXECUTE, meta={keys.META_TASK: "ghost", keys.META_VERSION: "000000000000", keys.META_NAMESPACE: "x"}
    )
    with pytest.raises(tasklab.NotRegistered, match="000000000000"):
        tasklab.AsyncResult(job.id).get(timeout=10)


def test_undeserialisable_arguments_fail_the_job_with_the_reason(shell, lab, tmp_path, monkeypatch):
    (tmp_path / "kernel_only.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import kernel_only

    lab.workers(1)
    task_cell(shell, "def take(x):\n    return 'got it'\n")
    result = shell.user_ns["take"].delay(kernel_only.Thing())
    with pytest.raises(tasklab.TaskError) as info:
        result.get(timeout=10)
    assert "kernel_only" in str(info.value) + (info.value.remote_traceback or "")


def test_unserialisable_return_value_fails_clearly(shell, lab):
    lab.workers(1)
    task_cell(shell, "import threading\n\ndef give():\n    return threading.Lock()\n")
    with pytest.raises(tasklab.SerializationError, match=r"returned a _thread\.lock"):
        shell.user_ns["give"].delay().get(timeout=10)


def test_ignore_result_and_result_ttl(shell, lab):
    lab.workers(1)
    task_cell(shell, "def quiet():\n    return 'x'\n", "--ignore-result")
    task_cell(shell, "def kept():\n    return 'y'\n", "--result-ttl 60")
    quiet = shell.user_ns["quiet"].delay()
    kept = shell.user_ns["kept"].delay()
    assert kept.get(timeout=10) == "y"
    wait_for(lambda: not lab.connection.exists(f"rq:job:{quiet.id}"), 10, "the ignored result's job to go")
    assert not lab.connection.exists(f"rq:results:{quiet.id}"), "no result stored"
    assert 0 < lab.connection.ttl(f"rq:job:{kept.id}") <= 60


def test_map_async_and_starmap_async_in_order(shell, lab):
    lab.workers(2)
    task_cell(shell, "def add(a, b=0):\n    return a + b\n")
    assert shell.user_ns["add"].map_async(range(2500)).get(timeout=60) == list(range(2500))
    results = shell.user_ns["add"].starmap_async([(i, i) for i in range(10)])
    assert results.get(timeout=10) == [2 * i for i in range(10)]
    assert results.ready() and results.successful() and results.completed_count() == 10


def test_tasks_can_submit_tasks(shell, lab):
    lab.workers(2)
    task_cell(shell, "def leaf(x):\n    return x + 1\n")
    task_cell(shell, "def fan(n):\n    return [r.id for r in leaf.map_async(range(n))]\n")
    ids = shell.user_ns["fan"].delay(3).get(timeout=10)
    assert tasklab.ResultSet(tasklab.AsyncResult(i) for i in ids).get(timeout=10) == [1, 2, 3]


def test_run_cell_keeps_functions_usable_locally(shell, lab):
    task_cell(shell, "def local(x):\n    return x * 10\n")
    assert run_cell(shell, "local(4)") == 40


def test_get_of_a_job_not_in_redis_raises_instead_of_waiting_for_ever(shell, lab):
    with pytest.raises(tasklab.ResultMissing, match="not in this lab's Redis"):
        tasklab.AsyncResult("no-such-task", lab).get()  # no timeout: it must not wait for ever
    with pytest.raises(tasklab.ResultMissing):
        tasklab.ResultSet([tasklab.AsyncResult("no-such-task", lab)]).get()
    lab.workers(1)
    task_cell(shell, "def noted(x):\n    return x\n")
    ignored = shell.user_ns["noted"].apply_async((1,), ignore_result=True)
    assert ignored.get() is None, "as Celery documents: at once, with no result to wait for"


def test_a_class_s_own_attributes_win_over_the_cell_s_options(shell, lab):
    """The options on a %%task line apply to what the cell defines, but not over what a Task
    subclass of the cell sets in its own body (the more specific one wins)."""
    lab.workers(1)
    task_cell(
        shell,
        """
import tasklab


class Transient(Exception):
    pass


class Flaky(tasklab.Task):
    autoretry_for = (Transient,)
    max_retries = 2
    default_retry_delay = 0

    def run(self):
        if self.request.retries < 2:
            raise Transient("again")
        return self.request.retries


def plain():
    return "plain"
""",
        "--autoretry-for ConnectionError --max-retries 1 --queue default",
    )
    flaky = shell.user_ns["Flaky"]
    assert flaky.delay().get(timeout=20) == 2, "retried on its own class, as often as it says"
    assert flaky.autoretry_for == (shell.user_ns["Transient"],) and flaky.max_retries == 2
    plain = shell.user_ns["plain"]
    assert plain.autoretry_for == (ConnectionError,) and plain.max_retries == 1, "the cell's options for the rest"
