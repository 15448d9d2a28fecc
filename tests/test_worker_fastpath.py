"""tasklab's worker writes what RQ's SimpleWorker writes, in fewer round trips.

Jobs are real RQ jobs: where it makes sense, the same jobs run on tasklab's worker (a
subprocess started by ``lab.workers``) and on RQ's own ``SimpleWorker`` (in this process,
in burst mode), and the records both leave in Redis are compared.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import redis
from rq import Queue, Retry, SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.job import Dependency, Job
from rq.rate_limit import RateLimit, RateLimitRegistry
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result
from rq.suspension import resume, suspend
from rq.worker import Worker as RQWorker

import tasklab
from tasklab import defaults
from tasklab.code.serialization import Serializer
from tasklab.engine import keys
from tasklab.engine.worker_job import WorkerJob
from tasklab.local.connection import make_client

from . import jobfuncs, shipped_tasks
from .conftest import wait_for

FAST = "fast"  # served by tasklab's Worker
PLAIN = "plain"  # served by RQ's SimpleWorker

REGISTRIES = {
    "started": StartedJobRegistry,
    "finished": FinishedJobRegistry,
    "failed": FailedJobRegistry,
    "deferred": DeferredJobRegistry,
    "scheduled": ScheduledJobRegistry,
}


@pytest.fixture
def rq_connection(lab: tasklab.Lab) -> Iterator[redis.Redis]:
    """A connection of its own for workers run in this process (RQ changes its timeouts)."""
    connection = make_client(lab.url)
    yield connection
    connection.close()


def fast_worker(lab: tasklab.Lab, n: int = 1) -> str:
    """Start ``n`` tasklab workers on the FAST queue; the name of the first."""
    return lab.workers(n, queues=[FAST]).names[0]


def run_in_process(worker_class: type, connection: redis.Redis, name: str = PLAIN, **work: object) -> RQWorker:
    """Run ``worker_class`` on queue ``name`` in burst mode in this process, as RQ's tests do."""
    queue = Queue(name, connection=connection, serializer=Serializer)
    worker = worker_class([queue], connection=connection, serializer=Serializer)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.work(burst=True, **work)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    return worker


def fetch(lab: tasklab.Lab, job_or_id: Job | str) -> Job:
    job_id = job_or_id if isinstance(job_or_id, str) else job_or_id.id
    return Job.fetch(job_id, connection=lab.connection, serializer=Serializer)


def status(lab: tasklab.Lab, job: Job) -> str | None:
    try:
        return fetch(lab, job).get_status()
    except NoSuchJobError:
        return None


def footprint(conn: redis.Redis, job: Job) -> dict[str, object]:
    """Every key that names the job, with its type, and the fields of the job's hash."""
    keys = {key.decode().replace(job.id, "<id>"): conn.type(key).decode() for key in conn.scan_iter(f"*{job.id}*")}
    return {"keys": keys, "job fields": sorted(field.decode() for field in conn.hkeys(job.key))}


def records(lab: tasklab.Lab, job_or_id: Job | str, worker_name: str) -> dict[str, object]:
    """What RQ's tools see of a job that ran, in a form that two workers can share."""
    job = fetch(lab, job_or_id)
    conn = lab.connection
    result = job.latest_result()
    return {
        "status": job.get_status(),
        "result": result.type.name if result else None,
        "return value": result.return_value if result else None,
        "exception": result.exc_string.strip().splitlines()[-1] if result and result.exc_string else None,
        "registries": sorted(name for name, cls in REGISTRIES.items() if job.id in cls(job.origin, connection=conn)),
        "worker_name is the worker's": job.worker_name == worker_name,
        "result names the worker": result.worker_name == worker_name if result else None,
        "result names its execution": bool(
            result and result.execution_id and result.execution_started_at <= result.execution_ended_at
        ),
        "started_at <= ended_at": bool(job.started_at and job.ended_at and job.started_at <= job.ended_at),
        "executions left": len(job.get_executions()),
        "job expires": conn.ttl(job.key) > 0,
        "results expire": conn.ttl(Result.get_key(job.id)) > 0,
    }


