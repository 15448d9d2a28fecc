"""Post-mortem debugging in the kernel: ``r.debug()`` and ``%tasklab debug ID`` re-run a failed attempt here
(its code version, arguments and attempt number) and open IPython's debugger at the exception. The debugger
is driven by the commands a test feeds it on stdin, and what it prints is checked."""

from __future__ import annotations

import io
import os
import re
import sys

import pytest
from IPython.core.error import UsageError
from rq.job import Job
from rq.results import Result

from tasklab.client.result import AsyncResult
from tasklab.code.serialization import Serializer
from tasklab.errors import DebugError

from .conftest import run_cell, task_cell, wait_for

TASKS = """
import os
import pathlib

def _ratio(total, by):
    share = total / by
    return share

def divide(numbers, by):
    total = sum(numbers)
    return _ratio(total, by)

def total_of(numbers):
    return sum(numbers)

def portion(total, by):
    return total / by

def needs_worker(x):
    from rq import get_current_job
    connection = get_current_job().connection  # no job outside a worker
    raise KeyError(x)

def reads(path):
    return pathlib.Path(path).read_text()

def dies():
    os._exit(3)
"""

RETRYING = """
def retrying(self, x):
    if self.request.retries < 1:
        raise self.retry(exc=ValueError("first"), countdown=0.05)
    attempt = self.request.retries
    raise LookupError(f"attempt {attempt} of {x}")
"""


@pytest.fixture
def t(shell, lab):
    task_cell(shell, TASKS)
    task_cell(shell, RETRYING, "--bind --max-retries 1")
    lab.workers(1)
    return shell.user_ns


def failed(result: AsyncResult) -> AsyncResult:
    """``result``, once its task has failed for good."""
    with pytest.raises(Exception):  # noqa: B017  (whichever exception the task raised)
        result.get(timeout=20)
    assert result.state == "FAILURE"
    return result


