"""Peers in one run: tasklab against Huey, Celery, RQ and a plain-Redis floor, on one Redis (issue 14).

Every system runs the same no-op (``peer_tasks.noop``, and for tasklab its twin ``tasklab_noop``, a tasklab
task) on the same redis-server, started here on a free TCP port with no persistence, with worker processes
started fresh for each configuration:

* tasklab: ``tasklab worker --processes N``, signed with a fresh key;
* Huey: ``RedisHuey``, ``huey_consumer -k process -w N``;
* Celery: Redis broker and result backend, N ``celery worker --pool solo`` processes;
* RQ: N ``rq worker --worker-class rq.SimpleWorker`` processes;
* rq-lean: RQ's jobs, enqueued as for RQ, run by N processes of the least a worker can do that keeps RQ's
  records, one script per job (``peer_tasks.rq_lean_worker``): the ceiling of RQ's data model, not a product;
* floor: N processes of a minimal ``BRPOP``/``LPUSH`` loop on plain Redis (``peer_tasks.floor_worker``).

With 1 worker it measures round trips (p50, p95) and steady jobs/s; with 2 workers, steady jobs/s, the
Redis commands per job of that steady run, drain jobs/s, and the CPU each drained job cost the worker
processes and redis-server (µs). ``--rounds`` rounds, the systems' order
rotated each round; the table holds the medians. A missed target is printed, not an error: this is a
measurement, not a test. See benchmarks/README.md, "Peers in one run".

    python benchmarks/peers.py [--jobs 2000] [--rounds 3] [--samples 200] [--systems tasklab,huey,celery,rq,floor]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import peer_tasks
import redis
import rq
from rq import Queue
from rq.results import Result

import tasklab
from tasklab import defaults
from tasklab.core.signing import new_key
from tasklab.local.server import find_redis_server

HERE = Path(__file__).resolve().parent
SYSTEMS = ("tasklab", "huey", "celery", "rq", "rq-lean", "floor")
RQ_QUEUE = "peers-rq"
#: Jobs per pipelined submit, where a system has one (tasklab's ``map_async`` batches by itself).
BATCH = 1000
WARMUP_JOBS = 100
WARMUP_ROUND_TRIPS = 20
ROUND_TRIP_TIMEOUT = 10  # seconds; RQ's latest_result takes whole seconds
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
#: Longest blocking read: redis-py's clients time reads out after a few seconds.
MAX_BLOCK_MS = 1000
#: How often the benchmark's own wait looks at a Huey job's result: with its defaults (no ``notify_result``),
#: Huey has no blocking way to wait.
WAIT_POLL_S = 0.005
#: Huey's own blocking get() sleeps 50 ms between its first polls, then longer: the round trips poll
#: it with a short sleep instead (get(backoff=1, max_delay=...)), so that no interval is measured.
HUEY_ROUND_TRIP_POLL_S = 0.0002

#: Issue 14's targets for tasklab.
TARGET_STEADY_VS_HUEY = 1.2
TARGET_DRAIN_VS_HUEY = 1.5
TARGET_SCALING = 1.6
TARGET_COMMANDS = 15.0

STEADY_1, STEADY_2, DRAIN_2, P50, P95, COMMANDS = "steady 1", "steady 2", "drain 2", "p50 ms", "p95 ms", "cmds/job"
#: CPU per job during the drain, in µs: the workers' processes (with their children) and redis-server.
WORKER_CPU, REDIS_CPU = "worker us", "redis us"
MEASURES = (STEADY_1, STEADY_2, DRAIN_2, P50, P95, COMMANDS, WORKER_CPU, REDIS_CPU)
THROUGHPUTS = (STEADY_1, STEADY_2, DRAIN_2)


class Peer(Protocol):
    """One system: its worker commands, and how the benchmark submits, waits and makes a round trip.

    ``wait_one`` and ``pending`` are the benchmark's own waiting, made to cost almost nothing; they
    count the commands they send in ``wait_commands``, which the commands-per-job figure leaves out."""

    label: str
    env: dict[str, str]  # added to the workers' environment
    wait_commands: int

    def worker_commands(self, n: int) -> list[list[str]]: ...
    def submit(self, jobs: int) -> list[str]: ...
    def wait_one(self, job_id: str, deadline: float) -> None: ...
    def pending(self, job_ids: list[str]) -> list[str]: ...
    def round_trip(self) -> None: ...
    def close(self) -> None: ...


def remaining_ms(deadline: float, what: str) -> int:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"{what} gave no result in time")
    return max(1, min(MAX_BLOCK_MS, int(left * 1000)))


class ResultStreamWaits:
    """Waiting on RQ's result streams (``rq:results:<id>``), which tasklab's jobs write too."""

    label: str
    connection: redis.Redis
    wait_commands = 0

    def wait_one(self, job_id: str, deadline: float) -> None:
        key = Result.get_key(job_id)
        while True:
            self.wait_commands += 1
            if self.connection.xread({key: "0-0"}, count=1, block=remaining_ms(deadline, f"{self.label} job {job_id}")):
                return

    def pending(self, job_ids: list[str]) -> list[str]:
        self.wait_commands += 1
        done = set()
        for stream, entries in self.connection.xread({Result.get_key(i): "0-0" for i in job_ids}, count=1):
            job_id = stream.decode().removeprefix(Result.get_key(""))
            if int(entries[0][1][b"type"]) != Result.Type.SUCCESSFUL.value:
                raise RuntimeError(f"{self.label}: job {job_id} did not succeed")
            done.add(job_id)
        return [i for i in job_ids if i not in done]


class TaskLabPeer(ResultStreamWaits):
    """tasklab as a user drives it: ``task.map_async`` (pipelined), ``delay().get()`` (a blocking ``XREAD``)."""

    label = "tasklab"

    def __init__(self, url: str, connection: redis.Redis, work_dir: Path):
        self.url, self.connection, self.log_dir = url, connection, work_dir / "tasklab-logs"
        # Its workers run with benchmarks/ on their path (see measure): they import peer_tasks, as every
        # peer's do, rather than take it as source stored in Redis, which each configuration flushes.
        os.environ[defaults.IMPORTABLE_ENV] = "peer_tasks"
        key = new_key()
        self.env = {defaults.SECRET_ENV: key}
        self.lab = tasklab.connect(url, secret=key, autostart_workers=False, data_dir=work_dir / "tasklab")
        self.task = peer_tasks.tasklab_noop  # submits to the current lab, this one

    def worker_commands(self, n: int) -> list[list[str]]:
        return [[sys.executable, "-m", "tasklab", "worker", "--url", self.url, "--queues", peer_tasks.TASKLAB_QUEUE,
                 "--processes", str(n), "--log-dir", str(self.log_dir)]]  # fmt: skip

    def submit(self, jobs: int) -> list[str]:
        return [result.id for result in self.task.map_async(range(jobs))]

    def round_trip(self) -> None:
        self.task.delay().get(timeout=ROUND_TRIP_TIMEOUT)

    def close(self) -> None:
        self.lab.shutdown()


class RQPeer(ResultStreamWaits):
    """Plain RQ: ``enqueue_many`` in pipelines, ``latest_result(timeout=...)`` (a blocking ``XREAD``)."""

    label = "rq"

    def __init__(self, url: str, connection: redis.Redis, work_dir: Path):
        self.url, self.connection, self.env = url, connection, {}
        self.queue = Queue(RQ_QUEUE, connection=connection)

    def worker_commands(self, n: int) -> list[list[str]]:
        command = [sys.executable, "-m", "rq.cli", "worker", "--url", self.url, "--worker-class", "rq.SimpleWorker",
                   "--quiet", RQ_QUEUE]  # fmt: skip
        return [command] * n

    def submit(self, jobs: int) -> list[str]:
        ids: list[str] = []
        for start in range(0, jobs, BATCH):
            with self.connection.pipeline() as pipe:
                calls = [Queue.prepare_data(peer_tasks.noop, args=(i,)) for i in range(start, min(jobs, start + BATCH))]
                enqueued = self.queue.enqueue_many(calls, pipeline=pipe)
                pipe.execute()
            ids += [job.id for job in enqueued]
        return ids

    def round_trip(self) -> None:
        job = self.queue.enqueue(peer_tasks.noop)
        result = job.latest_result(timeout=ROUND_TRIP_TIMEOUT)
        if result is None or result.type != Result.Type.SUCCESSFUL:
            raise RuntimeError(f"rq: job {job.id} gave no successful result within {ROUND_TRIP_TIMEOUT} s")

    def close(self) -> None:
        pass


class RQLeanPeer(RQPeer):
    """RQ's jobs and records, served by ``peer_tasks.rq_lean_worker``: what RQ's data model allows, at most."""

    label = "rq-lean"

    def worker_commands(self, n: int) -> list[list[str]]:
        entry = "import sys, peer_tasks; peer_tasks.rq_lean_worker(sys.argv[1], sys.argv[2])"
        return [[sys.executable, "-c", entry, self.url, RQ_QUEUE]] * n


class HueyPeer:
    """Huey 3 (``RedisHuey``): one ``LPUSH`` per job (``task.map`` enqueues them one by one; Huey has no
    batch), results in one hash."""

    label = "huey"
    wait_commands = 0

    def __init__(self, url: str, connection: redis.Redis, work_dir: Path):
        from huey.utils import Error

        self.connection, self.env, self.error_type = connection, {}, Error
        self.huey, self.task = peer_tasks.make_huey(url)
        self.result_key = self.huey.storage.result_key

    def worker_commands(self, n: int) -> list[list[str]]:
        # -q: no log line per task, as for every system here.
        return [[sys.executable, "-m", "huey.bin.huey_consumer", "peer_tasks.huey_app", "-k", "process",
                 "-w", str(n), "-q"]]  # fmt: skip

    def submit(self, jobs: int) -> list[str]:
        return [result.id for result in self.task.map(range(jobs))]

    def wait_one(self, job_id: str, deadline: float) -> None:
        while True:
            self.wait_commands += 1
            if self.connection.hexists(self.result_key, job_id):
                return
            remaining_ms(deadline, f"huey job {job_id}")
            time.sleep(WAIT_POLL_S)

    def pending(self, job_ids: list[str]) -> list[str]:
        self.wait_commands += 1
        values = self.connection.hmget(self.result_key, job_ids)
        for job_id, value in zip(job_ids, values, strict=True):
            if value is not None and isinstance(self.huey.serializer.deserialize(value), self.error_type):
                raise RuntimeError(f"huey: job {job_id} did not succeed")
        return [job_id for job_id, value in zip(job_ids, values, strict=True) if value is None]

    def round_trip(self) -> None:
        self.task().get(blocking=True, timeout=ROUND_TRIP_TIMEOUT, backoff=1.0, max_delay=HUEY_ROUND_TRIP_POLL_S)

    def close(self) -> None:
        self.huey.storage.pool.disconnect()


class CeleryPeer:
    """Celery 5: Redis broker and result backend, one ``delay()`` per job (no batch submit), ``get()``
    waits on the backend's pub/sub channel (no polling)."""

    label = "celery"
    wait_commands = 0

    def __init__(self, url: str, connection: redis.Redis, work_dir: Path):
        self.connection, self.env = connection, {}
        self.app, self.task = peer_tasks.make_celery(url)
        self.backend = self.app.backend
        self.pubsub = connection.pubsub(ignore_subscribe_messages=True)

    def worker_commands(self, n: int) -> list[list[str]]:
        return [[sys.executable, "-m", "celery", "-A", "peer_tasks:celery_app", "worker", "--pool", "solo",
                 "-n", f"peers{i}@%h", "--loglevel", "WARNING"] for i in range(n)]  # fmt: skip

    def submit(self, jobs: int) -> list[str]:
        return [self.task.delay(i).id for i in range(jobs)]

    def wait_one(self, job_id: str, deadline: float) -> None:
        key = self.backend.get_key_for_task(job_id)
        channel = key if isinstance(key, bytes) else key.encode()
        self.pubsub.subscribe(key)  # the backend publishes each result on its key
        self.wait_commands += 3  # SUBSCRIBE, EXISTS, UNSUBSCRIBE
        try:
            if self.connection.exists(key):
                return
            while True:
                message = self.pubsub.get_message(timeout=remaining_ms(deadline, f"celery job {job_id}") / 1000)
                if message is not None and message["channel"] == channel:
                    return
        finally:
            self.pubsub.unsubscribe(key)
            while self.pubsub.get_message(timeout=0) is not None:
                pass

    def pending(self, job_ids: list[str]) -> list[str]:
        self.wait_commands += 1
        values = self.connection.mget([self.backend.get_key_for_task(i) for i in job_ids])
        left = []
        for job_id, value in zip(job_ids, values, strict=True):
            status = None if value is None else self.backend.decode_result(value)["status"]
            if status == "FAILURE":
                raise RuntimeError(f"celery: job {job_id} failed")
            if status != "SUCCESS":
                left.append(job_id)
        return left

    def round_trip(self) -> None:
        self.task.delay().get(timeout=ROUND_TRIP_TIMEOUT)

    def close(self) -> None:
        self.pubsub.close()
        self.app.close()