def worker_counts(conn: redis.Redis, name: str) -> tuple[int, int, bool]:
    worker = RQWorker.find_by_key(RQWorker.redis_worker_namespace_prefix + name, connection=conn)
    assert worker is not None
    return worker.successful_job_count, worker.failed_job_count, worker.total_working_time > 0


def nothing_in_flight(conn: redis.Redis, queue: str, worker_name: str) -> None:
    """No started job, execution record or job in transit is left behind."""
    assert StartedJobRegistry(queue, connection=conn).get_job_count(cleanup=False) == 0
    assert conn.llen(f"rq:queue:{queue}:intermediate") == 0
    assert conn.scard(f"rq:worker:{worker_name}:executions") == 0
    assert not list(conn.scan_iter("rq:execution:*"))


def enqueue_basics(queue: Queue) -> dict[str, Job]:
    return {
        "adds": queue.enqueue(operator.add, 2, 3),
        "fails": queue.enqueue(math.sqrt, -1),
        "knows itself": queue.enqueue(jobfuncs.current_job_id),
    }


def test_success_and_failure_leave_the_records_rq_leaves(lab, rq_connection):
    fast_jobs = enqueue_basics(lab.queue(FAST))
    plain_jobs = enqueue_basics(lab.queue(PLAIN))
    name = fast_worker(lab)
    plain = run_in_process(SimpleWorker, rq_connection)
    wait_for(lambda: all(status(lab, j) in ("finished", "failed") for j in fast_jobs.values()), 10, "the jobs")

    for key in fast_jobs:
        fast, rq = records(lab, fast_jobs[key], name), records(lab, plain_jobs[key], plain.name)
        if key == "knows itself":  # each returns its own id
            assert (fast.pop("return value"), rq.pop("return value")) == (fast_jobs[key].id, plain_jobs[key].id)
        assert fast == rq, key
        assert footprint(lab.connection, fast_jobs[key]) == footprint(lab.connection, plain_jobs[key]), key

    adds = records(lab, fast_jobs["adds"], name)
    assert adds["status"] == "finished" and adds["result"] == "SUCCESSFUL" and adds["return value"] == 5
    assert adds["registries"] == ["finished"] and adds["worker_name is the worker's"]
    fails = records(lab, fast_jobs["fails"], name)
    assert fails["status"] == "failed" and fails["registries"] == ["failed"]
    assert fails["exception"] == "ValueError: math domain error"
    assert fast_jobs["adds"].latest_result().return_value == 5, "the enqueuer's Job object reads the result"

    wait_for(lambda: lab.connection.hget(f"rq:worker:{name}", "state") == b"idle", 5, "the worker to be idle")
    assert worker_counts(lab.connection, name) == worker_counts(lab.connection, plain.name) == (2, 1, True)
    nothing_in_flight(lab.connection, FAST, name)


def test_result_ttl_and_failure_ttl_as_rq(lab, rq_connection):
    def enqueue(queue: Queue) -> dict[str, Job]:
        return {
            "discarded": queue.enqueue(operator.add, 1, 1, result_ttl=0),
            "kept": queue.enqueue(operator.add, 1, 2, result_ttl=100),
            "failed": queue.enqueue(math.sqrt, -1, failure_ttl=200),
        }

    fast_jobs, plain_jobs = enqueue(lab.queue(FAST)), enqueue(lab.queue(PLAIN))
    fast_worker(lab)
    run_in_process(SimpleWorker, rq_connection)
    wait_for(lambda: status(lab, fast_jobs["failed"]) == "failed", 10, "the jobs")

    conn = lab.connection
    for jobs, queue in ((fast_jobs, FAST), (plain_jobs, PLAIN)):
        assert not Job.exists(jobs["discarded"].id, connection=conn), "result_ttl=0 deletes the job"
        assert jobs["discarded"].id not in FinishedJobRegistry(queue, connection=conn)
        assert jobs["kept"].id in FinishedJobRegistry(queue, connection=conn)
        assert 90 <= conn.ttl(jobs["kept"].key) <= 100
        assert 90 <= conn.ttl(Result.get_key(jobs["kept"].id)) <= 100
        assert 190 <= conn.ttl(jobs["failed"].key) <= 200
        assert 190 <= conn.ttl(Result.get_key(jobs["failed"].id)) <= 200


