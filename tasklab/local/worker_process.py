"""A worker process: ``python -c "from tasklab.local.worker_process import main; ..."``.

It runs one :class:`tasklab.engine.worker.Worker` against the Redis at ``--url``, with the
worker's own app (tasks it runs submit with the worker's connection), and dies with its
parent: the kernel (or ``tasklab worker``) that started it, even when that was killed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from rq import get_current_job

from .. import defaults
from ..client.submit import submit_calls
from ..client.workflow import submit_workflow
from ..code.loader import install
from ..code.serialization import Serializer
from ..code.store import CodeRegistry
from ..core.signing import find_key, keyring
from ..core.task import Task
from ..engine import keys, leases
from ..engine.lost import settle_jobs_of
from ..engine.queue import TaskQueue
from ..engine.worker import Worker
from ..errors import RedisUnreachable, WorkerLostError
from .connection import make_client
from .proc import set_parent_death_signal, watch_parent

log = logging.getLogger("tasklab.worker")
T = TypeVar("T")


class WorkerApp:
    """The app of tasks running in a worker: they submit with the worker's connection."""

    def __init__(self, connection: redis.Redis):
        self.connection = connection
        self.registry = CodeRegistry(connection)
        self.options: dict[str, Any] = {}
        self._queues: dict[str, TaskQueue] = {}

    @property
    def namespace(self) -> str:
        """The namespace of the job being run: tasks it submits belong to the same lab."""
        job = get_current_job()
        return job.meta.get(keys.META_NAMESPACE, "default") if job is not None else "default"

    def queue(self, name: str) -> TaskQueue:
        if name not in self._queues:
            self._queues[name] = TaskQueue(name, connection=self.connection)
        return self._queues[name]

    def submit(self, task: Task, calls: list[tuple[tuple, dict]], call_options: dict[str, Any]) -> Sequence[Any]:
        return submit_calls(self, task, calls, call_options)

    def submit_workflow(self, node: Any, args: tuple, kwargs: dict, options: dict[str, Any]) -> Any:
        return submit_workflow(self, node, args, kwargs, options)

    def publish(self, cell: Any) -> None:
        """Code a worker runs was stored by the lab that submitted it."""

    def ensure_code(self, task: Task) -> None:
        """Code a worker loaded is in Redis already."""

    def ensure_workers(self, queue: str | None = None) -> None:
        """A worker does not start workers."""

    def reaching_redis(self, action: Callable[[], T], what: str) -> T:
        """``action()``; a task that cannot reach Redis fails with :class:`RedisUnreachable`
        (a ``ConnectionError``, for ``autoretry_for``)."""
        try:
            return action()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnreachable(f"Redis does not answer ({exc}). {what}") from exc


def _die_with_parent(worker: Worker, parent: int) -> None:
    """Exit when ``parent`` goes away, whether it exited or was killed."""

    def die() -> None:
        log.warning("worker %s: parent %s is gone, exiting", worker.name, parent)
        with contextlib.suppress(Exception):  # settle the job it ran now, not when RQ's maintenance finds it
            reason = WorkerLostError(f"The process that started worker {worker.name} died while it ran the task.")
            settle_jobs_of(worker.connection, worker.name, reason)
            leases.drop(worker.connection, worker.name)
        with contextlib.suppress(Exception):
            worker.register_death()
        os._exit(1)

    def orphaned() -> bool:
        """Die if the parent is gone (its death sends SIGTERM too); a SIGTERM from the parent
        itself is a stop request, left to RQ's warm shutdown."""
        if os.getppid() != parent:
            die()
        return False

    def stop_before_work(*_: object) -> None:
        # A SIGTERM before work() installs RQ's handlers (the pool may stop a worker as soon as
        # it has registered): stop cleanly before taking a job.
        orphaned()
        worker.stop_soon()

    signal.signal(signal.SIGTERM, stop_before_work)
    set_parent_death_signal(signal.SIGTERM)
    orphaned()  # died before the signal was armed
    watch_parent(parent, die, defaults.PARENT_CHECK_INTERVAL)
    worker.stop_signal_hook = orphaned  # RQ's own handler, from work() on, asks it first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tasklab-worker", description=__doc__)
    parser.add_argument("--url", default=os.environ.get(defaults.URL_ENV), help=f"default: ${defaults.URL_ENV}")
    parser.add_argument("--secret-file", default=None, help="the key's file (default: see tasklab.core.signing)")
    parser.add_argument("--insecure", action="store_true", help="sign and check nothing")
    parser.add_argument("--allow-rq-jobs", action="store_true", help="also run unsigned (plain RQ) jobs")
    parser.add_argument("--name", default=None)
    parser.add_argument("--queues", default=defaults.QUEUE, help="comma-separated, in priority order")
    parser.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    parser.add_argument("--log-level", default=defaults.WORKER_LOG_LEVEL)
    args = parser.parse_args(argv)
    if not args.url:
        parser.error(f"give --url or set ${defaults.URL_ENV}")

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
    key = None if args.insecure else find_key(secret_file=args.secret_file)
    if key is None and not args.insecure:
        parser.error(f"no key: set ${defaults.SECRET_ENV}, give --secret-file, or pass --insecure")
    keyring.use(key, insecure=args.insecure)
    keyring.accept_unsigned = args.allow_rq_jobs
    for secret in (defaults.SECRET_ENV, defaults.URL_ENV):  # not passed on to what tasks start
        os.environ.pop(secret, None)
    connection = make_client(args.url)
    install(CodeRegistry(connection).fetch, WorkerApp(connection))  # task code versions load from this Redis
    worker = Worker(
        [q for q in args.queues.split(",") if q],
        name=args.name,
        connection=connection,
        serializer=Serializer,
        queue_class=TaskQueue,  # retries scheduled to the sub-second; ready dependents never stranded
        maintenance_interval=defaults.MAINTENANCE_INTERVAL,
    )
    parent = os.environ.get(defaults.PARENT_ENV)
    if parent:
        _die_with_parent(worker, int(parent))
    worker.work(burst=args.burst, with_scheduler=True, logging_level=args.log_level)
    return 0