class FloorPeer:
    """The floor: a job is one pickled ``(id, args)`` on a plain Redis list; its worker ``BRPOP``s it and
    ``LPUSH``es the result onto a list of the job's own. Submit is one ``LPUSH`` of a whole batch."""

    label = "floor"
    wait_commands = 0

    def __init__(self, url: str, connection: redis.Redis, work_dir: Path):
        self.url, self.connection, self.env = url, connection, {}
        self.next_id = 0

    def worker_commands(self, n: int) -> list[list[str]]:
        entry = "import sys, peer_tasks; peer_tasks.floor_worker(sys.argv[1])"
        return [[sys.executable, "-c", entry, self.url]] * n

    def _new_ids(self, count: int) -> list[str]:
        self.next_id += count
        return [str(i) for i in range(self.next_id - count, self.next_id)]

    def submit(self, jobs: int) -> list[str]:
        ids = self._new_ids(jobs)
        for start in range(0, jobs, BATCH):
            batch = ids[start : start + BATCH]
            self.connection.lpush(peer_tasks.FLOOR_QUEUE, *(pickle.dumps((i, (int(i),))) for i in batch))
        return ids

    def wait_one(self, job_id: str, deadline: float) -> None:
        key = peer_tasks.FLOOR_RESULT + job_id
        while True:
            self.wait_commands += 1
            # Moves the result from the list's tail to its head: a blocking look that leaves it there.
            timeout = remaining_ms(deadline, f"floor job {job_id}") / 1000
            if self.connection.blmove(key, key, timeout, "RIGHT", "LEFT") is not None:
                return

    def pending(self, job_ids: list[str]) -> list[str]:
        with self.connection.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.exists(peer_tasks.FLOOR_RESULT + job_id)
            pipe.get(peer_tasks.FLOOR_FAILED)
            *found, failed = pipe.execute()
        self.wait_commands += len(job_ids) + 1
        if failed:
            raise RuntimeError(f"floor: {int(failed)} job(s) raised; see the floor workers' logs")
        return [job_id for job_id, exists in zip(job_ids, found, strict=True) if not exists]

    def round_trip(self) -> None:
        (job_id,) = self._new_ids(1)
        self.connection.lpush(peer_tasks.FLOOR_QUEUE, pickle.dumps((job_id, ())))
        if self.connection.brpop([peer_tasks.FLOOR_RESULT + job_id], timeout=ROUND_TRIP_TIMEOUT) is None:
            raise RuntimeError(f"floor: job {job_id} gave no result within {ROUND_TRIP_TIMEOUT} s")

    def close(self) -> None:
        pass


