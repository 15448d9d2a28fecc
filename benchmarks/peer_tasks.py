"""What the workers of ``benchmarks/peers.py`` import: the no-op every system runs (tasklab's as a task of
this module, which it ships by import path), Huey's and Celery's apps, and the floor's worker loop
(plain Redis, no queue library).

The apps are made on first use, from ``$PEERS_REDIS_URL``, so that a tasklab or RQ worker importing
:func:`noop` imports neither Huey nor Celery. Their workers name them: ``huey_consumer peer_tasks.huey_app``,
``celery -A peer_tasks:celery_app worker``.
"""

from __future__ import annotations

import functools
import os
import pickle
import sys
import traceback
from typing import Any

import tasklab

URL_ENV = "PEERS_REDIS_URL"
TASKLAB_QUEUE = "peers"
HUEY_NAME = "peers"
CELERY_TASK = "peer_tasks.noop"
FLOOR_QUEUE = "floor:queue"
#: The floor's worker pushes a job's pickled result onto ``FLOOR_RESULT + id``: a list, so that a client
#: can block on it.
FLOOR_RESULT = "floor:result:"
#: Counts the floor's jobs that raised (they get no result): nothing is written for a job that succeeds.
FLOOR_FAILED = "floor:failed"


def noop(x: object = None) -> None:
    """Do nothing, so that the benchmark measures the queue and not the task."""
    return None


@tasklab.task(queue=TASKLAB_QUEUE)
def tasklab_noop(x: object = None) -> None:
    """:func:`noop` for tasklab, whose workers import a task by its path only if the module holds it as a task."""
    return None


@functools.cache
def make_huey(url: str) -> tuple[Any, Any]:
    """A ``RedisHuey`` on ``url`` and its no-op task."""
    from huey import RedisHuey

    # store_none: Huey keeps no result for a task that returns None, which would leave nothing to wait for.
    huey = RedisHuey(HUEY_NAME, url=url, store_none=True)
    return huey, huey.task(name="noop")(noop)


@functools.cache
def make_celery(url: str) -> tuple[Any, Any]:
    """A Celery app with its broker and result backend on ``url``, and its no-op task."""
    from celery import Celery

    app = Celery("peer_tasks", broker=url, backend=url)
    app.conf.broker_connection_retry_on_startup = True  # silences a warning at every start
    return app, app.task(name=CELERY_TASK)(noop)


def __getattr__(name: str) -> Any:
    if name == "huey_app":
        return make_huey(os.environ[URL_ENV])[0]
    if name == "celery_app":
        return make_celery(os.environ[URL_ENV])[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def floor_worker(url: str, queue: str = FLOOR_QUEUE) -> None:
    """The least a Redis queue's worker can do: ``BRPOP`` a pickled ``(id, args)``, call :func:`noop`,
    ``LPUSH`` the pickled result. Runs until killed."""
    import redis

    connection = redis.Redis.from_url(url)
    while True:
        popped = connection.brpop([queue], timeout=1)
        if popped is None:
            continue
        job_id, args = pickle.loads(popped[1])
        try:
            result = noop(*args)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            connection.incr(FLOOR_FAILED)
            continue
        connection.lpush(FLOOR_RESULT + job_id, pickle.dumps(result))
