"""The batch path of a submit: calls with nothing of their own but their arguments (a plain ``map``)
are written from a template of RQ's own hash, in one script call per batch (issue 14)."""

from __future__ import annotations

import os
import threading
import warnings
from datetime import datetime, timezone

import pytest
from rq import Queue
from rq.job import Job

import tasklab
from tasklab import defaults
from tasklab.client.submit import EXECUTE
from tasklab.code.serialization import Serializer
from tasklab.engine import events

CELL = "def add(x, y=0):\n    return x + y\n"

# Left out of the batch's hashes: RQ writes them as '' for a job not started yet, and reads a
# missing field as it reads ''.
EMPTY_UNTIL_STARTED = {
    b"success_callback_name", b"failure_callback_name", b"stopped_callback_name", b"started_at", b"ended_at",
    b"last_heartbeat", b"worker_name", b"group_id",
}  # fmt: skip


@pytest.fixture
def add(lab):
    warnings.simplefilter("ignore", tasklab.TaskLabWarning)  # no worker serves the queue until a test starts one
    return tasklab.register_cell(CELL, {}, app=lab)["add"]


def test_a_map_writes_the_hash_rq_writes(lab, add):
    results = add.map_async([1, 2, 3])
    ids = [r.id for r in results]
    conn = lab.connection
    queue = Queue("default", connection=conn, serializer=Serializer)
    assert queue.job_ids == ids, "queued in order, as RQ queues them"
    assert conn.sismember("rq:queues", queue.key)
    # RQ's own enqueue of the same call, for reference.
    ours = conn.hgetall(f"rq:job:{ids[1]}")
    reference = queue.enqueue_call(
        EXECUTE, args=(2,), timeout=-1, result_ttl=int(ours[b"result_ttl"]), failure_ttl=defaults.FAILURE_TTL,
        meta=Job.fetch(ids[1], connection=conn, serializer=Serializer).meta, description="add(2)",
    )  # fmt: skip
    theirs = conn.hgetall(reference.key)
    dated = {b"created_at", b"enqueued_at", b"data"}  # the dates differ; so does the signed payload's pickle
    assert {k: v for k, v in theirs.items() if k not in dated and v != b""} == {
        k: v for k, v in ours.items() if k not in dated
    }
    assert {k for k, v in theirs.items() if v == b""} == EMPTY_UNTIL_STARTED
    for job_id, x in zip(ids, [1, 2, 3], strict=True):
        job = Job.fetch(job_id, connection=conn, serializer=Serializer)  # RQ reads it whole
        assert (job.func_name, job.args, job.kwargs, job.get_status()) == (EXECUTE, (x,), {}, "queued")
        assert job.created_at == job.enqueued_at and job.origin == "default" and job.started_at is None
    entries = conn.xrange(events.STREAM)
    assert len(entries) == 1, "one SUBMITTED entry stands for the batch"
    submitted = [e for e in events.decode_all(entries) if e["e"] == events.SUBMITTED]
    assert [e["id"] for e in submitted] == ids and {e["t"] for e in submitted} == {"add"}
    assert list(lab.history(name="add")["task_id"]) == ids, "the history has a row per job of the batch"
    assert conn.hget(events.counts_key(lab.namespace), f"add|{events.SUBMITTED}") == b"3"
    lab.workers(1)
    assert results.get(timeout=20) == [1, 2, 3]


def test_each_submit_is_dated_when_it_is_made(lab, add):
    """The fields every job of a task shares are made once; each job's dates are its own submit's."""
    first = add.delay(1)
    between = datetime.now(timezone.utc)
    second = add.delay(2)
    jobs = [Job.fetch(r.id, connection=lab.connection, serializer=Serializer) for r in (first, second)]
    assert jobs[0].created_at <= between <= jobs[1].created_at
    assert [j.created_at for j in jobs] == [j.enqueued_at for j in jobs]
    assert jobs[0].meta == jobs[1].meta and jobs[0].result_ttl == jobs[1].result_ttl


def test_large_arguments_go_in_several_calls_and_all_run(lab, add):
    conn = lab.connection
    calls_before = conn.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    blob = os.urandom(defaults.SUBMIT_BATCH_BYTES // 2)  # random: compressing leaves it as large
    results = add.starmap_async([(blob, bytes([i])) for i in range(5)])
    calls = conn.info("commandstats")["cmdstat_evalsha"]["calls"] - calls_before
    assert calls >= 3, "about a megabyte per call: five half-megabyte payloads need three calls at least"
    assert Queue("default", connection=conn).count == 5
    lab.workers(1)
    assert results.get(timeout=30) == [blob + bytes([i]) for i in range(5)]


def test_a_bad_call_in_a_map_submits_nothing(lab, add):
    with pytest.raises(tasklab.TaskLabError, match=r"item 2"):
        add.map_async([1, 2, threading.Lock()])  # a lock cannot be pickled: item 2
    with pytest.raises(tasklab.TaskLabError, match="add"):
        add.starmap_async([(1,), (1, 2), (1, 2, 3)])  # too many arguments in the third
    assert Queue("default", connection=lab.connection).count == 0
    assert not lab.connection.exists(events.STREAM)


def test_lifetimes_queued_jobs_keep_finished_ones_expire(lab):
    """Queued jobs never expire (nor can the server evict them); finished ones are kept for their
    result_ttl, failed ones for FAILURE_TTL (RQ: a year)."""
    warnings.simplefilter("ignore", tasklab.TaskLabWarning)
    tasks = tasklab.register_cell(CELL + "def boom():\n    raise ValueError('no')\n", {}, app=lab)
    conn = lab.connection
    ok, bad = tasks["add"].delay(1), tasks["boom"].delay()
    assert conn.ttl(f"rq:job:{ok.id}") == -1 and conn.ttl(f"rq:job:{bad.id}") == -1, "queued: no expiry"
    lab.workers(1)
    assert ok.get(timeout=20) == 1
    with pytest.raises(ValueError):
        bad.get(timeout=20)
    result_ttl = defaults.TASK_OPTIONS["result_ttl"]
    assert result_ttl - 60 < conn.ttl(f"rq:job:{ok.id}") <= result_ttl
    assert result_ttl - 60 < conn.ttl(f"rq:results:{ok.id}") <= result_ttl
    assert defaults.FAILURE_TTL - 60 < conn.ttl(f"rq:job:{bad.id}") <= defaults.FAILURE_TTL