PEERS: dict[str, Callable[[str, redis.Redis, Path], Peer]] = {
    "tasklab": TaskLabPeer,
    "huey": HueyPeer,
    "celery": CeleryPeer,
    "rq": RQPeer,
    "rq-lean": RQLeanPeer,
    "floor": FloorPeer,
}


# -- processes ------------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """State, parent pid and start time of process ``pid`` (Linux's /proc), or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def process_tree(roots: list[int]) -> list[tuple[int, int]]:
    """(pid, start time) of ``roots`` and of all their descendants, wherever their sessions are:
    tasklab's pool starts its workers in sessions of their own."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := proc_stat(int(entry))) is not None:
            children.setdefault(stat[1], []).append(int(entry))
            starts[int(entry)] = stat[2]
    tree, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid in starts:
            tree.append((pid, starts[pid]))
            todo += children.get(pid, [])
    return tree


def is_running(pid: int, start: int) -> bool:
    """Whether ``pid`` is still the process that started at ``start``, and not a zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat[2] == start and stat[0] != "Z"


def signal_same(pid: int, start: int, sig: int) -> None:
    """Send ``sig`` to ``pid`` if it is still the process that started at ``start`` (never to a reused pid)."""
    if is_running(pid, start):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@dataclass
class WorkerGroup:
    """One configuration's worker processes, each command started in a session of its own (so that a
    Ctrl-C reaches the benchmark alone, which then stops them)."""

    label: str
    commands: list[list[str]]
    env: dict[str, str]
    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for i, command in enumerate(self.commands):
            with open(self.log_dir / f"{self.label}-{i}.log", "ab") as log:
                self.processes.append(subprocess.Popen(
                    command, cwd=self.log_dir, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                ))  # fmt: skip

    def check_alive(self) -> None:
        for i, process in enumerate(self.processes):
            if process.poll() is not None:
                # The logs are in a temporary directory, deleted at the end: their last lines go in the message.
                tail = (self.log_dir / f"{self.label}-{i}.log").read_text(errors="replace").splitlines()[-20:]
                raise RuntimeError(
                    f"{self.label} worker exited with {process.returncode}; its log ends:\n" + "\n".join(tail)
                )

    def pause(self) -> None:
        """SIGSTOP every process of the group, and return once all are stopped."""
        tree = process_tree([p.pid for p in self.processes])
        for pid, start in tree:
            signal_same(pid, start, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while any((stat := proc_stat(pid)) is not None and stat[0] not in "TtZ" for pid, _ in tree):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label} workers did not stop on SIGSTOP")
            time.sleep(0.001)

    def resume(self) -> None:
        for pid, start in process_tree([p.pid for p in self.processes]):
            signal_same(pid, start, signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM each command's process group (each system's own shutdown), then SIGKILL whatever is
        left, of the processes found before, after ``STOP_TIMEOUT`` or at a Ctrl-C meanwhile."""
        tree = process_tree([p.pid for p in self.processes])
        try:
            for process in self.processes:
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGTERM)
            for pid, start in tree:  # a paused process handles SIGTERM only once continued
                signal_same(pid, start, signal.SIGCONT)
            deadline = time.monotonic() + STOP_TIMEOUT
            while any(is_running(pid, start) for pid, start in tree) and time.monotonic() < deadline:
                for process in self.processes:
                    process.poll()  # reaps it
                time.sleep(0.02)
        finally:
            for pid, start in tree:
                signal_same(pid, start, signal.SIGKILL)
            for process in self.processes:
                process.wait()
            self.processes.clear()


class RedisServer:
    """A redis-server of the benchmark's own (tasklab's embedded binary) on a free TCP port of
    127.0.0.1, with no persistence, in a session of its own."""

    def __init__(self, work_dir: Path):
        self.binary = find_redis_server()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                   "--dir", str(work_dir), "--logfile", "redis.log"]  # fmt: skip
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        self.connection = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.connection.ping()
                return
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    log = work_dir / "redis.log"
                    raise RuntimeError(f"{self.binary} did not start on port {self.port}; see {log}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        self.connection.close()
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def commands_served(connection: redis.Redis) -> int:
    """Commands Redis has run so far: the sum of ``calls`` over ``INFO commandstats``."""
    return sum(stats["calls"] for stats in connection.info("commandstats").values())


# -- measurement ----------------------------------------------------------------------------


def wait_all(peer: Peer, job_ids: list[str], timeout: float) -> None:
    """Wait until every job has succeeded: block on (or, for Huey, poll) the newest pending job alone,
    then check every pending job in one command; again until none is left. A few commands in all."""
    deadline = time.monotonic() + timeout
    pending = job_ids
    while pending:
        peer.wait_one(pending[-1], deadline)
        pending = peer.pending(pending)


def timeout_for(jobs: int) -> float:
    return max(60.0, jobs / 10)


def wait_ready(connection: redis.Redis, group: WorkerGroup, workers: int) -> None:
    """Return once ``workers`` clients wait in a blocking pop, which is how each system's worker processes
    (and no other client of this Redis) wait for a job."""
    deadline = time.monotonic() + READY_TIMEOUT
    while sum("b" in client["flags"] for client in connection.client_list()) < workers:
        group.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{group.label}: {workers} worker(s) were not waiting for jobs after {READY_TIMEOUT:.0f} s"
            )
        time.sleep(0.02)


def steady(peer: Peer, jobs: int) -> float:
    """jobs/s: ``jobs`` jobs submitted while the workers run, from the first submit to the last result."""
    started = time.perf_counter()
    wait_all(peer, peer.submit(jobs), timeout_for(jobs))
    return jobs / (time.perf_counter() - started)


def drain(peer: Peer, group: WorkerGroup, jobs: int, connection: redis.Redis) -> dict[str, float]:
    """jobs/s: ``jobs`` jobs queued while the (warm) workers are paused with SIGSTOP, then timed from the
    first job's completion to the last one's, after SIGCONT. Also the CPU each job cost, from SIGCONT to the
    last result: the worker processes' (and their children's, from Linux's /proc) and redis-server's (its
    ``INFO cpu``, which includes the benchmark's own few commands of waiting)."""
    group.pause()
    try:
        ids = peer.submit(jobs)
    finally:
        tree = process_tree([p.pid for p in group.processes])
        workers_before, redis_before = cpu_seconds(tree), redis_cpu_seconds(connection)
        group.resume()
    deadline = time.monotonic() + timeout_for(jobs)
    peer.wait_one(ids[0], deadline)
    first = time.perf_counter()
    wait_all(peer, ids, timeout_for(jobs))
    rate = (jobs - 1) / (time.perf_counter() - first)
    workers_cpu, redis_cpu = cpu_seconds(tree) - workers_before, redis_cpu_seconds(connection) - redis_before
    return {DRAIN_2: rate, WORKER_CPU: workers_cpu / jobs * 1e6, REDIS_CPU: redis_cpu / jobs * 1e6}


def cpu_seconds(tree: list[tuple[int, int]]) -> float:
    """User and system CPU seconds used so far by the processes of ``tree`` (pid, start time) still running."""
    total = 0
    for pid, start in tree:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[19]) == start:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def redis_cpu_seconds(connection: redis.Redis) -> float:
    info = connection.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def round_trips(peer: Peer, samples: int) -> list[float]:
    """Milliseconds from submit to result read, one job at a time."""
    latencies = []
    for _ in range(samples):
        started = time.perf_counter()
        peer.round_trip()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def measure(
    peer: Peer, workers: int, server: RedisServer, args: argparse.Namespace, work_dir: Path
) -> dict[str, float]:
    """One configuration on a flushed Redis with fresh, warmed-up workers: with 1 worker, round trips and
    steady jobs/s; with 2, steady jobs/s, its Redis commands per job, and drain jobs/s."""
    connection = server.connection
    connection.flushall()
    python_path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, peer_tasks.URL_ENV: server.url, **peer.env}
    if defaults.SECRET_ENV not in peer.env:
        env.pop(defaults.SECRET_ENV, None)
    group = WorkerGroup(f"{peer.label}-{workers}", peer.worker_commands(workers), env, work_dir / "logs")
    try:
        group.start()
        wait_ready(connection, group, workers)
        wait_all(peer, peer.submit(WARMUP_JOBS), timeout_for(WARMUP_JOBS))
        round_trips(peer, WARMUP_ROUND_TRIPS)
        if workers == 1:
            latencies = round_trips(peer, args.samples)
            return {
                P50: statistics.median(latencies),
                P95: statistics.quantiles(latencies, n=20, method="inclusive")[18],
                STEADY_1: steady(peer, args.jobs),
            }
        before, own_before = commands_served(connection), peer.wait_commands
        rate = steady(peer, args.jobs)
        # The first INFO is counted in the second's figures; the benchmark's own waiting is left out.
        own = peer.wait_commands - own_before + 1
        commands = (commands_served(connection) - before - own) / args.jobs
        return {STEADY_2: rate, COMMANDS: commands, **drain(peer, group, args.jobs, connection)}
    finally:
        group.stop()


