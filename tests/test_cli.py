"""Each ``tasklab`` command, run as a real subprocess."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import redis
from rq import Queue
from rq.worker import Worker as RQWorker

from .conftest import processes_mentioning, wait_for

TASKLAB = [sys.executable, "-m", "tasklab"]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TASKLAB, *args], capture_output=True, text=True, timeout=timeout)


def test_console_script_is_installed():
    exe = shutil.which("tasklab")
    assert exe, "pip install -e . should put a `tasklab` command on PATH"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for command in ("worker", "server", "info", "demo"):
        assert command in out.stdout


def test_server_runs_in_the_foreground_and_stops_on_ctrl_c(tmp_path):
    proc = subprocess.Popen(
        [*TASKLAB, "server", "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("unix://")
        client = redis.Redis.from_url(url)
        assert client.ping()
        again = run("server", "--data-dir", str(tmp_path / "data"))
        assert again.returncode == 2 and "already running" in again.stderr
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        socket_path = url.removeprefix("unix://")
        assert not __import__("os").path.exists(socket_path)
    finally:
        proc.kill()


def test_worker_command_serves_a_redis_and_stops_cleanly(server, tmp_path):
    connection = redis.Redis.from_url(server.url)
    connection.flushdb()
    proc = subprocess.Popen(
        [*TASKLAB, "worker", "--url", server.url, "--processes", "2", "--queues", "cli", "--allow-rq-jobs",
         "--log-dir", str(tmp_path / "logs"), "--log-level", "DEBUG"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert "2 worker(s)" in proc.stdout.readline()
        assert len(RQWorker.all(connection=connection)) == 2
        job = Queue("cli", connection=connection).enqueue("os.getpid")
        assert job.latest_result(timeout=10).return_value in {w.pid for w in RQWorker.all(connection=connection)}

        def logged_job_ok() -> bool:
            logs = "".join(path.read_text() for path in (tmp_path / "logs").glob("worker-*.log"))
            return job.id in logs and "Job OK" in logs

        wait_for(logged_job_ok, 5, "the per-job DEBUG lines that --log-level DEBUG asks for")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        wait_for(lambda: not RQWorker.all(connection=connection), 5, "the workers to unregister")
    finally:
        proc.kill()


def test_worker_command_with_unreachable_url_says_so():
    out = run("worker", "--url", "redis://127.0.0.1:1/0", "--processes", "1")
    assert out.returncode == 2
    assert "Cannot reach Redis at redis://127.0.0.1:1/0" in out.stderr


def test_info_prints_version_queues_and_workers(lab):
    lab.workers(1)
    lab.queue("reports").enqueue("os.getpid")
    out = run("info", "--url", lab.url)
    assert out.returncode == 0, out.stderr
    assert "Redis 6" in out.stdout or "Redis 7" in out.stdout
    assert "reports" in out.stdout
    assert lab.pool.names[0] in out.stdout


def test_info_without_a_server_explains_what_to_do(tmp_path):
    out = run("info", "--data-dir", str(tmp_path / "nothing"))
    assert out.returncode == 1
    assert "tasklab server" in out.stderr and "--url" in out.stderr


def test_demo_runs_tasks_and_leaves_nothing_behind(tmp_path):
    out = run("demo", "--data-dir", str(tmp_path / "data"), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "square(0..7) -> [0, 1, 4, 9, 16, 25, 36, 49]" in out.stdout
    assert "flaky -> 'third time lucky' after 2 retries" in out.stdout
    assert out.stdout.count("SUCCESS") == 9 and out.stdout.count("RETRY") == 2
    assert "workers: 2 ready" in out.stdout
    data_dir = str(tmp_path / "data")
    wait_for(lambda: not processes_mentioning(data_dir), 5, "the demo's server and workers to exit")
