"""Bad input gets a clear TaskLabError at the moment the user acts, and nothing is submitted."""

from __future__ import annotations

import contextlib
import math
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import redis
from IPython.core.error import UsageError

import tasklab
from tasklab.code import cells
from tasklab.local.server import find_redis_server

from .conftest import pid_alive, task_cell, wait_for

PING = "def ping():\n    return 'pong'\n"


def nothing_queued(lab) -> bool:
    queue = lab.queue()
    return queue.count == 0 and queue.scheduled_job_registry.count == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"countdown": math.nan}, "countdown=nan"),
        ({"countdown": math.inf}, "countdown=inf"),
        ({"countdown": 1e12}, "at most a year"),
        ({"countdown": 10**30}, "at most a year"),
        ({"countdown": True}, "countdown=True"),
        ({"countdown": -1}, "countdown=-1"),
        ({"eta": datetime.min}, "eta="),
        ({"eta": datetime.now(timezone.utc) + timedelta(days=400)}, "more than a year ahead"),
        ({"time_limit": math.nan}, "time_limit=nan"),
        ({"soft_time_limit": math.inf}, "soft_time_limit=inf"),
        ({"time_limit": 1e308}, "at most a year"),
        ({"task_id": ""}, "task_id=''"),
        ({"task_id": "a:b"}, "task_id='a:b'"),
        ({"task_id": 123}, "task_id=123"),
        ({"queue": "default:intermediate"}, "no ':'"),
        ({"queue": ""}, "queue=''"),
    ],
)
def test_bad_call_options_are_refused_and_submit_nothing(shell, lab, options, message):
    task_cell(shell, PING)
    with pytest.raises(tasklab.ConfigurationError, match=message.replace("(", r"\(")):
        shell.user_ns["ping"].apply_async(**options)
    assert nothing_queued(lab)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--time-limit nan", "time_limit=nan"),
        ("--time-limit inf", "time_limit=inf"),
        ("--soft-time-limit 1e308", "at most a year"),
        ("--rate-limit 0/s", "lets no task start"),
        ("--rate-limit 0.00000001/h", "more than a year apart"),
        ("--rate-limit 1e-30/s", "is invalid"),
        ("--concurrency-limit 0", "concurrency_limit=0"),
        ("--queue default:intermediate", "no ':'"),
        ("--retry-backoff nan", "retry_backoff=nan"),
        ("--retry-backoff 1e308", "at most a year"),
        ("--max-retries 10000000000", "from -1 to 1000000"),
        ("--result-ttl 10000000000", "from -1 to"),
        ("--default-retry-delay 10000000000", "from 0 to"),
    ],
)
def test_bad_task_options_are_refused_and_register_nothing(shell, line, message):
    result = shell.run_cell(f"%%task {line}\ndef refused():\n    return 1\n")
    assert not result.success and message in str(result.error_in_exec)
    assert "refused" not in shell.user_ns


def registered(lab) -> dict[str, str]:
    return lab.registry.current(lab.namespace)


def local_versions() -> set[str]:
    return {c.version for c in cells.local_cells()}


def refused_cell(shell, source: str, line: str = "") -> str:
    """Run a %%task cell that must be refused; the message, once nothing was registered anywhere."""
    before, versions = dict(shell.user_ns), local_versions()
    lab = tasklab.current_lab()
    known = registered(lab)
    with pytest.raises(UsageError) as info:
        task_cell(shell, source, line)
    assert registered(lab) == known and local_versions() == versions
    assert {k: v for k, v in shell.user_ns.items() if k in before or not k.startswith("_")} == before
    return str(info.value)


# -- 1. lone surrogates ------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["def f():\n    return '\ud800'\n", "# \ud800\ndef f():\n    return 1\n"])
def test_a_lone_surrogate_in_a_cell_is_refused_with_where_it_is(shell, lab, source):
    message = refused_cell(shell, source)
    assert "lone surrogate" in message and "\\ud800" in message and "Nothing was registered" in message
    assert "Line " in message and "column" in message


def test_a_lone_surrogate_in_a_task_name_is_refused(shell, lab):
    assert "lone surrogate" in refused_cell(shell, PING, "--name \ud800")
    with pytest.raises(tasklab.ConfigurationError, match="lone surrogate"):
        tasklab.register_cell(PING, shell.user_ns, {"name": "x\ud800"})
    with pytest.raises(tasklab.ConfigurationError, match="lone surrogate"):
        lab.task(name="\ud800")(lambda: 1)
    # Nothing half-made is left to be published at the next submit.
    task_cell(shell, PING)
    shell.user_ns["ping"].delay()
    assert lab.queue().count == 1


