"""What the monitor costs once history is large.

Fills the event history with N finished attempts (default 100,000), then measures:

* one monitor refresh (the widget's read of Redis and its trait updates): target < 50 ms;
* one plot refresh (the last 3000 events to a DataFrame, three figures drawn as the SVG images
  the monitor shows): target < 300 ms; and, beside it, the same refresh with the task stream as
  ipympl's interactive canvas (what a notebook with ipympl shows), drawn for a pixel ratio of 2;
* ``history()`` over all N attempts: target <= 1 s;
* Redis memory per finished attempt, for the event history alone (written as the runtime
  writes it) and for real jobs run end to end (RQ's job and result records plus events).

The history is written with the same ``events.emit`` calls the runtime makes, in pipelines,
because running 100,000 real jobs would take minutes; a smaller batch of real jobs measures
the full per-attempt footprint.

    python benchmarks/monitor.py [--attempts 100000] [--real-jobs 2000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid

import tasklab
from tasklab.engine import events
from tasklab.widgets.monitor import Monitor


def used_memory(lab: tasklab.Lab) -> int:
    return int(lab.connection.info("memory")["used_memory"])


def fill_history(lab: tasklab.Lab, attempts: int, tasks: int = 5) -> None:
    """Write ``attempts`` finished attempts (submitted, started, succeeded/failed) as the runtime would."""
    names = [f"task_{i}" for i in range(tasks)]
    batch = 2000
    for first in range(0, attempts, batch):
        with lab.connection.pipeline(transaction=False) as pipe:
            for i in range(first, min(first + batch, attempts)):
                job_id, name = str(uuid.uuid4()), names[i % tasks]
                events.emit(pipe, events.SUBMITTED, job_id, name, lab.namespace, q="default", v="0123456789ab")
                events.emit(pipe, events.STARTED, job_id, name, lab.namespace, n=0, w="worker-1", q="default")
                failed = i % 50 == 0
                events.emit(
                    pipe, events.FAILED if failed else events.SUCCEEDED, job_id, name, lab.namespace, n=0,
                    run=0.001 * (i % 100), w="worker-1", x="ValueError" if failed else None,
                )  # fmt: skip
            pipe.execute()


def timed(fn, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attempts", type=int, default=100_000)
    parser.add_argument("--real-jobs", type=int, default=2000)
    args = parser.parse_args()

    with tasklab.connect(data_dir=tempfile.mkdtemp(prefix="tasklab-bench-"), autostart_workers=False) as lab:
        lab.connection.flushdb()
        before = used_memory(lab)
        started = time.perf_counter()
        fill_history(lab, args.attempts)
        fill_s = time.perf_counter() - started
        events_bytes = (used_memory(lab) - before) / args.attempts
        stream_len = lab.connection.xlen(events.STREAM)

        monitor = Monitor(lab, plots=True, interactive=False)
        monitor.refresh()
        refresh_ms = timed(monitor.refresh, 20)
        plot_ms = timed(monitor.refresh_plots, 7)
        interactive = Monitor(lab, plots=True, interactive=True)
        interactive.stream_canvas._set_device_pixel_ratio(2)  # as on a high-density screen
        interactive.refresh_plots()
        interactive_ms = timed(interactive.refresh_plots, 7)
        history_ms = timed(lambda: lab.history(), 5)

        lab.connection.flushdb()
        lab.workers(2)
        namespace: dict = {}
        tasklab.register_cell("def noop(x):\n    return x\n", namespace, app=lab)
        namespace["noop"].map_async(range(50)).get(timeout=60)  # warm up
        before = used_memory(lab)
        namespace["noop"].map_async(range(args.real_jobs)).get(timeout=300)
        real_bytes = (used_memory(lab) - before) / args.real_jobs

    p50 = statistics.median
    print(f"history: {args.attempts} finished attempts ({stream_len} stream entries) written in {fill_s:.1f} s")
    print(f"monitor refresh:  p50 {p50(refresh_ms):6.1f} ms   max {max(refresh_ms):6.1f} ms   (target < 50 ms)")
    print(f"plot refresh:     p50 {p50(plot_ms):6.1f} ms   max {max(plot_ms):6.1f} ms   (target < 300 ms;"
          " the last 3000 events)")  # fmt: skip
    print(f"  with the interactive stream: p50 {p50(interactive_ms):6.1f} ms   max {max(interactive_ms):6.1f} ms"
          "   (ipympl's canvas, pixel ratio 2)")  # fmt: skip
    print(f"history():        p50 {p50(history_ms):6.1f} ms   max {max(history_ms):6.1f} ms   (target <= 1000 ms;"
          f" {args.attempts} attempts)")  # fmt: skip
    print(f"Redis memory per finished attempt: {events_bytes:.0f} B of events; {real_bytes:.0f} B for a real job "
          "(RQ job hash and result kept for result_ttl, plus events)")  # fmt: skip
    for name, value, target in (
        ("refresh", p50(refresh_ms), 50), ("plot refresh", p50(plot_ms), 300), ("history()", p50(history_ms), 1000)
    ):  # fmt: skip
        print(f"  {name}: {'met' if value <= target else 'MISSED'} ({value:.1f} ms vs {target} ms)")


if __name__ == "__main__":
    main()
