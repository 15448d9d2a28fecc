"""The worker process: a long-lived RQ worker that runs every job in its own process.

It is RQ's :class:`~rq.worker.SimpleWorker` (no fork per job, so a task's per-process state,
such as an open database connection, survives from one job to the next), plus:

* RQ's scheduler run in a thread instead of a forked process, so delayed and retried jobs
  are enqueued and no process is left behind when the worker dies;
* death with its parent: the kernel (or ``tasklab worker``) that started it.

Worker processes are started by :class:`tasklab.workers.WorkerPool`, locally by a lab or on
any machine by ``tasklab worker --url URL``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys

from rq.worker import SimpleWorker

from . import defaults
from ._proc import set_parent_death_signal, watch_parent
from .connection import make_client
from .scheduler import SchedulerThread

log = logging.getLogger("tasklab.worker")

#: Environment variable through which a pool tells a worker which process is its parent.
PARENT_ENV = "TASKLAB_PARENT_PID"


class Worker(SimpleWorker):
    """tasklab's RQ worker. Jobs of plain RQ functions run here too."""

    scheduler_interval: float = defaults.SCHEDULER_INTERVAL
    _scheduler_thread: SchedulerThread | None = None

    def _start_scheduler(self, burst: bool = False, *args: object, **kwargs: object) -> None:
        if burst:
            super()._start_scheduler(burst, *args, **kwargs)  # type: ignore[arg-type]
            return
        self._scheduler_thread = SchedulerThread(
            self.queues, self.connection, self.serializer, self.scheduler_interval
        )
        self._scheduler_thread.start()

    def unsubscribe(self) -> None:
        # RQ joins its pubsub thread for up to a second; the process is about to exit anyway.
        if self.pubsub_thread:
            self.pubsub_thread.stop()
            with contextlib.suppress(Exception):
                self.pubsub.close()

    def teardown(self) -> None:
        if self._scheduler_thread is not None:
            self._scheduler_thread.stop()
        super().teardown()


def _die_with_parent(worker: Worker, parent: int) -> None:
    """Exit when ``parent`` goes away, whether it exited or was killed."""

    def orphaned(*_: object) -> None:
        if os.getppid() == parent:  # a SIGTERM from the parent itself: RQ's warm shutdown
            worker.request_stop(signal.SIGTERM, None)
            return
        log.warning("worker %s: parent %s is gone, exiting", worker.name, parent)
        with contextlib.suppress(Exception):
            worker.register_death()
        os._exit(1)

    set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # died before the signal was armed
        orphaned()
    watch_parent(parent, orphaned, defaults.PARENT_CHECK_INTERVAL)
    # RQ installs its own SIGTERM handler in work(); wrap it so a death signal is told apart.
    original_install = worker._install_signal_handlers

    def install() -> None:
        original_install()
        signal.signal(signal.SIGTERM, orphaned)

    worker._install_signal_handlers = install  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tasklab-worker", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--name", default=None)
    parser.add_argument("--queues", default=defaults.QUEUE, help="comma-separated, in priority order")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
    connection = make_client(args.url)
    worker = Worker([q for q in args.queues.split(",") if q], name=args.name, connection=connection)
    parent = os.environ.get(PARENT_ENV)
    if parent:
        _die_with_parent(worker, int(parent))
    worker.work(burst=args.burst, with_scheduler=True, logging_level=args.log_level)
    return 0
