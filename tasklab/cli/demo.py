"""``tasklab demo``: the embedded server, local workers, a few tasks, and what happened."""

from __future__ import annotations

import time

import pandas as pd

from ..core.task import Task
from ..lab import connect, register_cell

_SOURCE = """
import time

def square(x):
    time.sleep(0.05)
    return x * x

def flaky(key):
    from rq import get_current_job
    if get_current_job().connection.incr(key) < 3:
        raise ConnectionError("the service is down (this attempt)")
    return "third time lucky"
"""


def run_demo(n_workers: int = 2, data_dir: str | None = None) -> None:
    started = time.perf_counter()
    with connect(data_dir=data_dir, namespace="demo", autostart_workers=False) as lab:
        print(f"server: {lab.url} ({time.perf_counter() - started:.2f} s)")
        t = time.perf_counter()
        lab.workers(n_workers)
        print(f"workers: {n_workers} ready in {time.perf_counter() - t:.2f} s")
        namespace: dict = {}
        tasks: dict[str, Task] = register_cell(
            _SOURCE, namespace, {"autoretry_for": (ConnectionError,), "max_retries": 3, "retry_backoff": 0.1}, app=lab
        )
        lab.connection.delete("demo:flaky")
        squares = tasks["square"].map_async(range(8))
        flaky = tasks["flaky"].delay("demo:flaky")
        print(f"square(0..7) -> {squares.get(timeout=60)}")
        print(f"flaky -> {flaky.get(timeout=60)!r} after {flaky.retries} retries")
        frame = lab.history(namespace="demo")
        columns = ["name", "state", "attempt", "worker", "wait_s", "run_s", "error"]
        with pd.option_context("display.width", 140, "display.max_colwidth", 40, "display.precision", 4):
            print(frame[columns].to_string(index=False))
        print(f"done in {time.perf_counter() - started:.2f} s; stopping workers and server")