def test_timeout_fails_the_job_as_rq(lab, rq_connection):
    fast_job = lab.queue(FAST).enqueue(time.sleep, 5, job_timeout=1)
    plain_job = lab.queue(PLAIN).enqueue(time.sleep, 5, job_timeout=1)
    name = fast_worker(lab)
    plain = run_in_process(SimpleWorker, rq_connection)
    wait_for(lambda: status(lab, fast_job) == "failed", 10, "the timeout")
    fast, rq = records(lab, fast_job, name), records(lab, plain_job, plain.name)
    assert fast == rq
    assert fast["exception"] == "rq.timeouts.JobTimeoutException: Task exceeded maximum timeout value (1 seconds)"


def test_dependencies_run_as_with_rq(lab, rq_connection):
    def enqueue(queue: Queue) -> dict[str, Job]:
        jobs = {"a": queue.enqueue(operator.add, 1, 1)}
        jobs["b"] = queue.enqueue(operator.add, 2, 2, depends_on=jobs["a"])
        jobs["c"] = queue.enqueue(operator.add, 3, 3, depends_on=jobs["b"])
        jobs["x"] = queue.enqueue(math.sqrt, -1)
        jobs["after x"] = queue.enqueue(operator.add, 4, 4, depends_on=jobs["x"])
        jobs["x2"] = queue.enqueue(math.sqrt, -2)
        anyway = Dependency(jobs["x2"], allow_failure=True)
        jobs["after x2 anyway"] = queue.enqueue(operator.add, 5, 5, depends_on=anyway)
        return jobs

    fast_jobs, plain_jobs = enqueue(lab.queue(FAST)), enqueue(lab.queue(PLAIN))
    name = fast_worker(lab)
    plain = run_in_process(SimpleWorker, rq_connection)
    wait_for(lambda: status(lab, fast_jobs["c"]) == "finished", 10, "the end of the chain")
    wait_for(lambda: status(lab, fast_jobs["after x2 anyway"]) == "finished", 10, "the dependent allowed to run")

    for key in fast_jobs:
        if key == "after x":  # never ran
            assert status(lab, fast_jobs[key]) == status(lab, plain_jobs[key]) == "deferred"
            continue
        assert records(lab, fast_jobs[key], name) == records(lab, plain_jobs[key], plain.name), key
    chain = [fetch(lab, fast_jobs[k]) for k in ("a", "b", "c")]
    assert chain[0].ended_at <= chain[1].started_at and chain[1].ended_at <= chain[2].started_at
    assert fetch(lab, fast_jobs["after x2 anyway"]).latest_result().return_value == 10
    nothing_in_flight(lab.connection, FAST, name)


def test_dependent_added_while_its_parent_runs_is_enqueued(lab):
    """The parent started with no dependents; the one added meanwhile must run after it."""
    name = fast_worker(lab)
    queue = lab.queue(FAST)
    parent = queue.enqueue(jobfuncs.wait_for_signal, "tl:test:release")
    wait_for(lambda: status(lab, parent) == "started", 10, "the parent to start")
    child = queue.enqueue(operator.add, 20, 22, depends_on=parent)
    assert status(lab, child) == "deferred"
    lab.connection.rpush("tl:test:release", 1)
    wait_for(lambda: status(lab, child) == "finished", 10, "the dependent")
    assert fetch(lab, child).latest_result().return_value == 42
    assert fetch(lab, parent).ended_at <= fetch(lab, child).started_at
    nothing_in_flight(lab.connection, FAST, name)