def run(args: argparse.Namespace, work_dir: Path) -> tuple[str, dict[str, dict[str, list[float]]]]:
    """Every system, ``args.rounds`` times, the order rotated each round; every process stopped at the end."""
    server = RedisServer(work_dir)
    peers: list[Peer] = []
    try:
        setup = describe_setup(server, args)
        print(setup, file=sys.stderr, flush=True)
        for name in args.systems:
            peers.append(PEERS[name](server.url, server.connection, work_dir))
        results: dict[str, dict[str, list[float]]] = {p.label: {m: [] for m in MEASURES} for p in peers}
        for round_no in range(args.rounds):
            shift = round_no % len(peers)
            for peer in peers[shift:] + peers[:shift]:
                for workers in (1, 2):
                    values = measure(peer, workers, server, args, work_dir)
                    for measure_name, value in values.items():
                        results[peer.label][measure_name].append(value)
                    shown = "  ".join(
                        f"{k} {v:.2f}" if k in (P50, P95, COMMANDS) else f"{k} {v:.0f}" for k, v in values.items()
                    )
                    print(
                        f"round {round_no + 1}: {peer.label:<8} {workers} worker(s): {shown}",
                        file=sys.stderr,
                        flush=True,
                    )
        return setup, results
    finally:
        for peer in peers:
            with contextlib.suppress(Exception):
                peer.close()
        server.stop()


