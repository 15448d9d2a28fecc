"""Local worker processes: long-lived, scalable, restarted when they die, gone with their lab."""

from __future__ import annotations

import os
import signal

import pytest
from rq.worker import Worker as RQWorker

import tasklab
from tasklab import defaults

from .conftest import GATED, pid_alive, task_cell, wait_for


def registered(lab: tasklab.Lab) -> set[str]:
    return {w.name for w in RQWorker.all(connection=lab.connection)}


def test_workers_start_ready_and_registered(lab):
    pool = lab.workers(2)
    assert len(pool) == 2
    assert registered(lab) == set(pool.names), "workers(n) returns once every worker is registered"


def test_default_is_one_worker_per_cpu(lab):
    assert len(lab.workers()) == defaults.worker_count()


def test_worker_is_long_lived_and_runs_many_jobs_in_one_process(lab):
    (worker,) = lab.workers(1).processes
    queue = lab.queue()
    jobs = [queue.enqueue(os.getpid) for _ in range(5)]
    pids = {job.latest_result(timeout=10).return_value for job in jobs}
    assert pids == {worker.pid}, "no fork per job: every job runs in the worker process itself"


def test_scale_up_and_down(lab):
    pool = lab.workers(1)
    first = pool.processes[0]
    lab.workers(3)
    assert len(pool) == 3 and registered(lab) == set(pool.names)
    assert pool.processes[0] is first, "scaling up keeps the running workers"
    removed = pool.processes[1:]
    lab.workers(1)
    assert pool.names == [first.name]
    for w in removed:
        assert not w.alive()
    wait_for(lambda: registered(lab) == {first.name}, 5, "stopped workers to unregister")
    assert pool.restarts == 0, "workers stopped on purpose are not restarted"


def test_scheduler_runs_delayed_jobs(lab):
    lab.workers(1)
    job = lab.queue().enqueue_in(__import__("datetime").timedelta(seconds=0.5), os.getpid)
    assert job.get_status() == "scheduled"
    assert job.latest_result(timeout=10).return_value == lab.pool.processes[0].pid


@pytest.mark.slow
def test_killed_worker_is_restarted(lab):
    pool = lab.workers(2)
    victim = pool.processes[0]
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(lambda: pool.restarts == 1 and registered(lab) == set(pool.names), 10, "a replacement worker")
    assert victim.name not in registered(lab), "the dead worker's registration is removed"
    assert pool.processes[0].pid != victim.pid
    job = lab.queue().enqueue(os.getpid)
    assert job.latest_result(timeout=10).return_value in {w.pid for w in pool.processes}


def test_shutdown_stops_every_worker(server):
    lab = tasklab.connect(data_dir=server.data_dir)
    pids = [w.pid for w in lab.workers(2).processes]
    lab.shutdown()
    for pid in pids:
        assert not pid_alive(pid)
    with pytest.raises(tasklab.ConfigurationError, match="shut down"):
        lab.workers(1)


def test_worker_logs_are_readable(lab):
    pool = lab.workers(1)
    ok = lab.queue().enqueue(os.getpid)
    failed = lab.queue().enqueue("builtins.int", "not a number")
    assert failed.latest_result(timeout=10).type.name == "FAILED"
    assert ok.latest_result(timeout=10).type.name == "SUCCESSFUL"
    (text,) = lab.worker_logs(tail=None).values()
    assert pool.names[0] in text
    assert failed.id in text and "ValueError" in text, "a failure is logged with its traceback"
    assert ok.id not in text, "the lines RQ writes for every job are at DEBUG, below the worker's INFO"
    assert pool.processes[0].log_path.parent == lab.data_dir / "logs"


def test_queues_change_after_scaling_to_zero(lab):
    lab.workers(1)
    with pytest.raises(tasklab.ConfigurationError, match=r"lab\.workers\(0\) first"):
        lab.workers(1, queues=["other"])
    lab.workers(0)
    pool = lab.workers(1, queues=["other"])
    assert pool.queues == ["other"]
    assert lab.queue("other").enqueue(os.getpid).latest_result(timeout=10).return_value == pool.processes[0].pid


def test_bad_worker_count(lab):
    with pytest.raises(tasklab.WorkerError, match="whole number"):
        lab.workers(-1)


def test_a_long_task_keeps_its_worker_listed(shell, lab):
    """RQ renews a worker's record between jobs only: the lease thread renews it while a task runs,
    so a task longer than the record's TTL (RQ: 480 s) leaves its worker listed and settleable."""
    lab.workers(1)
    task_cell(shell, GATED)
    result = shell.user_ns["gated"].delay("gate:long")
    wait_for(lambda: result.state == "STARTED", 10, "the task to start")
    (name,) = lab.pool.names
    record, executions = f"rq:worker:{name}", f"rq:worker:{name}:executions"
    lab.connection.expire(record, 3)  # as if the task had run for all but 3 s of the record's TTL
    lab.connection.expire(executions, 3)
    wait_for(lambda: lab.connection.ttl(record) > 60 and lab.connection.ttl(executions) > 60, 2.5, "renewals")
    lab.connection.set("gate:long", 1)
    assert result.get(timeout=10) == "first attempt"