def test_retry_with_an_interval_goes_through_the_scheduled_registry(lab):
    name = fast_worker(lab)
    queue = lab.queue(FAST)
    recovers = queue.enqueue(jobfuncs.fail_until, "tl:test:recovers", 1, retry=Retry(max=2, interval=2))
    gives_up = queue.enqueue(jobfuncs.fail_until, "tl:test:gives-up", 5, retry=Retry(max=1, interval=2))
    scheduled = ScheduledJobRegistry(FAST, connection=lab.connection)
    wait_for(lambda: recovers.id in scheduled and gives_up.id in scheduled, 10, "both jobs to wait for a retry")
    assert status(lab, recovers) == status(lab, gives_up) == "scheduled"

    wait_for(lambda: status(lab, recovers) == "finished", 15, "the retried job to succeed")
    assert fetch(lab, recovers).latest_result().return_value == 2
    assert fetch(lab, recovers).retries_left == 1
    wait_for(lambda: status(lab, gives_up) == "failed", 15, "the job to run out of retries")
    failed = records(lab, gives_up, name)
    assert failed["registries"] == ["failed"]
    assert failed["exception"] == "RuntimeError: attempt 2 fails on purpose"
    assert lab.connection.get("tl:test:gives-up") == b"2", "one run and one retry"
    nothing_in_flight(lab.connection, FAST, name)


def test_rate_limited_jobs_take_turns_and_free_their_slots(lab, rq_connection):
    limit = RateLimit("tl-test-fast", concurrency=1)
    fast_worker(lab, 2)
    jobs = [lab.queue(FAST).enqueue(time.sleep, 0.2, rate_limit=limit) for _ in range(3)]
    wait_for(lambda: all(status(lab, job) == "finished" for job in jobs), 15, "the rate-limited jobs")
    runs = sorted((job.started_at, job.ended_at) for job in (fetch(lab, job) for job in jobs))
    assert all(ended <= next_started for (_, ended), (next_started, _) in itertools.pairwise(runs))

    plain_limit = RateLimit("tl-test-plain", concurrency=1)
    plain_jobs = [lab.queue(PLAIN).enqueue(operator.add, i, i, rate_limit=plain_limit) for i in range(3)]
    run_in_process(SimpleWorker, rq_connection)
    assert all(status(lab, job) == "finished" for job in plain_jobs)
    for key in ("tl-test-fast", "tl-test-plain"):
        registry = RateLimitRegistry(key, connection=lab.connection)
        assert (registry.get_allowed_job_count(), registry.get_rate_limited_job_count()) == (0, 0), key


def test_back_to_back_jobs_run_in_order_and_leave_nothing_behind(lab):
    queue = lab.queue(FAST)
    with lab.connection.pipeline() as pipe:
        jobs = queue.enqueue_many([Queue.prepare_data(os.getpid) for _ in range(200)], pipeline=pipe)
        pipe.execute()
    name = fast_worker(lab)
    wait_for(lambda: status(lab, jobs[-1]) == "finished", 20, "200 jobs")
    fetched = [fetch(lab, job) for job in jobs]
    assert all(job.get_status() == "finished" for job in fetched)
    assert [job.id for job in sorted(fetched, key=lambda job: job.started_at)] == [job.id for job in jobs]
    wait_for(lambda: lab.connection.hget(f"rq:worker:{name}", "state") == b"idle", 5, "the worker to be idle")
    assert worker_counts(lab.connection, name) == (200, 0, True)
    assert FinishedJobRegistry(FAST, connection=lab.connection).get_job_count() == 200
    worker = RQWorker.find_by_key(RQWorker.redis_worker_namespace_prefix + name, connection=lab.connection)
    assert worker is not None and worker.last_heartbeat is not None
    assert (datetime.now(timezone.utc) - worker.last_heartbeat).total_seconds() < 5, "heartbeats, fewer but fresh"
    assert lab.connection.ttl(worker.key) > 60
    nothing_in_flight(lab.connection, FAST, name)


def run_burst_process(run_python, lab: tasklab.Lab, **work: object) -> str:
    """Run tasklab's Worker on FAST in burst mode in a process of its own; its name."""
    worker = run_python(
        "from rq import Queue; from tasklab.local.connection import make_client; "
        "from tasklab.code.serialization import Serializer; from tasklab.engine.worker import Worker; "
        f"c = make_client({lab.url!r}); q = Queue({FAST!r}, connection=c, serializer=Serializer); "
        f"w = Worker([q], connection=c, serializer=Serializer); w.work(burst=True, **{work!r}); print(w.name)"
    )
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    return out.strip()