def debugger_session(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], commands: list[str]):
    """Feed ``commands`` to the debugger as its stdin; return a function giving what was printed."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(f"{c}\n" for c in commands)))
    return lambda: re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # without the colours


def redis_contents(lab) -> dict[bytes, bytes]:
    """Every key and its value, but for those about to expire (a dead worker's record, the lost-job sweep's lock)."""
    connection = lab.connection
    keys = [key for key in connection.keys("*") if connection.ttl(key) == -1 or connection.ttl(key) > 30]
    return {key: connection.dump(key) for key in keys}


def test_debug_stops_at_the_raise_site_with_its_locals(t, shell, lab, monkeypatch, capsys):
    r = failed(t["divide"].delay([11, 22, 33], 0))
    lab.workers(0)  # no worker is involved
    before = redis_contents(lab)
    printed = debugger_session(monkeypatch, capsys, ["p total", "p by", "p share", "up", "p numbers", "q"])
    shell.user_ns["r"] = r
    run_cell(shell, "r.debug()")
    out = printed()
    assert f"Task divide ({r.id}, attempt 1, v" in out
    assert "failed again here: ZeroDivisionError: division by zero" in out
    lines = out.split("ipdb> ")
    assert "(5)_ratio()" in lines[0] and "----> 5     share = total / by" in lines[0], "it stops at the raise site"
    assert lines[1].strip() == "66" and lines[2].strip() == "0", out
    assert "NameError" in lines[3], "the raise site is in _ratio, before share was assigned"
    assert "(10)divide()" in lines[4] and "---> 10     return _ratio(total, by)" in lines[4], "up: the caller"
    assert lines[5].strip() == "[11, 22, 33]", out
    assert redis_contents(lab) == before, "debugging wrote nothing to Redis"


def test_the_magic_debugs_by_id(t, shell, lab, monkeypatch, capsys):
    r = failed(t["divide"].delay([1, 2], 0))
    printed = debugger_session(monkeypatch, capsys, ["p total", "c"])
    shell.run_line_magic("tasklab", f"debug {r.id}")
    out = printed()
    assert "failed again here: ZeroDivisionError" in out and out.split("ipdb> ")[1].strip() == "3"
    with pytest.raises(UsageError, match="not in this lab's Redis"):
        shell.run_line_magic("tasklab", "debug no-such-task")


def test_the_failed_attempts_own_code_version_is_run(t, shell, lab):
    task_cell(shell, "def flaky(x):\n    raise ValueError(f'old code, {x}')\n")
    r = failed(shell.user_ns["flaky"].delay(5))
    task_cell(shell, "def flaky(x):\n    return x\n")  # the cell changed since
    assert shell.user_ns["flaky"].apply((5,)).get() == 5
    reproduction = r.reproduce()
    assert reproduction.reproduced and str(reproduction.exception) == "old code, 5"
    assert reproduction.locals == {"x": 5}


def test_the_attempt_number_is_the_failed_attempts(t, lab):
    r = failed(t["retrying"].delay("job"))
    assert r.retries == 1
    reproduction = r.reproduce()
    assert reproduction.reproduced and reproduction.attempt == 1
    assert str(reproduction.exception) == "attempt 1 of job" and reproduction.locals["attempt"] == 1


def test_a_workflow_step_gets_the_value_of_the_step_before(t, lab):
    r = failed((t["total_of"].s([4, 5]) | t["portion"].s(0)).delay())
    reproduction = r.reproduce()
    assert reproduction.reproduced and reproduction.locals == {"total": 9, "by": 0}
    (parent,) = Job.fetch(r.id, connection=lab.connection, serializer=Serializer).meta["tl_parents"]
    lab.connection.delete(Result.get_key(parent))  # the step before's result expired
    with pytest.raises(DebugError, match=rf"Cannot debug workflow step {r.id}: The result of job {parent}.* is gone"):
        r.reproduce()


def test_a_failure_that_needs_the_worker_is_said_to_differ(t, lab):
    r = failed(t["needs_worker"].delay("k"))
    reproduction = r.reproduce()
    assert not reproduction.reproduced and isinstance(reproduction.exception, AttributeError)
    summary = reproduction.summary()
    assert "failed differently here: AttributeError" in summary and "where the worker raised KeyError: 'k'" in summary
    assert "worker's environment" in summary


def test_a_failure_that_no_longer_happens_is_said_to_be_gone(t, shell, lab, tmp_path, monkeypatch, capsys):
    path = tmp_path / "input.txt"
    r = failed(t["reads"].delay(str(path)))
    path.write_text("there now")
    reproduction = r.reproduce()
    assert reproduction.exception is None and reproduction.value == "there now" and not reproduction.reproduced
    assert "succeeded when run here (it returned 'there now')" in reproduction.summary()
    assert "FileNotFoundError" in reproduction.summary() and "was not reproduced" in reproduction.summary()
    printed = debugger_session(monkeypatch, capsys, ["q"])
    r.debug()  # nothing to stop at: it says so and returns
    out = printed()
    assert "was not reproduced" in out and "ipdb>" not in out


def test_what_cannot_be_debugged_is_refused_with_the_reason(t, lab):
    ok = t["divide"].delay([1], 1)
    assert ok.get(timeout=10) == 1.0
    with pytest.raises(DebugError, match=r"is SUCCESS, not FAILURE"):
        ok.debug()
    with pytest.raises(DebugError, match="not in this lab's Redis"):
        AsyncResult("no-such-task", lab).reproduce()
    dead = t["dies"].delay()
    wait_for(lambda: dead.state == "FAILURE", 20, "the lost worker's job to fail")
    with pytest.raises(DebugError, match=r"worker process died while it ran.*could end the kernel"):
        dead.debug()


def test_a_terminal_ipython_that_never_ran_the_cell_debugs_it(t, lab, server):
    """``ipython`` in a terminal (pexpect), another process than the one that defined the task: it loads the
    failed attempt's code version from Redis, and its own debugger (IPython's terminal one) takes the commands."""
    pexpect = pytest.importorskip("pexpect")
    r = failed(t["divide"].delay([11, 22, 33], 0))
    options = ["--simple-prompt", "--colors=NoColor", "--no-banner", "--HistoryManager.enabled=False"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}  # this checkout's tasklab
    child = pexpect.spawn(sys.executable, ["-m", "IPython", *options], encoding="utf-8", timeout=30, env=env)
    try:
        child.expect(r"In \[1\]: ")
        child.sendline(
            f"import tasklab; lab = tasklab.connect(data_dir={str(server.data_dir)!r}, autostart_workers=False)"
        )
        child.expect(r"In \[2\]: ")
        child.sendline(f"tasklab.AsyncResult({r.id!r}, lab).debug()")
        child.expect("failed again here: ZeroDivisionError: division by zero")
        child.expect("ipdb> ")
        assert "----> 5     share = total / by" in child.before
        for command, shown in (("p total", "66"), ("up", "return _ratio(total, by)"), ("p numbers", "[11, 22, 33]")):
            child.sendline(command)
            child.expect("ipdb> ")
            assert shown in child.before, (command, child.before)
        child.sendline("q")
        child.expect(r"In \[3\]: ")
        child.sendline("lab.shutdown(); exit()")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