# -- report ---------------------------------------------------------------------------------


def version_of(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def describe_setup(server: RedisServer, args: argparse.Namespace) -> str:
    info = server.connection.info("server")
    packages = ", ".join(f"{name} {version_of(name)}" for name in ("huey", "celery", "kombu", "redis"))
    return (
        f"Python {platform.python_version()}, tasklab {tasklab.__version__}, rq {rq.VERSION}, {packages} (redis-py); "
        f"{os.cpu_count()} CPUs\n"
        f"redis-server {info['redis_version']} ({server.binary}) on 127.0.0.1:{server.port}, no persistence\n"
        f"{args.jobs} jobs per throughput run, {args.samples} round trips, medians of {args.rounds} round(s); "
        f"warm-up: {WARMUP_JOBS} jobs and {WARMUP_ROUND_TRIPS} round trips per configuration"
    )


def medians(results: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    return {label: {m: statistics.median(v) for m, v in values.items() if v} for label, values in results.items()}


def format_table(table: dict[str, dict[str, float]]) -> str:
    header = f"{'system':<9}" + "".join(f"{m:>10}" for m in MEASURES)
    units = {**dict.fromkeys(THROUGHPUTS, "jobs/s"), WORKER_CPU: "cpu/job", REDIS_CPU: "cpu/job"}
    lines = [header, f"{'':<9}" + "".join(f"{units.get(m, ''):>10}" for m in MEASURES).rstrip(), "-" * len(header)]
    for label, row in table.items():
        whole = (*THROUGHPUTS, WORKER_CPU, REDIS_CPU)
        cells = [f"{row[m]:>10.0f}" if m in whole else f"{row[m]:>10.2f}" for m in MEASURES]
        lines.append(f"{label:<9}" + "".join(cells))
    return "\n".join(lines)


def format_ratios(table: dict[str, dict[str, float]]) -> Iterator[str]:
    """tasklab's figures divided by Huey's and by RQ's: above 1 is faster for jobs/s, below 1 is faster
    (or fewer commands) for the rest."""
    ours = table.get("tasklab")
    if ours is None:
        return
    for peer in ("huey", "rq"):
        theirs = table.get(peer)
        if theirs is None:
            continue
        ratios = "  ".join(f"{m} {ours[m] / theirs[m]:.2f}x" for m in MEASURES)
        yield f"tasklab / {peer:<5} {ratios}"


def format_targets(table: dict[str, dict[str, float]]) -> Iterator[str]:
    ours, huey = table.get("tasklab"), table.get("huey")
    if ours is None:
        yield "issue 14's targets: not checked (tasklab was not measured)"
        return
    yield "issue 14's targets:"
    for what, measure_name, target in (
        ("steady 2 workers", STEADY_2, TARGET_STEADY_VS_HUEY),
        ("drain 2 workers", DRAIN_2, TARGET_DRAIN_VS_HUEY),
    ):
        if huey is None:
            yield f"  {what} >= {target:g}x Huey's: not checked (huey was not measured)"
        else:
            ratio = ours[measure_name] / huey[measure_name]
            yield f"  {what} >= {target:g}x Huey's: {verdict(ratio >= target)} ({ratio:.2f}x)"
    scaling = ours[STEADY_2] / ours[STEADY_1]
    met = verdict(scaling >= TARGET_SCALING)
    yield f"  tasklab's scaling from 1 to 2 workers >= {TARGET_SCALING:g}x: {met} ({scaling:.2f}x)"
    if huey is None:
        yield "  p50 round trip <= Huey's: not checked (huey was not measured)"
    else:
        yield f"  p50 round trip <= Huey's: {verdict(ours[P50] <= huey[P50])} ({ours[P50]:.2f} vs {huey[P50]:.2f} ms)"
    commands = ours[COMMANDS]
    yield f"  Redis commands per job <= {TARGET_COMMANDS:g}: {verdict(commands <= TARGET_COMMANDS)} ({commands:.1f})"


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per steady and drain run (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the table shows their medians (default 3)")
    parser.add_argument("--samples", type=int, default=200, help="round trips per configuration (default 200)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}")
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown or not args.systems:
        parser.error(f"--systems: {', '.join(unknown) or 'none given'}; choose from {','.join(SYSTEMS)}")
    if len(set(args.systems)) != len(args.systems):
        parser.error("--systems: a system is named twice")
    if args.jobs < 2 or args.rounds < 1 or args.samples < 2:
        parser.error("--jobs and --samples must be at least 2, --rounds at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C, so that the finally blocks stop every process started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with tempfile.TemporaryDirectory(prefix="tasklab-peers-", ignore_cleanup_errors=True) as tmp:
        setup, results = run(args, Path(tmp))
    table = medians(results)
    print()
    print(setup)
    print()
    print(format_table(table))
    print()
    ratios = list(format_ratios(table))
    for line in (*ratios, *([""] if ratios else []), *format_targets(table)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