# -- 2. bad Redis URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis://:pw-s3cret@h:notaport", "Port could not be cast"),
        ("redis://:pw-s3cret@h:99999", "Port out of range"),
        ("redis://:pw-s3cret@[::1", "Invalid IPv6 URL"),
        ("redis://u:pw-s3cret@h:6379/0?socket_timeout=abc", "socket_timeout"),
        ("redis://h:6379/0?socket_timeout=-1&password=pw-s3cret", "socket_timeout=-1.0 is not a number above 0"),
        ("redis://:pw-s3cret@h:6379/abc", "its path '/abc' is not a database number"),
        ("redis://:pw-s3cret@h:6379/0?no_such_option=1", "no option 'no_such_option'"),
        ("redis://:pw-s3cret@a..b:6379/0", "'a..b' is not a host name"),
        ("redis://:pw-s3cret@h\ud800:6379/0", "lone surrogate"),
    ],
)
@pytest.mark.parametrize("how", [tasklab.connect, tasklab.Lab])
def test_bad_redis_urls_are_refused_before_connecting_without_the_password(how, url, reason):
    started = time.monotonic()
    with pytest.raises(tasklab.ConfigurationError) as info:
        how(url)
    message = str(info.value)
    assert reason in message and "not a valid Redis URL" in message and "redis://[[user]:password@]host" in message
    assert "pw-s3cret" not in message
    assert time.monotonic() - started < 1


