"""No-op task throughput and round-trip latency: tasklab against plain RQ, on one Redis, in one run.

For each worker count it measures, one configuration at a time, on a flushed Redis:

* plain RQ ``rq.SimpleWorker`` processes (no fork per job),
* plain RQ ``rq.Worker`` processes (RQ's default: a fork per job),
* tasklab's own local workers (``lab.workers(n)``),

each warmed up first, then

* throughput: ``--jobs`` no-op jobs submitted in pipelined batches, jobs/s from the first submit
  to the last result read. Every configuration is waited for the same cheap way (see
  :func:`wait_for_results`); tasklab is also measured waiting with its own ``ResultSet.get``;
* latency: ``--latency-samples`` round trips, one job at a time, from submit to its result read.

It prints a table, tasklab's ratios to both RQ workers, and whether tasklab's targets are met.
A missed target is reported, not an error: this is a measurement, not a test. With ``--signing N``
it also measures tasklab signed and unsigned (``insecure=True``), each in a process of its own kept
running with its workers, on the same Redis: N bursts of jobs each, in turns, so that both see the
machine at about the same moment; and prints what signing costs.

    python benchmarks/throughput.py [--jobs 3000] [--fork-jobs 500] [--latency-samples 300] [--workers 1,2]
                                    [--signing 20]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import pickle
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import noop_tasks
import redis
import rq
from rq import Queue
from rq.results import Result
from rq_pool import RQWorkerPool

import tasklab
from tasklab import defaults
from tasklab.core.signing import JOB, RESULT, Keyring, new_key

#: Jobs enqueued per pipeline round trip by plain RQ (tasklab's own batch is the same).
BATCH = 1000
WARMUP_JOBS = 100
WARMUP_ROUND_TRIPS = 20
#: Seconds a single round trip may take before the benchmark gives up.
ROUND_TRIP_TIMEOUT = 10
#: Longest blocking read: redis-py's default client times reads out after 5 s.
MAX_BLOCK_MS = 1000
#: tasklab's targets, relative to plain RQ's SimpleWorker measured in the same run.
TARGET_THROUGHPUT_RATIO = 3.0
TARGET_P50_MS = 2.0
#: Keys a flush keeps: tasklab's shipped task code, which the lab uploads only once.
KEEP_PREFIXES = (b"tasklab:code:", b"tasklab:tasks:")

SIMPLE, FORK, TASKLAB = "rq SimpleWorker", "rq Worker (fork)", "tasklab"
UNSIGNED = "tasklab unsigned"  # insecure=True: nothing signed or checked, to show what signing costs


def noop(x: object = None) -> None:
    """tasklab's no-op: defined in ``__main__``, so tasklab ships it to its workers by source."""
    return None


class System(Protocol):
    """One way of running jobs: start and stop its workers, submit many, make one round trip."""

    label: str

    def start(self, n: int) -> None: ...
    def stop(self) -> None: ...
    def submit(self, jobs: int) -> list[str]: ...
    def round_trip(self) -> None: ...


class PlainRQ:
    """Plain RQ: an importable function, ``enqueue_many`` in pipelines, ``latest_result``."""

    def __init__(self, label: str, kind: str, url: str, connection: redis.Redis, log_dir: Path):
        self.label = label
        self.connection = connection
        self.queue = Queue(f"bench-rq-{kind}", connection=connection)
        self.pool = RQWorkerPool(url, self.queue.name, kind, log_dir)

    def start(self, n: int) -> None:
        self.pool.start(n, self.connection)

    def stop(self) -> None:
        self.pool.stop()

    def submit(self, jobs: int) -> list[str]:
        ids: list[str] = []
        for start in range(0, jobs, BATCH):
            batch = range(start, min(jobs, start + BATCH))
            with self.connection.pipeline() as pipe:
                enqueued = self.queue.enqueue_many(
                    [Queue.prepare_data(noop_tasks.noop, args=(i,)) for i in batch], pipeline=pipe
                )
                pipe.execute()
            ids.extend(job.id for job in enqueued)
        return ids

    def round_trip(self) -> None:
        job = self.queue.enqueue(noop_tasks.noop)
        result = job.latest_result(timeout=ROUND_TRIP_TIMEOUT)
        if result is None:
            raise RuntimeError(f"{self.label}: job {job.id} gave no result within {ROUND_TRIP_TIMEOUT} s")
        if result.type != Result.Type.SUCCESSFUL:
            raise RuntimeError(f"{self.label}: job {job.id} failed:\n{result.exc_string}")


