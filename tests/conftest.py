"""Fixtures start their own embedded Redis and real worker processes; nothing else is touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tasklab
from tasklab.local.server import EmbeddedServer

# Never let a developer's environment point the tests at a Redis they did not start.
os.environ.pop("TASKLAB_REDIS_URL", None)
os.environ.pop("TASKLAB_DATA_DIR", None)
# One key for every lab and worker of the run (the embedded server's own would differ per data
# directory); a developer's key file is never read.
os.environ["TASKLAB_SECRET"] = "tasklab-tests-" + "k" * 40
os.environ["TASKLAB_SECRET_FILE"] = "/nonexistent/tasklab-tests/secret"
# The tests' own modules (tests.shipped_tasks and the like) are importable by every worker the tests
# start, which run in this checkout: their tasks ship by import path. A module a test writes elsewhere
# ships by source (tests/test_shipping.py).
os.environ["TASKLAB_IMPORTABLE"] = "tests"


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited; only its parent has not collected it yet
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    """One embedded Redis for the session, in a temporary data directory."""
    srv = EmbeddedServer(tmp_path_factory.mktemp("redis-data")).start()
    yield srv
    srv.stop()


@pytest.fixture
def lab(server: EmbeddedServer) -> Iterator[tasklab.Lab]:
    """A lab on the session's embedded server, with an empty database.

    Workers start only when a test asks (``lab.workers(n)``), so a test controls when jobs run.
    """
    lab = tasklab.connect(data_dir=server.data_dir, autostart_workers=False)
    lab.connection.flushdb()
    yield lab
    lab.shutdown()


@pytest.fixture
def run_python(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``python -c code`` in the background; every process is killed at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(code: str, **kwargs: object) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            **kwargs,  # type: ignore[arg-type]
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.fixture
def shell(lab: tasklab.Lab) -> Iterator[object]:
    """A real IPython shell with tasklab loaded and an empty namespace; tasks use ``lab``."""
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    ip.reset(new_session=False)
    ip.extension_manager.load_extension("tasklab")
    yield ip
    ip.reset(new_session=False)


def run_cell(ip: object, code: str) -> object:
    """Run ``code`` in the shell and re-raise its error, if any; return the cell's value."""
    result = ip.run_cell(code)  # type: ignore[attr-defined]
    result.raise_error()
    return result.result


def task_cell(ip: object, source: str, line: str = "") -> None:
    """Run a ``%%task`` cell."""
    ip.run_cell_magic("task", line, source)  # type: ignore[attr-defined]


#: Tasks that wait for the test to open a gate (a Redis key): ``gated``, and ``Requeued``, whose first
#: attempt waits and whose later ones (under acks_late) return at once.
GATED = """
import time
import tasklab
from rq import get_current_job

def gated(gate):
    # Waits for the test to open its gate.
    connection = get_current_job().connection
    while not connection.get(gate):
        time.sleep(0.02)
    return "first attempt"

class Requeued(tasklab.Task):
    acks_late = True
    max_retries = 2

    def run(self, gate):
        if self.request.retries == 0:  # the first attempt waits for the gate; the requeued one does not
            connection = get_current_job().connection
            while not connection.get(gate):
                time.sleep(0.02)
            return "first attempt"
        return "requeued attempt"
"""


#: Tasks the monitor's and the result views' tests run: a success, a failure, and one that waits for
#: the test to open its gate (a Redis list).
OK_BAD_GATED = """
from rq import get_current_job

def ok(x):
    return x

def bad(x):
    raise ValueError(f"bad {x}")

def gated(gate):
    get_current_job().connection.blpop(gate, timeout=30)
    return gate
"""