def test_a_job_taken_with_the_last_commit_goes_back_when_the_worker_stops(lab, run_python):
    jobs = [lab.queue(FAST).enqueue(operator.add, i, i) for i in range(3)]
    # One job, then stop: the commit of the first job has already taken the second.
    name = run_burst_process(run_python, lab, max_jobs=1)
    assert status(lab, jobs[0]) == "finished"
    assert lab.queue(FAST).get_job_ids() == [jobs[1].id, jobs[2].id], "the next job is back at the head"
    assert status(lab, jobs[1]) == "queued"
    nothing_in_flight(lab.connection, FAST, name)


def test_a_worker_finds_rqs_maintenance_due_as_rq_does(lab, monkeypatch):
    """The worker works out when RQ's maintenance is next due once per maintenance, not twice a job: it is
    due at the first start, and again once ``maintenance_interval`` seconds have passed since the last."""
    from types import SimpleNamespace

    from tasklab.engine import worker as worker_module

    worker = worker_module.Worker([Queue("maintenance", connection=lab.connection)], connection=lab.connection,
                                  maintenance_interval=60)  # fmt: skip
    assert worker.should_run_maintenance_tasks
    worker.last_cleaned_at = datetime.now(timezone.utc) - timedelta(seconds=30)
    assert not worker.should_run_maintenance_tasks
    later = time.time() + 31  # the same maintenance, its interval passed since
    monkeypatch.setattr(worker_module, "time", SimpleNamespace(time=lambda: later))
    assert worker.should_run_maintenance_tasks
    monkeypatch.undo()
    worker.last_cleaned_at = datetime.now(timezone.utc) - timedelta(seconds=61)  # another, long ago
    assert worker.should_run_maintenance_tasks
    worker.last_cleaned_at = datetime.now(timezone.utc)
    assert not worker.should_run_maintenance_tasks


def test_rq_maintenance_fails_a_job_stuck_in_the_intermediate_queue(lab, run_python):
    """A job a dead worker took but never started: RQ's cleanup fails it, through this worker."""
    job = lab.queue(FAST).enqueue(os.getpid)
    queue_key = f"rq:queue:{FAST}"
    assert lab.connection.lmove(queue_key, f"{queue_key}:intermediate") == job.id.encode()
    first_seen = f"{queue_key}:intermediate:first_seen:{job.id}"
    lab.connection.set(first_seen, time.time() - 120)
    name = run_burst_process(run_python, lab)
    failed = records(lab, job, name)
    assert failed["status"] == "failed" and failed["registries"] == ["failed"]
    assert failed["exception"] == "Job was stuck in intermediate queue."
    nothing_in_flight(lab.connection, FAST, name)


def test_suspension_stops_the_worker_between_two_jobs(lab):
    name = fast_worker(lab)
    queue = lab.queue(FAST)
    first = queue.enqueue(jobfuncs.wait_for_signal, "tl:test:release")
    wait_for(lambda: status(lab, first) == "started", 10, "the first job to start")
    second = queue.enqueue(os.getpid)
    suspend(lab.connection)
    try:
        lab.connection.rpush("tl:test:release", 1)
        key = f"rq:worker:{name}"
        wait_for(lambda: lab.connection.hget(key, "state") == b"suspended", 10, "the worker to suspend")
        assert status(lab, first) == "finished"
        assert status(lab, second) == "queued" and queue.get_job_ids() == [second.id], "not taken"
    finally:
        resume(lab.connection)
    wait_for(lambda: status(lab, second) == "finished", 10, "the second job after resuming")


def holding_a_batch(lab: tasklab.Lab) -> tuple[str, Queue, Job, list[Job]]:
    """A worker of FAST running the first job of a batch (waiting for ``tl:test:release-batch``), with the
    rest of the batch held: taken by the commit of the job before, from a queue CLAIM_BATCH_DEPTH long. The
    worker's name, its queue, the running job and the jobs queued behind it."""
    name = fast_worker(lab)
    queue = lab.queue(FAST)
    first = queue.enqueue(jobfuncs.wait_for_signal, "tl:test:release-first")
    wait_for(lambda: status(lab, first) == "started", 10, "the first job to start")
    batch_head = queue.enqueue(jobfuncs.wait_for_signal, "tl:test:release-batch")
    rest = [queue.enqueue(os.getpid) for _ in range(defaults.CLAIM_BATCH_DEPTH)]
    lab.connection.rpush("tl:test:release-first", 1)
    wait_for(lambda: status(lab, batch_head) == "started", 10, "the batch's first job to start")
    return name, queue, batch_head, rest


