"""Plain RQ worker processes for the benchmark, and the entry point each of them runs.

The parent side (:class:`RQWorkerPool`) starts ``python rq_pool.py --url ... --queue ...``
subprocesses and stops them. The child side (:func:`main`) runs an unmodified
``rq.SimpleWorker`` or ``rq.Worker`` with RQ's defaults, logging to a file as a deployed
worker would, and exits if the benchmark that started it goes away.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import rq.worker
from redis import Redis

from tasklab.local.proc import set_parent_death_signal, watch_parent

WORKER_CLASSES = {"simple": "SimpleWorker", "fork": "Worker"}
HERE = Path(__file__).resolve().parent
STOP_TIMEOUT = 10.0
WORKER_KEY_PREFIX = rq.worker.BaseWorker.redis_worker_namespace_prefix  # a worker registers itself here


class RQWorkerPool:
    """``n`` plain RQ worker processes of one class, serving one queue."""

    def __init__(self, url: str, queue: str, kind: str, log_dir: Path):
        if kind not in WORKER_CLASSES:
            raise ValueError(f"kind must be one of {sorted(WORKER_CLASSES)}, not {kind!r}")
        self.url, self.queue, self.kind, self.log_dir = url, queue, kind, log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, n: int, connection: Redis, timeout: float = 30.0) -> None:
        """Start ``n`` workers and return once each has registered itself in Redis."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            name = f"bench-{self.queue}-{i}-{os.getpid()}"
            argv = [sys.executable, str(HERE / "rq_pool.py"), "--url", self.url, "--queue", self.queue,
                    "--name", name, "--kind", self.kind, "--parent", str(os.getpid())]  # fmt: skip
            with open(self.log_dir / f"{name}.log", "ab") as log:
                self.processes[name] = subprocess.Popen(
                    argv, cwd=HERE, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
                )
        self._wait_registered(connection, timeout)

    def _wait_registered(self, connection: Redis, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.processes)
        while pending:
            pending = {name for name in pending if not connection.exists(WORKER_KEY_PREFIX + name)}
            for name in pending:
                code = self.processes[name].poll()
                if code is not None:
                    raise RuntimeError(f"RQ worker {name} exited with {code}; see {self.log_dir / name}.log")
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"RQ workers {sorted(pending)} did not register within {timeout:.0f} s")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop every worker (RQ's warm shutdown), killing any that takes too long."""
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.processes.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def _exit_with_parent(parent: int) -> None:
    """Exit at once if the benchmark process dies without stopping us, as tasklab's workers do."""
    set_parent_death_signal(signal.SIGKILL)
    watch_parent(parent, lambda: os._exit(1), interval=0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One plain RQ worker for the benchmark.")
    parser.add_argument("--url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--kind", choices=sorted(WORKER_CLASSES), required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)

    _exit_with_parent(args.parent)
    worker_class = getattr(rq.worker, WORKER_CLASSES[args.kind])
    worker = worker_class([args.queue], name=args.name, connection=Redis.from_url(args.url))
    worker.work()
    return 0


if __name__ == "__main__":
    sys.exit(main())
