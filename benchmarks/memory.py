"""Redis memory per finished task: what a long-lived lab keeps, with the embedded server's settings
and with Redis's own, on one embedded Redis.

For each setting it runs ``--tasks`` no-op tasks on two local workers (after a warm-up), and prints
Redis's ``used_memory`` growth divided by the tasks, then where the bytes are (``MEMORY USAGE`` of
every key, grouped by the key's pattern). With the embedded server's settings it also measures plain RQ
jobs run by RQ's SimpleWorker: what RQ's own records keep per job, the floor under tasklab's figure.

    python benchmarks/memory.py [--tasks 3000]
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
from pathlib import Path

import noop_tasks
from rq import Queue, SimpleWorker

import tasklab
from tasklab import defaults

#: The issue's target: Redis memory per finished no-op task, with default settings.
TARGET_BYTES = 1536
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def measure(lab: tasklab.Lab, task: tasklab.Task, tasks: int) -> tuple[float, dict[str, float]]:
    """Bytes of Redis memory per task, and per task by key pattern, after ``tasks`` more no-ops."""
    connection = lab.connection
    lab.workers(0)
    connection.flushall()  # nothing kept from the previous setting: the code is stored again below
    lab._published.clear()
    lab.workers(2)
    task.map_async(range(20)).get(timeout=60)
    before = connection.info("memory")["used_memory"]
    task.map_async(range(tasks)).get(timeout=max(60, tasks / 50))
    after = connection.info("memory")["used_memory"]
    by_pattern: collections.Counter[str] = collections.Counter()
    for key in connection.scan_iter(count=1000):
        pattern = re.sub(r"<id>:[0-9a-f-]+", "<id>:<execution>", _ID.sub("<id>", key.decode()))
        by_pattern[pattern] += connection.memory_usage(key, samples=0) or 0
    return (after - before) / tasks, {k: v / tasks for k, v in by_pattern.most_common(6)}


def rq_floor(lab: tasklab.Lab, jobs: int) -> float:
    """Bytes of Redis memory per finished no-op job of plain RQ (``Queue.enqueue_many``, RQ's
    SimpleWorker, no tasklab record at all), with the server's current settings: what RQ's data
    model alone keeps per job, the floor under tasklab's figure."""
    connection = lab.connection
    connection.flushall()
    lab._published.clear()
    queue = Queue("plain", connection=connection)

    def run(count: int) -> None:
        queue.enqueue_many([Queue.prepare_data(noop_tasks.noop) for _ in range(count)])
        SimpleWorker([queue], connection=connection).work(burst=True, logging_level="ERROR")

    run(20)
    before = connection.info("memory")["used_memory"]
    run(jobs)
    return (connection.info("memory")["used_memory"] - before) / jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=3000, help="no-op tasks per setting (default 3000)")
    args = parser.parse_args(argv)
    settings = {
        "tasklab's": (defaults.STREAM_NODE_MAX_BYTES, defaults.HASH_MAX_ZIPLIST_VALUE),
        "Redis's own": (4096, 64),
    }
    with tempfile.TemporaryDirectory(prefix="tasklab-memory-") as tmp:
        lab = tasklab.connect(data_dir=Path(tmp), namespace="memory", autostart_workers=False)
        try:
            namespace: dict = {}
            task = tasklab.register_cell("def noop(x=None):\n    return None\n", namespace, app=lab)["noop"]
            print(f"redis-server {lab.connection.info('server')['redis_version']}, {args.tasks} no-op tasks each")
            for label, (node, value) in settings.items():
                lab.connection.config_set("stream-node-max-bytes", node)
                lab.connection.config_set("hash-max-ziplist-value", value)
                per_task, where = measure(lab, task, args.tasks)
                met = "met" if per_task <= TARGET_BYTES else "MISSED"
                print(f"\n{label} settings (stream-node-max-bytes {node}, hash-max-ziplist-value {value}): "
                      f"{per_task:,.0f} bytes per finished task (target <= {TARGET_BYTES}: {met})")  # fmt: skip
                for pattern, size in where.items():
                    print(f"  {size:8,.0f} B/task  {pattern}")
                if label == "tasklab's":
                    floor = rq_floor(lab, args.tasks)
                    print(f"  RQ's own records alone (plain RQ jobs, RQ's SimpleWorker, these settings): {floor:,.0f} "
                          "bytes per finished job")  # fmt: skip
        finally:
            lab.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