def test_suspension_puts_back_the_jobs_a_worker_holds_from_a_batch(lab):
    """From a deep queue, the commit of a job takes a batch: the worker runs the first, and holds the
    rest in its claimed list, the next to run last. Suspended meanwhile, it puts them back at the head of
    their queue, in their order, before it waits: a suspended worker holds no job."""
    name, queue, batch_head, rest = holding_a_batch(lab)
    held = [job.id for job in rest[: defaults.CLAIM_BATCH - 1]]
    claimed = [i.decode() for i in lab.connection.lrange(keys.claimed_key(name), 0, -1)]
    assert claimed == held[::-1], "the batch's other jobs are held, the next to run last"
    suspend(lab.connection)
    try:
        lab.connection.rpush("tl:test:release-batch", 1)
        wait_for(lambda: lab.connection.hget(f"rq:worker:{name}", "state") == b"suspended", 10, "the worker to suspend")
        assert status(lab, batch_head) == "finished"
        assert queue.get_job_ids() == [job.id for job in rest], "the held jobs back at the head, in order"
        assert not lab.connection.exists(keys.claimed_key(name))
    finally:
        resume(lab.connection)
    wait_for(lambda: all(status(lab, job) == "finished" for job in rest), 10, "the jobs after resuming")


def test_a_job_cancelled_while_a_worker_holds_it_does_not_run(lab):
    """A job held from a batch longer than START_WRITTEN_AFTER, cancelled meanwhile, is dropped when the job
    before it ends: the commit of that one reads whether the next is still queued; the rest of the batch
    goes back to its queue."""
    name, _, _, rest = holding_a_batch(lab)
    held = rest[0]
    assert lab.connection.lindex(keys.claimed_key(name), -1) == held.id.encode(), "held, next to run"
    held.cancel()
    # What is tested is a job held longer than START_WRITTEN_AFTER, whose status its worker reads again.
    time.sleep(defaults.START_WRITTEN_AFTER * 2)
    lab.connection.rpush("tl:test:release-batch", 1)
    wait_for(lambda: all(status(lab, job) == "finished" for job in rest[1:]), 10, "the other jobs")
    assert status(lab, held) == "canceled", "not run"
    assert not lab.connection.exists(keys.claimed_key(name))


def test_warm_shutdown_finishes_the_job_and_leaves_the_next_queued(lab):
    pool = lab.workers(1, queues=[FAST])
    first_worker = pool.names[0]
    queue = lab.queue(FAST)
    first = queue.enqueue(jobfuncs.wait_for_signal, "tl:test:release")
    wait_for(lambda: status(lab, first) == "started", 10, "the first job to start")
    second = queue.enqueue(os.getpid)
    os.kill(pool.processes[0].pid, signal.SIGTERM)  # as the pool's stop() does
    lab.connection.rpush("tl:test:release", 1)
    wait_for(lambda: status(lab, first) == "finished", 10, "the first job")
    # The pool restarts the worker that left, and the new one runs the job left queued.
    wait_for(lambda: status(lab, second) == "finished", 15, "the second job")
    assert fetch(lab, first).worker_name == first_worker
    assert fetch(lab, second).worker_name != first_worker


def test_a_warm_shutdown_lets_a_task_run_with_its_start_unwritten_finish(lab):
    """A SIGTERM while a short task runs, its start unwritten: the task finishes and its success is recorded,
    then the worker leaves (RQ's warm shutdown), as for a task whose start is written."""
    pool = lab.workers(1, queues=[FAST])
    first = pool.processes[0]
    result = shipped_tasks.stops_its_worker.apply_async(queue=FAST)
    assert result.get(timeout=15) == "finished"
    assert fetch(lab, result.id).worker_name == first.name
    wait_for(lambda: not first.alive(), 10, "the worker asked to stop to leave")