def test_a_database_the_server_does_not_have_is_refused_with_the_fix(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--requirepass", "pw-s3cret",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"redis://:pw-s3cret@127.0.0.1:{port}"
        wait_for(lambda: _answers(url), 10, "the server to answer")
        with pytest.raises(tasklab.ConfigurationError, match="has no database 99999") as info:
            tasklab.Lab(f"{url}/99999")
        assert "pw-s3cret" not in str(info.value) and "databases" in str(info.value)
    finally:
        proc.kill()
        proc.wait()


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def http_server():
    """A TCP server that answers every connection as a web server would: 400 Bad Request."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            with conn, contextlib.suppress(OSError):
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()


def test_a_server_that_is_not_redis_is_reported_as_another_service(http_server):
    started = time.monotonic()
    with pytest.raises(tasklab.RedisUnreachable, match="does not speak Redis's protocol") as info:
        tasklab.connect(f"redis://:pw-s3cret@127.0.0.1:{http_server}/0")
    assert "host and port" in str(info.value) and "pw-s3cret" not in str(info.value)
    assert time.monotonic() - started < 5


# -- 3. task classes tasklab cannot make or run ------------------------------------------------------------

NOT_CALLABLE = "import tasklab\n\nclass Five(tasklab.Task):\n    run = 5\n"
NEEDS_ARGS = (
    "import tasklab\n\nclass Needy(tasklab.Task):\n    def __init__(self, client):\n        self.client = client\n\n"
    "    def run(self):\n        return 1\n"
)


def test_a_task_class_whose_run_is_not_callable_is_refused_at_registration(shell, lab):
    message = refused_cell(shell, NOT_CALLABLE)
    assert "Five.run is int 5, not a method" in message and "def run(self" in message


def test_a_task_class_whose_init_needs_arguments_is_refused_at_registration(shell, lab):
    message = refused_cell(shell, NEEDS_ARGS)
    assert "Needy() needs client" in message and "give them defaults" in message


def test_a_task_class_outside_a_cell_is_refused_at_its_first_use(lab):
    class Five(tasklab.Task):
        run = 5

    class Needy(tasklab.Task):
        def __init__(self, client):
            self.client = client

        def run(self):
            return 1

    with pytest.raises(tasklab.ConfigurationError, match=r"Five\.run is int 5"):
        Five.delay()
    with pytest.raises(tasklab.ConfigurationError, match=r"Needy\(\) needs client"):
        Needy.delay()
    with pytest.raises(tasklab.ConfigurationError, match="needs client"):
        lab.task(base=Needy)(len_of)
    assert nothing_queued(lab) and registered(lab) == {}


def len_of(values):
    return len(values)


# -- 4. two tasks of one name in a cell --------------------------------------------------------------------


def test_a_class_named_like_a_function_of_its_cell_is_refused(shell, lab):
    task_cell(shell, "def x():\n    return 'old'\n")
    old = shell.user_ns["x"]
    message = refused_cell(
        shell,
        "import tasklab\n\ndef x():\n    return 1\n\nclass C(tasklab.Task):\n    name = 'x'\n\n"
        "    def run(self):\n        return 2\n",
    )
    assert "Two tasks of this cell would be called 'x': the function x and the class C" in message
    assert shell.user_ns["x"] is old, "the task registered before is left as it was"


# -- 5. names Python or IPython own ------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "line"), [
    ("def print(*args):\n    return 1\n", ""),
    ("def len(x):\n    return 1\n", ""),
    ("import tasklab\n\nclass display(tasklab.Task):\n    def run(self):\n        return 1\n", ""),
    ("def get_ipython():\n    return 1\n", ""),
])  # fmt: skip
def test_task_names_that_would_hide_pythons_or_ipythons_own_are_refused(shell, lab, source, line):
    message = refused_cell(shell, source, line)
    assert "rename it" in message and ("Python's builtin" in message or "IPython's" in message)
    assert shell.user_ns["get_ipython"]() is shell, "later magics still work"
    task_cell(shell, PING)
    assert "ping" in registered(lab)


def test_names_that_hide_nothing_in_the_notebook_are_allowed(shell, lab):
    # --name and a class's name attribute bind nothing in the notebook, and a decorator in a script
    # hides nothing there either: only the names a %%task cell binds are checked.
    task_cell(shell, PING, "--name get_ipython")
    assert shell.user_ns["get_ipython"]() is shell and "get_ipython" in registered(lab)
    summing = "import tasklab\n\nclass Summing(tasklab.Task):\n    name = 'sum'\n    def run(self):\n        return 1\n"
    task_cell(shell, summing)
    assert "sum" in registered(lab)

    def print(*args):
        return args

    assert lab.task(print).name == "print" and lab.task(name="quit")(len_of).name == "quit"


# -- 6., 7. arguments that cannot travel ------------------------------------------------------------------


@pytest.mark.parametrize("wrap", [lambda f: f, lambda f: [1, {"file": f}]], ids=["file", "nested"])
def test_an_open_file_argument_is_refused_with_pass_its_path(shell, lab, tmp_path, wrap):
    path = tmp_path / "data.txt"
    path.write_text("secret contents")
    task_cell(shell, "def count(values):\n    return len(values)\n")
    with open(path) as handle, pytest.raises(tasklab.SerializationError) as info:
        shell.user_ns["count"].delay(wrap(handle))
    message = str(info.value)
    assert "argument 'values'" in message and "open file" in message and "pass its path" in message
    assert str(path) in message and "secret contents" not in message
    assert nothing_queued(lab)


def test_a_hugely_nested_argument_is_refused_quickly_and_queues_nothing(shell, lab):
    task_cell(shell, "def count(values):\n    return len(values)\n")
    nested: list = []
    for _ in range(100_000):
        nested = [nested]
    started = time.monotonic()
    with pytest.raises(tasklab.SerializationError, match="nested too deeply") as info:
        shell.user_ns["count"].delay(nested)
    assert "argument 'values'" in str(info.value) and "flatter" in str(info.value)
    assert time.monotonic() - started < 10
    assert nothing_queued(lab)
    with pytest.raises(tasklab.SerializationError, match="nested too deeply"):
        shell.user_ns["count"].apply_async(kwargs={"values": nested}, countdown=5)
    assert nothing_queued(lab)


# -- 8. killing a worker of the pool -----------------------------------------------------------------------


def test_pool_kill_takes_a_worker_process_or_its_name(lab):
    pool = lab.workers(1)
    first = pool.processes[0]
    pool.kill(first)
    wait_for(lambda: not pid_alive(first.pid), 10, "the killed worker to exit")
    wait_for(lambda: len(pool) == 1 and pool.processes[0] is not first, 10, "the worker to be replaced")
    with pytest.raises(tasklab.WorkerError, match="replaced or stopped"):
        pool.kill(first)
    with pytest.raises(tasklab.WorkerError, match="or its name, not int"):
        pool.kill(0)  # type: ignore[arg-type]
    second = pool.processes[0]
    pool.kill(second.name)
    wait_for(lambda: not pid_alive(second.pid), 10, "the worker killed by name to exit")
