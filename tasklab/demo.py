"""``tasklab demo``: the embedded server and local workers, a few tasks, and what happened."""

from __future__ import annotations

import os
import time

from .lab import connect


def square(x: int) -> int:
    time.sleep(0.05)
    return x * x


def whoami() -> int:
    return os.getpid()


def run_demo(n_workers: int = 2, data_dir: str | None = None) -> None:
    started = time.perf_counter()
    with connect(data_dir=data_dir) as lab:
        print(f"server: {lab.url} ({time.perf_counter() - started:.2f} s)")
        t = time.perf_counter()
        lab.workers(n_workers)
        print(f"workers: {n_workers} ready in {time.perf_counter() - t:.2f} s")
        queue = lab.queue()
        jobs = [queue.enqueue(square, i) for i in range(8)]
        for job in jobs:
            result = job.latest_result(timeout=30)
            job.refresh()
            wait = (job.started_at - job.enqueued_at).total_seconds()
            run = (job.ended_at - job.started_at).total_seconds()
            print(
                f"  {job.func_name}{job.args}: {job.get_status()} -> {result.return_value!r}  "
                f"worker {job.worker_name}  waited {wait * 1000:.1f} ms, ran {run * 1000:.1f} ms"
            )
        print(f"done in {time.perf_counter() - started:.2f} s; stopping workers and server")