def test_worker_job_reads_a_job_hash_as_rq_does(lab):
    """The worker's Job class parses dates its own (faster) way and reuses registries: same job."""
    queue = lab.queue(FAST)
    job = queue.enqueue(operator.add, 2, 3)
    raw = lab.connection.hgetall(job.key)
    raw[b"started_at"] = raw[b"ended_at"] = b"2026-01-02T03:04:05.678901Z"
    raw[b"last_heartbeat"] = b"2026-01-02T03:04:05Z"  # RQ's older format, without microseconds
    theirs = Job(job.id, connection=lab.connection, serializer=Serializer)
    theirs.restore(dict(raw))
    ours = WorkerJob(job.id, connection=lab.connection, serializer=Serializer)
    ours.restore(dict(raw))
    fields = ("created_at", "enqueued_at", "started_at", "ended_at", "last_heartbeat", "origin", "timeout", "meta")
    assert {f: getattr(ours, f) for f in fields} == {f: getattr(theirs, f) for f in fields}
    assert ours.enqueued_at.tzinfo is not None and ours.started_at.microsecond == 678901
    assert (ours.args, ours.func_name) == (theirs.args, theirs.func_name)
    assert ours.serializer is theirs.serializer is Serializer

    other = WorkerJob(job.id, connection=lab.connection, serializer=Serializer)
    other.restore(dict(raw))
    assert other.started_job_registry is ours.started_job_registry, "built once per queue"
    assert ours.started_job_registry.key == theirs.started_job_registry.key
    assert ours.finished_job_registry.key == theirs.finished_job_registry.key


def test_a_short_task_runs_with_its_start_unwritten_and_leaves_the_records_rq_leaves(lab, rq_connection):
    """A task that ends within START_WRITTEN_AFTER is recorded by one commit, its start with its end:
    while it runs, its job is still queued in Redis; once done, its records are those RQ's own
    SimpleWorker leaves for the same task, and its history row says where it ran."""
    results = shipped_tasks.own_status.starmap_async([()] * 20, queue=FAST)
    name = fast_worker(lab)  # each job is taken by a script: the first by a look for one, then by commits
    assert results.get(timeout=20) == [("queued", False)] * 20, "its start was not written while it ran"
    fast = results[0]
    plain = shipped_tasks.own_status.apply_async(queue=PLAIN)
    rq_worker = run_in_process(SimpleWorker, rq_connection)
    assert plain.get(timeout=5) == ("started", False), "RQ's worker writes the start first"
    ours, theirs = records(lab, fast.id, name), records(lab, plain.id, rq_worker.name)
    assert (ours.pop("return value"), theirs.pop("return value")) == (("queued", False), ("started", False))
    assert ours == theirs and ours["status"] == "finished" and ours["executions left"] == 0
    ours, theirs = footprint(lab.connection, fetch(lab, fast.id)), footprint(lab.connection, fetch(lab, plain.id))
    assert ours["keys"] == theirs["keys"]
    # RQ's worker writes the whole hash again at the end, adding the empty fields of a job that has no
    # callbacks nor group (as tasklab submits it); tasklab's writes only what changed. A short task's
    # job has no heartbeat, which nothing reads once the job has ended (70 bytes a job).
    extra = set(theirs["job fields"]) - set(ours["job fields"])
    assert set(ours["job fields"]) <= set(theirs["job fields"]) and "last_heartbeat" in extra
    extra.remove("last_heartbeat")
    assert {field: lab.connection.hget(f"rq:job:{plain.id}", field) for field in extra} == dict.fromkeys(extra, b"")
    # Held for a moment (TOTALS_HELD), and written at the latest as the worker goes idle.
    wait_for(lambda: worker_counts(lab.connection, name) == (20, 0, True), 5, "the worker's counts")
    nothing_in_flight(lab.connection, FAST, name)
    assert not lab.connection.llen(f"tasklab:claimed:{name}"), "no claim left behind"
    rows = lab.history().set_index("task_id")
    row = rows.loc[fast.id]
    assert (row["state"], row["queue"], row["worker"]) == ("SUCCESS", FAST, name)
    assert row["version"] == rows.loc[plain.id, "version"] and isinstance(row["version"], str)
    assert row["submitted_at"] <= row["started_at"] <= row["finished_at"]