class TaskLab:
    """tasklab as a user drives it: ``@lab.task``, ``map_async``, ``ResultSet.get``, ``delay().get()``."""

    label = TASKLAB

    def __init__(self, lab: tasklab.Lab, queue: str = "bench-tasklab"):
        self.lab = lab
        self.queue = queue
        self.task = lab.task(noop, queue=self.queue)

    def start(self, n: int) -> None:
        self.lab.workers(n, queues=[self.queue])

    def stop(self) -> None:
        self.lab.workers(0)

    def submit(self, jobs: int) -> list[str]:
        return [result.id for result in self.task.map_async(range(jobs))]

    def submit_and_get(self, jobs: int, timeout: float) -> None:
        self.task.map_async(range(jobs)).get(timeout=timeout)

    def round_trip(self) -> None:
        self.task.delay().get(timeout=ROUND_TRIP_TIMEOUT)


def wait_for_results(connection: redis.Redis, job_ids: list[str], timeout: float) -> None:
    """Block until every job has a successful result in its stream (``rq:results:<id>``).

    Jobs finish about in submit order, so this blocks on the newest pending job's stream
    alone and then reads the latest entry of every pending stream in one pipeline: a few
    round trips in all, so that waiting takes almost no CPU from the workers and Redis.
    """
    pending = list(job_ids)
    deadline = time.monotonic() + timeout
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{len(pending)} of {len(job_ids)} jobs gave no result within {timeout:.0f} s")
        block = max(1, min(MAX_BLOCK_MS, int(remaining * 1000)))
        if not connection.xread({Result.get_key(pending[-1]): "0-0"}, block=block):
            continue
        with connection.pipeline(transaction=False) as pipe:
            for job_id in pending:
                pipe.xrevrange(Result.get_key(job_id), "+", "-", count=1)
            latest = pipe.execute()
        for job_id, entries in zip(pending, latest, strict=True):
            if entries:
                check_successful(connection, job_id, *entries[0])
        pending = [job_id for job_id, entries in zip(pending, latest, strict=True) if not entries]


def check_successful(connection: redis.Redis, job_id: str, entry_id: bytes, payload: dict) -> None:
    if int(payload[b"type"]) != Result.Type.SUCCESSFUL.value:
        result = Result.restore(job_id, entry_id.decode(), payload, connection)
        raise RuntimeError(f"job {job_id} did not succeed ({result.type.name}):\n{result.exc_string}")


def flush_job_data(connection: redis.Redis) -> None:
    """Delete everything the previous configuration left (jobs, results, registries, queues),
    keeping only tasklab's shipped code, which the lab would not upload again."""
    doomed = [key for key in connection.scan_iter(count=1000) if not key.startswith(KEEP_PREFIXES)]
    for start in range(0, len(doomed), 1000):
        connection.unlink(*doomed[start : start + 1000])


@dataclass
class Measurement:
    label: str
    workers: int
    jobs: int
    seconds: float
    submit_seconds: float
    latencies_ms: list[float]
    get_seconds: float | None = None  # tasklab only: the same jobs waited for with ResultSet.get

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds

    @property
    def get_jobs_per_s(self) -> float | None:
        return None if self.get_seconds is None else self.jobs / self.get_seconds

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p95_ms(self) -> float:
        return statistics.quantiles(self.latencies_ms, n=20, method="inclusive")[18]


def timeout_for(jobs: int) -> float:
    return max(60.0, jobs / 10)


