"""How long each fault takes to settle: real processes killed and frozen, real jobs stranded.

    python benchmarks/faults.py            # about 40 s on a 2-core machine; --rounds N repeats each fault

It starts one embedded Redis (a temporary data directory) with two local workers, injects each fault
against a running task, and times how long until the task's outcome is settled: the moment ``get()``
returns or raises, from the moment of the fault. The bound is the README's ("When something fails").
A cut network link is measured by ``tests/test_partition.py`` (it needs root and a namespace); a
Redis at a URL that came back empty, by ``tests/test_liveness.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rq.job import Job
from rq.scheduler import RQScheduler

import tasklab
from tasklab import defaults
from tasklab.code.serialization import Serializer
from tasklab.engine import keys, leases
from tasklab.local.server import find_redis_server


def gated(gate):
    """Waits until the benchmark opens its gate."""
    import time

    from rq import get_current_job

    connection = get_current_job().connection
    while not connection.get(gate):
        time.sleep(0.01)
    return "done"


def ping():
    return "pong"


def slow(seconds):
    """Works for ``seconds`` without touching Redis."""
    import time

    time.sleep(seconds)
    return "done"


class Requeued(tasklab.Task):
    acks_late = True
    max_retries = 3

    def run(self, gate):
        import time

        from rq import get_current_job

        if self.request.retries == 0:
            connection = get_current_job().connection
            while not connection.get(gate):
                time.sleep(0.01)
        return "done"


def wait(predicate: Callable[[], object], timeout: float = 15.0) -> object:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError("the fault was not set up in time")
        time.sleep(0.005)
    return value


def started_on(lab: tasklab.Lab, result: tasklab.AsyncResult) -> int:
    """The pid of the local worker running ``result``'s job, once it runs."""
    wait(lambda: result.state == "STARTED")
    name = Job.fetch(result.id, connection=lab.connection, serializer=Serializer).worker_name
    return next(w.pid for w in lab.pool.processes if w.name == name)


def settle_time(result: tasklab.AsyncResult, fault_at: float) -> float:
    with contextlib.suppress(tasklab.WorkerLostError):  # settled as lost: that is the outcome timed
        result.get(timeout=60)
    return time.monotonic() - fault_at


def killed(lab: tasklab.Lab, tasks: dict, n: int) -> float:
    result = tasks["gated"].delay(f"gate-k{n}")
    pid = started_on(lab, result)
    os.kill(pid, signal.SIGKILL)
    return settle_time(result, time.monotonic())


def frozen(lab: tasklab.Lab, tasks: dict, n: int, acks_late: bool = False) -> float:
    gate = f"gate-f{n}{acks_late}"
    result = (tasks["Requeued"] if acks_late else tasks["gated"]).delay(gate)
    pid = started_on(lab, result)
    os.kill(pid, signal.SIGSTOP)
    try:
        return settle_time(result, time.monotonic())
    finally:
        os.kill(pid, signal.SIGCONT)
        lab.connection.set(gate, 1)


def claimed_by_a_lost_worker(lab: tasklab.Lab, tasks: dict, n: int) -> float:
    lab.workers(0)
    result = tasks["ping"].delay()
    lab.connection.lmove(lab.queue().key, keys.claimed_key(f"lost.{n}"), "LEFT", "RIGHT")
    lab.connection.zadd(leases.LEASES, {f"lost.{n}": 0})
    fault_at = time.monotonic()
    lab.workers(2)
    return settle_time(result, fault_at)


def stranded(lab: tasklab.Lab, tasks: dict, n: int) -> float:
    lab.workers(0)
    result = tasks["ping"].delay()
    queue = lab.queue()
    lab.connection.lmove(queue.key, queue.intermediate_queue_key, "LEFT", "RIGHT")
    fault_at = time.monotonic()
    lab.workers(2)
    return settle_time(result, fault_at)


def scheduler_holder_killed(lab: tasklab.Lab, tasks: dict, n: int) -> float:
    name = wait(lambda: lab.connection.get(RQScheduler.get_locking_key("default")))
    pid = int(lab.connection.hget(RQScheduler.fetch(name.decode(), lab.connection).key, "pid"))
    os.kill(pid, signal.SIGKILL)
    fault_at = time.monotonic()
    tasks["ping"].apply_async(countdown=1).get(timeout=30)
    return time.monotonic() - fault_at - 1  # beyond its countdown


