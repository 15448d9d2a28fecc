"""A worker host cut off from Redis: a network namespace of the test's own, its link taken down.

The test makes a "worker host" (a network namespace joined to this one by a veth pair), runs a
redis-server of its own on this side's address, and ``tasklab worker`` inside the namespace.
Traffic stays between the two ends of that pair. It needs root (CI runs as root).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from rq.job import Job
from rq.results import Result

import tasklab
from tasklab import defaults
from tasklab.code.serialization import Serializer
from tasklab.local.server import find_redis_server

from .conftest import GATED, task_cell, wait_for

pytestmark = pytest.mark.slow


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@dataclass
class Host:
    """A worker host: a network namespace, the link to it, and Redis on this side of the link."""

    namespace: str
    link: str
    url: str

    def cut(self) -> None:
        _ip("link", "set", self.link, "down")

    def heal(self) -> None:
        _ip("link", "set", self.link, "up")


@pytest.fixture
def host(tmp_path) -> Iterator[Host]:
    if os.geteuid() != 0:
        pytest.skip("making a network namespace needs root (CI runs as root)")
    tag = f"{os.getpid() % 10000}"
    namespace, link, peer = f"tlhost{tag}", f"tlh{tag}", f"tlw{tag}"
    octet = os.getpid() % 250 + 1
    here, there = f"10.233.{octet}.1", f"10.233.{octet}.2"
    try:
        _ip("netns", "add", namespace)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"network namespaces are not permitted here: {exc.stderr.strip()}")
    redis_server = None
    try:
        _ip("link", "add", link, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", namespace)
        _ip("addr", "add", f"{here}/30", "dev", link)
        _ip("link", "set", link, "up")
        _ip("-n", namespace, "addr", "add", f"{there}/30", "dev", peer)
        _ip("-n", namespace, "link", "set", peer, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        port = 20000 + octet
        redis_server = subprocess.Popen(
            [find_redis_server(), "--bind", here, "--port", str(port), "--protected-mode", "no",
             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://{here}:{port}/0"
        wait_for(lambda: _answers(url), 10, "the host's Redis")
        yield Host(namespace, link, url)
    finally:
        if redis_server is not None:
            redis_server.kill()
            redis_server.wait()
        subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture
def worker_on(tmp_path) -> Iterator:
    """Start ``tasklab worker`` (one process) inside a host's namespace; killed at the end."""
    started: list[subprocess.Popen] = []

    def start(host: Host) -> subprocess.Popen:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", host.namespace, sys.executable, "-m", "tasklab", "worker", "--url", host.url,
             "--processes", "1", "--log-dir", str(tmp_path / "host-logs")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        started.append(proc)
        return proc

    yield start
    for proc in started:  # its workers die with it (their parent-death signal)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


@pytest.fixture
def remote_lab(host: Host, shell) -> Iterator[tasklab.Lab]:
    lab = tasklab.connect(host.url, autostart_workers=False)
    lab.connection.flushdb()
    yield lab
    lab.shutdown()


def run_on_the_host(lab, worker_on, host, shell, task_name: str):
    """Submit ``task_name`` with a worker running only on the host; it starts there."""
    worker_on(host)
    wait_for(lambda: len(lab.status().workers) == 1, 30, "the host's worker")
    task_cell(shell, GATED)
    result = shell.user_ns[task_name].delay(f"gate-{task_name}")
    wait_for(lambda: result.state == "STARTED", 10, "the task to start on the host")
    lab.workers(1)  # now a worker here too, which settles leases and takes what is requeued
    return result


def finals(lab, job_id: str) -> list[str]:
    job = Job.fetch(job_id, connection=lab.connection, serializer=Serializer)
    return [
        r.type.name
        for r in Result.all(job, serializer=Serializer)
        if r.type.name in ("SUCCESSFUL", "FAILED", "STOPPED")
    ]


def test_a_host_cut_off_from_redis_loses_its_job_within_the_lease_and_its_late_result_is_fenced(
    host, worker_on, remote_lab, shell
):
    lab = remote_lab
    result = run_on_the_host(lab, worker_on, host, shell, "gated")
    host.cut()
    cut = time.monotonic()
    try:
        with pytest.raises(tasklab.WorkerLostError, match="lease"):
            result.get(timeout=defaults.LEASE_TTL + 10)
        assert time.monotonic() - cut <= defaults.LEASE_TTL + 2
    finally:
        lab.connection.set("gate-gated", 1)
        host.heal()
    wait_for(lambda: "DUPLICATE" in set(lab.history(name="gated")["state"]), 30, "the host's late result")
    assert finals(lab, result.id) == ["FAILED"], "the first outcome stands"


def test_a_cut_off_host_s_acks_late_job_runs_again_here_to_one_outcome(host, worker_on, remote_lab, shell):
    lab = remote_lab
    result = run_on_the_host(lab, worker_on, host, shell, "Requeued")
    host.cut()
    cut = time.monotonic()
    try:
        assert result.get(timeout=defaults.LEASE_TTL + 10) == "requeued attempt"
        assert time.monotonic() - cut <= defaults.LEASE_TTL + 2
    finally:
        lab.connection.set("gate-Requeued", 1)
        host.heal()
    wait_for(lambda: "DUPLICATE" in set(lab.history(name="Requeued")["state"]), 30, "the host's late result")
    assert finals(lab, result.id) == ["SUCCESSFUL"], "one final outcome"