def measure_throughput(system: System, connection: redis.Redis, jobs: int) -> tuple[float, float]:
    """Seconds to submit ``jobs`` jobs and read all their results, and the part spent submitting."""
    started = time.perf_counter()
    ids = system.submit(jobs)
    submitted = time.perf_counter()
    wait_for_results(connection, ids, timeout_for(jobs))
    return time.perf_counter() - started, submitted - started


def measure_get_throughput(system: TaskLab, jobs: int) -> float:
    """Seconds to submit ``jobs`` jobs with ``map_async`` and wait for them with ``ResultSet.get``."""
    started = time.perf_counter()
    system.submit_and_get(jobs, timeout_for(jobs))
    return time.perf_counter() - started


def measure_latency(system: System, samples: int) -> list[float]:
    """Milliseconds from submit to result of ``samples`` jobs, each submitted after the last one's result."""
    latencies = []
    for _ in range(samples):
        started = time.perf_counter()
        system.round_trip()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def measure(
    system: System,
    connection: redis.Redis,
    workers: int,
    jobs: int,
    samples: int,
    flush: Callable[[], None],
) -> Measurement:
    """Warm up ``system`` with ``workers`` fresh workers on a flushed Redis, then measure it."""
    flush()
    system.start(workers)
    try:
        wait_for_results(connection, system.submit(WARMUP_JOBS), timeout_for(WARMUP_JOBS))
        for _ in range(WARMUP_ROUND_TRIPS):
            system.round_trip()
        seconds, submit_seconds = measure_throughput(system, connection, jobs)
        get_seconds = measure_get_throughput(system, jobs) if isinstance(system, TaskLab) else None
        latencies = measure_latency(system, samples)
    finally:
        system.stop()
    return Measurement(system.label, workers, jobs, seconds, submit_seconds, latencies, get_seconds)


# -- report ---------------------------------------------------------------------------------


def describe_setup(connection: redis.Redis, args: argparse.Namespace) -> str:
    server = connection.info("server")
    return (
        f"Python {platform.python_version()}, rq {rq.VERSION}, tasklab {tasklab.__version__}, "
        f"redis-server {server['redis_version']} (embedded, unix socket), {os.cpu_count()} CPUs\n"
        f"throughput: {args.jobs} jobs ({args.fork_jobs} for the forking rq Worker); "
        f"latency: {args.latency_samples} round trips; "
        f"warm-up: {WARMUP_JOBS} jobs and {WARMUP_ROUND_TRIPS} round trips"
    )


def format_table(results: list[Measurement]) -> str:
    header = (
        f"{'workers':>7}  {'configuration':<17} {'jobs':>5} {'jobs/s':>7} {'per worker':>10} "
        f"{'with get()':>10} {'submit ms':>9} {'p50 ms':>7} {'p95 ms':>7}"
    )
    lines = [header, "-" * len(header)]
    for m in results:
        with_get = "-" if m.get_jobs_per_s is None else f"{m.get_jobs_per_s:.0f}"
        lines.append(
            f"{m.workers:>7}  {m.label:<17} {m.jobs:>5} {m.jobs_per_s:>7.0f} {m.jobs_per_s / m.workers:>10.0f} "
            f"{with_get:>10} {m.submit_seconds * 1000:>9.0f} {m.p50_ms:>7.2f} {m.p95_ms:>7.2f}"
        )
    return "\n".join(lines)