def test_a_task_that_runs_on_is_started_within_moments(lab):
    """A task still running START_WRITTEN_AFTER seconds after it began gets its start written then,
    dated when it began: STARTED in Redis, in RQ's started registry, and in the history."""
    fast_worker(lab)
    result = shipped_tasks.own_status.apply_async(("t:gate",), queue=FAST)
    job = fetch(lab, result.id)
    wait_for(lambda: status(lab, job) == "started", defaults.START_WRITTEN_AFTER + 2, "its start")
    assert result.state == "STARTED"
    assert job.id in StartedJobRegistry(FAST, connection=lab.connection)
    (running,) = lab.history().to_dict("records")
    assert running["state"] == "STARTED"
    lab.connection.lpush("t:gate", "go")
    assert result.get(timeout=10) == ("started", False), "it reads its status after its start was written"
    job = fetch(lab, result.id)
    assert job.get_status() == "finished" and not job.get_executions()
    assert job.started_at < job.ended_at
    (row,) = lab.history().to_dict("records")
    assert row["state"] == "SUCCESS"
    assert abs(row["started_at"].timestamp() - job.started_at.timestamp()) < 0.01, "dated when it began"


def test_counts_held_by_a_worker_are_written_while_a_long_task_runs(lab):
    """A worker holds its counts for a moment (TOTALS_HELD) and writes them with a commit; a long task
    taken by the last short one's commit does not hold them back: they go with its start."""
    short = shipped_tasks.own_status.starmap_async([()] * 5, queue=FAST)
    long = shipped_tasks.own_status.apply_async(("t:long",), queue=FAST)
    name = fast_worker(lab)
    assert short.get(timeout=10)
    counts = lambda: lab.connection.hget(f"rq:worker:{name}", "successful_job_count")  # noqa: E731
    wait_for(lambda: counts() == b"5", defaults.START_WRITTEN_AFTER + 3, "the counts of the tasks done")
    assert long.state == "STARTED"
    lab.connection.lpush("t:long", "go")
    assert long.get(timeout=10)
    wait_for(lambda: counts() == b"6", 5, "the long task's count")


def test_the_worker_reloads_its_script_after_a_script_flush(lab):
    fast_worker(lab)
    assert shipped_tasks.add.apply_async((1, 2), queue=FAST).get(timeout=10) == 3
    lab.connection.script_flush()
    assert shipped_tasks.add.apply_async((3, 4), queue=FAST).get(timeout=10) == 7
    assert lab.connection.hget(f"rq:worker:{lab.workers().names[0]}", "state") is not None


def test_tasklab_tasks_on_a_plain_rq_worker_record_their_output_and_outcome(lab, rq_connection):
    result = shipped_tasks.chatty.apply_async(("hi",), queue=PLAIN)
    run_in_process(SimpleWorker, rq_connection)
    assert result.get(timeout=5) == "hi"
    assert result.output == "chatty says hi\n"
    (row,) = lab.history().query("task_id == @result.id").to_dict("records")
    assert (row["state"], row["worker"]) == ("SUCCESS", result._job().worker_name)
    assert row["started_at"] <= row["finished_at"]


def test_a_job_deleted_while_it_runs_stays_deleted(lab):
    name = fast_worker(lab)
    job = lab.queue(FAST).enqueue(jobfuncs.wait_for_signal, "t:release")
    wait_for(lambda: status(lab, job) == "started", 10, "the job to start")
    job.delete()
    lab.connection.lpush("t:release", "go")
    wait_for(lambda: lab.connection.hget(f"rq:worker:{name}", "state") == b"idle", 10, "the worker to finish")
    assert not lab.connection.exists(job.key), "its end did not bring back a part of its hash"
    assert lab.queue(FAST).enqueue(operator.add, 1, 1).latest_result(timeout=10).return_value == 2


def test_a_result_too_large_for_a_script_call_is_stored(lab):
    fast_worker(lab)
    size = 5 * 1024 * 1024
    assert len(shipped_tasks.big.apply_async((size,), queue=FAST).get(timeout=20)) == size
    assert shipped_tasks.add.apply_async((2, 2), queue=FAST).get(timeout=10) == 4, "and the worker goes on"
