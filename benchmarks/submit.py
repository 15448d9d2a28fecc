"""How fast tasklab submits: ``map_async`` of many small calls, with no workers taking them, on the embedded Redis.

Issue 14's target is 30,000 tasks/s for a ``map_async`` of 10,000 calls: bound by Redis, not by Python.

    python benchmarks/submit.py [--calls 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import tasklab

TARGET_PER_S = 30_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000, help="calls per map_async (default 10000)")
    parser.add_argument("--rounds", type=int, default=5, help="maps measured (default 5)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", tasklab.TaskLabWarning)  # that no worker serves the queue is the point
    with tempfile.TemporaryDirectory(prefix="tasklab-submit-") as tmp:
        lab = tasklab.connect(data_dir=Path(tmp), namespace="submit", autostart_workers=False)
        try:
            namespace: dict = {}
            task = tasklab.register_cell("def noop(x=None):\n    return None\n", namespace, app=lab)["noop"]
            task.map_async(range(100))  # the code stored, the connection warm
            rates = []
            for _ in range(args.rounds):
                started = time.perf_counter()
                task.map_async(range(args.calls))
                rates.append(args.calls / (time.perf_counter() - started))
                lab.connection.delete(lab.queue().key)  # nobody runs them
        finally:
            lab.shutdown()
    best, median = max(rates), statistics.median(rates)
    met = "met" if median >= TARGET_PER_S else "MISSED"
    print(f"map_async of {args.calls:,} no-op calls: best {best:,.0f} tasks/s, median {median:,.0f} of {args.rounds} "
          f"(target >= {TARGET_PER_S:,}: {met})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