def format_ratios(results: list[Measurement]) -> Iterator[str]:
    """tasklab against each RQ worker at the same worker count, and tasklab's targets."""
    by_key = {(m.label, m.workers): m for m in results}
    for workers in sorted({m.workers for m in results}):
        ours, simple, fork = (by_key.get((label, workers)) for label in (TASKLAB, SIMPLE, FORK))
        if ours is None:
            continue
        yield f"{workers} worker{'s' if workers > 1 else ''}:"
        for base in (simple, fork):
            if base is None:
                continue
            with_get = (ours.get_jobs_per_s or 0) / base.jobs_per_s
            yield (
                f"  tasklab / {base.label:<17} throughput {ours.jobs_per_s / base.jobs_per_s:5.2f}x "
                f"(with get() {with_get:5.2f}x)   p50 latency {ours.p50_ms / base.p50_ms:4.2f}x   "
                f"p95 latency {ours.p95_ms / base.p95_ms:4.2f}x"
            )
        if simple is not None:
            ratio = ours.jobs_per_s / simple.jobs_per_s
            yield (
                f"  target throughput >= {TARGET_THROUGHPUT_RATIO:g}x SimpleWorker: "
                f"{verdict(ratio >= TARGET_THROUGHPUT_RATIO)} ({ratio:.2f}x)"
            )
        met = ours.p50_ms < TARGET_P50_MS
        yield f"  target p50 < {TARGET_P50_MS:g} ms: {verdict(met)} ({ours.p50_ms:.2f} ms)"


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000, help="jobs per throughput run (default 3000)")
    parser.add_argument(
        "--fork-jobs",
        type=int,
        default=500,
        help="jobs per throughput run of the forking rq Worker, which is slow (default 500)",
    )
    parser.add_argument("--latency-samples", type=int, default=300, help="round trips per latency run (default 300)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker process counts (default 1,2)")
    parser.add_argument(
        "--signing", type=int, default=0, metavar="N",
        help="also measure tasklab signed and unsigned (insecure=True), N bursts each in turns, to show what "
        "signing costs (20 is a good N)",
    )  # fmt: skip
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-url", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.workers = [int(n) for n in args.workers.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--workers {args.workers!r}: expected comma-separated whole numbers, such as 1,2")
    if not args.workers or min(args.workers) < 1:
        parser.error("--workers: every count must be at least 1")
    if min(args.jobs, args.fork_jobs) < 1 or args.latency_samples < 2:
        parser.error("--jobs and --fork-jobs must be at least 1, --latency-samples at least 2")
    return args


#: Jobs per burst when signed and unsigned tasklab take turns (see :class:`SigningSide`).
SIGNING_BURST = 1000


@dataclass
class Burst:
    """One burst of ``--signing``: ``jobs`` no-op jobs submitted and waited for by one side."""

    label: str
    workers: int
    jobs: int
    seconds: float
    worker_cpu_s: float  # the side's workers' CPU time during the burst
    client_cpu_s: float  # the side's submitting process's


class SigningSide:
    """tasklab signed (the lab's key) or unsigned (``insecure=True``) in a process of its own (a process
    signs with one key, or none), kept running with its workers, which runs a burst of jobs when asked.

    The two sides take turns with short bursts, so both see the machine as it is at about the same
    moment: on a shared machine, turns of one configuration a minute apart differ by 20-30%."""

    def __init__(self, label: str, url: str, secret: bytes | None, data_dir: Path, workers: int):
        self.label, self.workers = label, workers
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        env.pop(defaults.SECRET_ENV, None)
        if secret is not None:
            env[defaults.SECRET_ENV] = secret.decode()
        command = [sys.executable, __file__, "--child", label, "--child-url", url, "--workers", str(workers)]
        self.process = subprocess.Popen(command, env=env, cwd=data_dir, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)  # fmt: skip
        self._reply()  # ready: workers started, warmed up

    def burst(self, jobs: int) -> Burst:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{jobs}\n")
        self.process.stdin.flush()
        return Burst(self.label, self.workers, jobs, **self._reply())

    def _reply(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label}: the benchmark's child process ended (exit code {self.process.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()  # the child stops its workers and exits
        self.process.wait(timeout=60)


