"""How long each fault takes to settle: real processes killed and frozen, real jobs stranded.

    python benchmarks/faults.py            # about 40 s on a 2-core machine; --rounds N repeats each fault

It starts one embedded Redis (a temporary data directory) with two local workers, injects each fault
against a running task, and times how long until the task's outcome is settled: the moment ``get()``
returns or raises, from the moment of the fault. The bound is the README's ("When something fails").
A cut network link is measured by ``tests/test_partition.py`` (it needs root and a namespace); a
Redis at a URL killed and restarted, with its data or empty, by ``tests/test_liveness.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from rq.job import Job
from rq.scheduler import RQScheduler

import tasklab
from tasklab import defaults
from tasklab.code.serialization import Serializer
from tasklab.engine import keys, leases


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


def redis_killed(lab: tasklab.Lab, tasks: dict, n: int, outage: float = 0.0) -> float:
    """Kill -9 the embedded Redis while a task runs; after ``outage`` seconds, the next use starts it
    again from its append-only file. Timed from then: the in-flight task's outcome, recorded by its
    worker (which rode the outage out) or settled as lost (its lease ran out first)."""
    result = tasks["slow"].delay(0.5)
    started_on(lab, result)
    os.kill(int(lab.connection.info("server")["process_id"]), signal.SIGKILL)
    time.sleep(outage)  # the outage's length
    lab.status()  # the next use, which finds the server dead
    return settle_time(result, time.monotonic())


FAULTS: list[tuple[str, Callable[..., float], str]] = [
    ("worker process killed (kill -9) mid-task", killed, "~0.2 s"),
    ("worker frozen (SIGSTOP) mid-task", frozen, f"{defaults.LEASE_TTL:g} s + ~1 s"),
    ("worker frozen, acks_late: runs again elsewhere", lambda *a: frozen(*a, acks_late=True), "the same"),
    ("job claimed by a worker whose lease had run out", claimed_by_a_lost_worker, "the same"),
    ("job stranded in RQ's intermediate list", stranded, f"{defaults.STRAND_GRACE:g} s + ~1 s"),
    ("scheduler lock holder killed: a 1 s countdown's delay", scheduler_holder_killed, "~2 s"),
    ("embedded Redis killed mid-task; from its restart", redis_killed, f"{defaults.LEASE_TTL:g} s + ~1 s"),
    (
        f"Redis down {defaults.LEASE_TTL + 1:g} s (past the lease); from its restart",
        lambda *a: redis_killed(*a, outage=defaults.LEASE_TTL + 1),
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