def redis_killed(lab: tasklab.Lab, tasks: dict, n: int) -> float:
    """Kill -9 the embedded Redis while a task runs; its pool's supervisor (or the lab's next use)
    starts it again from its append-only file. Timed from the kill to the in-flight task's outcome,
    recorded by its worker (which rode the outage out) or settled as lost."""
    result = tasks["slow"].delay(0.5)
    started_on(lab, result)
    os.kill(int(lab.connection.info("server")["process_id"]), signal.SIGKILL)
    return settle_time(result, time.monotonic())


def external_redis_down(lab: tasklab.Lab, tasks: dict, n: int, outage: float) -> float:
    """A Redis at a URL (its own redis-server, append-only file on) killed while two tasks run,
    and started again ``outage`` seconds later. Timed from its return to both outcomes."""
    with tempfile.TemporaryDirectory(prefix="tasklab-faults-url-") as directory:
        socket_path = Path(directory) / "redis.sock"

        def start() -> subprocess.Popen:
            server = subprocess.Popen(
                [find_redis_server(), "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700",
                 "--dir", directory, "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            wait(socket_path.exists)
            return server

        server = start()
        other: tasklab.Lab | None = None
        try:
            # A Redis the lab did not start: it and its workers sign with the key of this process's lab.
            assert lab.secret is not None
            other = tasklab.Lab(f"unix://{socket_path}", data_dir=directory, namespace="faults-url",
                                secret=lab.secret.decode())  # fmt: skip
            other.workers(2)
            slow_there = other.task(slow)
            results = [slow_there.delay(0.5) for _ in range(2)]
            wait(lambda: all(r.state == "STARTED" for r in results))
            server.kill()
            server.wait()
            time.sleep(outage)  # the outage's length
            socket_path.unlink(missing_ok=True)
            server = start()
            back = time.monotonic()
            for result in results:
                with contextlib.suppress(tasklab.WorkerLostError):
                    result.get(timeout=60)
            return time.monotonic() - back
        finally:
            if other is not None:
                other.shutdown()
            server.kill()
            server.wait()


FAULTS: list[tuple[str, Callable[..., float], str]] = [
    ("worker process killed (kill -9) mid-task", killed, "~0.2 s"),
    ("worker frozen (SIGSTOP) mid-task", frozen, f"{defaults.LEASE_TTL:g} s + ~1 s"),
    ("worker frozen, acks_late: runs again elsewhere", lambda *a: frozen(*a, acks_late=True), "the same"),
    ("job claimed by a worker whose lease had run out", claimed_by_a_lost_worker, "the same"),
    ("job stranded in RQ's intermediate list", stranded, f"{defaults.STRAND_GRACE:g} s + ~1 s"),
    ("scheduler lock holder killed: a 1 s countdown's delay", scheduler_holder_killed, "~2 s"),
    ("embedded Redis killed (kill -9) mid-task; from the kill", redis_killed, "~1 s"),
    ("Redis at a URL killed, back after 1 s; from its return", lambda *a: external_redis_down(*a, 1.0), "~1 s"),
    (
        f"Redis at a URL killed, back after {defaults.LEASE_TTL + 1:g} s (past the lease)",
        lambda *a: external_redis_down(*a, defaults.LEASE_TTL + 1),
        "the same",
    ),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="times each fault is injected (default 3)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tasklab-faults-") as data_dir:
        lab = tasklab.connect(data_dir=data_dir, namespace="faults", autostart_workers=False)
        tasks = {name: lab.task(fn) for name, fn in (("gated", gated), ("ping", ping), ("slow", slow))}
        tasks["Requeued"] = Requeued  # the class: the current lab
        print(f"tasklab {tasklab.__version__}, lease TTL {defaults.LEASE_TTL:g} s, {os.cpu_count()} CPUs", flush=True)
        print(f"{'fault':<56} {'settled after (s), each round':<34} bound")
        for label, inject, bound in FAULTS:
            times = []
            for n in range(args.rounds):
                lab.workers(2)
                times.append(inject(lab, tasks, n))
            shown = " ".join(f"{t:5.2f}" for t in times)
            print(f"{label:<56} {shown:<26} max {max(times):4.2f}  {bound}", flush=True)
            print(f"  median {statistics.median(times):.2f} s", file=sys.stderr)
        lab.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