def child(args: argparse.Namespace) -> int:
    """``--child LABEL``: tasklab on ``--child-url`` with its workers, warmed up; then, for each number N
    read from stdin, N jobs submitted and waited for, and the seconds and CPU time printed as JSON."""
    lab = tasklab.Lab(args.child_url, namespace=f"benchmark-{len(args.child)}", autostart_workers=False,
                      data_dir=Path.cwd() / "child", insecure=args.child == UNSIGNED)  # fmt: skip
    connection = redis.Redis.from_url(args.child_url)
    try:
        system = TaskLab(lab, queue=f"bench-{args.child.replace(' ', '-')}")  # each side its own workers
        system.start(args.workers[0])
        assert lab.pool is not None
        pids = [w.pid for w in lab.pool.processes]
        wait_for_results(connection, system.submit(WARMUP_JOBS), timeout_for(WARMUP_JOBS))
        for _ in range(WARMUP_ROUND_TRIPS):
            system.round_trip()
        print(json.dumps({}), flush=True)
        for line in sys.stdin:
            jobs = int(line)
            workers_before, client_before = sum(map(process_cpu_seconds, pids)), sum(os.times()[:2])
            seconds, _ = measure_throughput(system, connection, jobs)
            worker_cpu_s = sum(map(process_cpu_seconds, pids)) - workers_before
            client_cpu_s = sum(os.times()[:2]) - client_before
            print(json.dumps({"seconds": seconds, "worker_cpu_s": worker_cpu_s, "client_cpu_s": client_cpu_s}),
                  flush=True)  # fmt: skip
    finally:
        connection.close()
        lab.shutdown()
    return 0


def measure_signing(url: str, secret: bytes, data_dir: Path, workers: int, rounds: int) -> list[Burst]:
    """``rounds`` bursts of each side, in turns, which side goes first alternating."""
    sides = [SigningSide(TASKLAB + " signed", url, secret, data_dir, workers),
             SigningSide(UNSIGNED, url, None, data_dir, workers)]  # fmt: skip
    bursts = []
    try:
        for turn in range(rounds):
            for side in sides if turn % 2 == 0 else reversed(sides):
                bursts.append(side.burst(SIGNING_BURST))
    finally:
        for side in sides:
            side.close()
    return bursts


