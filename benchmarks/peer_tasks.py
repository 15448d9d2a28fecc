"""What the workers of ``benchmarks/peers.py`` import: the no-op every system runs (tasklab's as a task of
this module, which it ships by import path), Huey's and Celery's apps, the floor's worker loop
(plain Redis, no queue library), and the loop of the leanest worker that keeps RQ's records (rq-lean).

The apps are made on first use, from ``$PEERS_REDIS_URL``, so that a tasklab or RQ worker importing
:func:`noop` imports neither Huey nor Celery. Their workers name them: ``huey_consumer peer_tasks.huey_app``,
``celery -A peer_tasks:celery_app worker``.
"""

from __future__ import annotations

import contextlib
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
#: Seconds rq-lean keeps a result, as RQ's default.
RQ_LEAN_RESULT_TTL = 500

#: rq-lean's one script per job (see :func:`rq_lean_worker`). ARGV: the queue, the worker's claimed list, the
#: finished registry, the result TTL; then, for the job just run, its id, start and end (RQ's dates, then
#: timestamps), the worker's name, its score in the finished registry and its pickled result in base64 ('' for
#: None). It records that job as RQ's worker does (finished status and dates in the job's hash, a result in its
#: result stream, the finished registry, the TTLs), takes it out of the claimed list, and moves the next job's
#: id from the queue to the claimed list; the reply is that id and the job's payload, or nil.
RQ_LEAN_LUA = """
local queue, claimed, finished, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if #ARGV > 4 then
    local id, worker = ARGV[5], ARGV[10]
    local job, results = 'rq:job:' .. id, 'rq:results:' .. id
    redis.call('HSET', job, 'status', 'finished', 'started_at', ARGV[6], 'ended_at', ARGV[7], 'worker_name', worker)
    if ARGV[12] == '' then
        redis.call('XADD', results, 'MAXLEN', '~', '10', '*', 'type', '1', 'worker_name', worker,
                   'execution_started_at', ARGV[8], 'execution_ended_at', ARGV[9])
    else
        redis.call('XADD', results, 'MAXLEN', '~', '10', '*', 'type', '1', 'worker_name', worker,
                   'return_value', ARGV[12], 'execution_started_at', ARGV[8], 'execution_ended_at', ARGV[9])
    end
    redis.call('EXPIRE', results, ttl)
    redis.call('ZADD', finished, ARGV[11], id)
    redis.call('EXPIRE', job, ttl)
    redis.call('LREM', claimed, 1, id)
end
local id = redis.call('LMOVE', queue, claimed, 'LEFT', 'RIGHT')
if not id then
    return nil
end
return {id, redis.call('HGET', 'rq:job:' .. id, 'data')}
"""


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


def rq_lean_worker(url: str, queue_name: str) -> None:
    """The ceiling of RQ's data model: the least a worker can do that keeps RQ's records of each job, with
    one round trip per job (:data:`RQ_LEAN_LUA`). It runs RQ's jobs (enqueued by RQ) with RQ's payload and
    result formats, and has nothing else: no signatures, events, counts, leases, fences, hooks, time limits,
    start records or failure handling (a task that raises ends the loop). Runs until killed."""
    import base64
    import datetime
    import zlib

    import redis
    from rq.utils import import_attribute, utcformat

    connection = redis.Redis.from_url(url)
    sha = connection.script_load(RQ_LEAN_LUA)
    worker = f"rq-lean-{os.getpid()}"
    queue, claimed, finished = f"rq:queue:{queue_name}", f"rq-lean:claimed:{worker}", f"rq:finished:{queue_name}"
    functions: dict[str, Any] = {}
    done: list[Any] = []
    while True:
        popped = connection.evalsha(sha, 0, queue, claimed, finished, RQ_LEAN_RESULT_TTL, *done)
        done = []
        if popped is None:
            job_id = connection.blmove(queue, claimed, 1, "LEFT", "RIGHT")
            if job_id is None:
                continue
            popped = [job_id, connection.hget(b"rq:job:" + job_id, "data")]
        job_id, data = popped
        started = datetime.datetime.now(datetime.timezone.utc)
        with contextlib.suppress(zlib.error):  # as RQ's Job.restore: compressed or not
            data = zlib.decompress(data)
        func_name, _instance, args, kwargs = pickle.loads(data)
        if func_name not in functions:
            functions[func_name] = import_attribute(func_name)
        result = functions[func_name](*args, **kwargs)
        ended = datetime.datetime.now(datetime.timezone.utc)
        encoded = "" if result is None else base64.b64encode(pickle.dumps(result)).decode()
        score = int(ended.timestamp()) + RQ_LEAN_RESULT_TTL
        done = [job_id, utcformat(started), utcformat(ended), started.timestamp(), ended.timestamp(), worker, score,
                encoded]  # fmt: skip