def process_cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far (Linux's /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace, data_dir: Path) -> tuple[str, list[Measurement], list[Burst]]:
    """Measure every configuration on one embedded Redis; stop every worker, whatever happens."""
    lab = tasklab.connect(data_dir=data_dir, namespace="benchmark", autostart_workers=False)
    connection = redis.Redis.from_url(lab.url)
    try:
        setup = describe_setup(connection, args)
        log_dir = data_dir / "rq-logs"
        systems: list[tuple[System, int]] = [
            (PlainRQ(SIMPLE, "simple", lab.url, connection, log_dir), args.jobs),
            (PlainRQ(FORK, "fork", lab.url, connection, log_dir), args.fork_jobs),
            (TaskLab(lab), args.jobs),
        ]
        flush = functools.partial(flush_job_data, connection)
        results = []
        bursts: list[Burst] = []
        for workers, (system, jobs) in itertools.product(args.workers, systems):
            print(f"measuring {system.label} with {workers} worker(s)...", file=sys.stderr, flush=True)
            m = measure(system, connection, workers, jobs, args.latency_samples, flush)
            print(f"  {m.jobs_per_s:.0f} jobs/s, p50 {m.p50_ms:.2f} ms", file=sys.stderr, flush=True)
            results.append(m)
        if args.signing:
            for workers in args.workers:
                print(f"measuring tasklab signed and unsigned, {workers} worker(s), {args.signing} bursts of "
                      f"{SIGNING_BURST} jobs each...", file=sys.stderr, flush=True)  # fmt: skip
                assert lab.secret is not None
                bursts += measure_signing(lab.url, lab.secret, data_dir, workers, args.signing)
        return setup, results, bursts
    finally:
        connection.close()
        lab.shutdown()


def signing_work_us(key: bytes, jobs: int = 20_000) -> float:
    """µs of signing work per no-op job, net of the unsigned path: what the kernel and a worker do
    for each job in turns, with a real key, on blobs shaped like a job's. The kernel signs the payload
    and the meta (the same for every job of a ``map_async``), the worker checks both before RQ unpickles
    them (RQ's unpickling then asks again) and signs the result, and the kernel checks the result.
    Best of three runs each, signed and unsigned."""
    meta = pickle.dumps({"tl_ns": "benchmark", "tl_task": "noop", "tl_v": "0123456789ab"})
    payloads = [pickle.dumps(("tasklab.engine.execution.execute_task", None, (i,), {})) for i in range(jobs)]
    result = pickle.dumps(None)

    def one_run(ring: Keyring) -> float:
        started = time.perf_counter()
        for payload in payloads:
            job, job_meta = ring.sign(payload), ring.sign(meta)  # the kernel; stored as they are (small)
            for _ in range(2):  # the worker's check, then RQ's unpickling
                ring.unsign(job, "job", JOB), ring.unsign(job_meta, "meta", JOB)
            ring.unsign(ring.sign(result, RESULT), "result", RESULT)  # the worker, then the kernel
        return (time.perf_counter() - started) / jobs * 1e6

    signed, unsigned = Keyring(), Keyring()
    signed.use(key)
    unsigned.use(None, insecure=True)
    return min(one_run(signed) for _ in range(3)) - min(one_run(unsigned) for _ in range(3))


def format_signing(bursts: list[Burst], work_us: float) -> Iterator[str]:
    """Signed against unsigned tasklab, burst by burst, and what signing's own work costs a job."""
    for workers in sorted({b.workers for b in bursts}):
        mine = [b for b in bursts if b.workers == workers]
        side = {label: [b for b in mine if b.label == label] for label in (TASKLAB + " signed", UNSIGNED)}
        signed, unsigned = side[TASKLAB + " signed"], side[UNSIGNED]

        def rate(of: list[Burst]) -> float:
            return sum(b.jobs for b in of) / sum(b.seconds for b in of)

        def cpu_us(of: list[Burst], kind: str) -> float:
            return sum(getattr(b, f"{kind}_cpu_s") for b in of) / sum(b.jobs for b in of) * 1e6

        # Each burst against the other side's burst next to it in time: the machine's drift cancels.
        ratios = sorted((a.jobs / a.seconds) / (b.jobs / b.seconds) for a, b in zip(signed, unsigned, strict=True))
        low, high = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
        cost = 1 - rate(signed) / rate(unsigned)
        yield (
            f"signing, {workers} worker(s): signed {rate(signed):.0f} jobs/s, unsigned {rate(unsigned):.0f} jobs/s, "
            f"over {len(signed)} bursts of {SIGNING_BURST} jobs each, in turns: signing costs {cost * 100:+.1f}% of "
            f"throughput (target under 5%: {verdict(cost < 0.05)}); burst by burst, quartiles "
            f"{(1 - high) * 100:+.1f}% to {(1 - low) * 100:+.1f}%"
        )
        for kind in ("worker", "client"):
            s_cpu, u_cpu = cpu_us(signed, kind), cpu_us(unsigned, kind)
            change = (s_cpu / u_cpu - 1) * 100
            yield f"  {kind} CPU per job: signed {s_cpu:.0f} µs, unsigned {u_cpu:.0f} µs ({change:+.1f}%)"
        job_cpu = cpu_us(signed, "worker") + cpu_us(signed, "client")
        yield (
            f"  signing's own work: {work_us:.1f} µs per job, {work_us / job_cpu * 100:.1f}% of the {job_cpu:.0f} µs "
            "of CPU a signed job costs (workers and submitter)"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child(args)
    # A SIGTERM unwinds like Ctrl-C, so the finally blocks stop every worker started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with tempfile.TemporaryDirectory(prefix="tasklab-bench-", ignore_cleanup_errors=True) as tmp:
        setup, results, bursts = run(args, Path(tmp))
    print()
    print(setup)
    print()
    print(format_table(results))
    print()
    print("\n".join(format_ratios([m for m in results if m.label in (SIMPLE, FORK, TASKLAB)])))
    if args.signing:
        print()
        print("\n".join(format_signing(bursts, signing_work_us(new_key().encode()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
