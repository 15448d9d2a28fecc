"""RQ's internals that tasklab relies on (tasklab/engine/rq_private.py): the versions they were
checked against, and the names themselves, so that an RQ upgrade fails here first and clearly."""

from __future__ import annotations

import inspect
from datetime import datetime, timedelta, timezone

import pytest
import rq
from rq import Queue
from rq.scheduler import RQScheduler
from rq.worker import SimpleWorker

import tasklab
from tasklab.engine import rq_private
from tasklab.engine.queue import PreciseScheduledJobRegistry


def test_the_installed_rq_is_one_tasklab_was_checked_against():
    assert rq.VERSION in rq_private.CHECKED
    rq_private.check_rq_version()


@pytest.mark.parametrize("version", ["3.1.0", "4.0.0", "2.6.1", "nonsense"])
def test_another_rq_is_refused_with_the_fix(version):
    with pytest.raises(tasklab.ConfigurationError, match=rf"RQ {version} is installed.*pip install 'rq>=3.0,<3.1'"):
        rq_private.check_rq_version(version)


def test_the_private_names_still_do_what_tasklab_relies_on(lab):
    queue = Queue("private-names", connection=lab.connection)
    worker = SimpleWorker([queue], connection=lab.connection)
    worker.register_birth()
    assert [q.name for q in rq_private.ordered_queues(worker)] == ["private-names"]
    rq_private.set_state_locally(worker, "busy")
    assert worker.get_state() == "busy" and lab.connection.hget(worker.key, "state") != b"busy"
    with lab.connection.pipeline() as pipe:
        rq_private.state_write(pipe, worker, "idle")
        pipe.execute()
    worker.set_state("suspended")  # RQ's own write lands in the same field
    assert lab.connection.hget(worker.key, "state") == b"suspended"
    assert hasattr(worker, "_stopped_job_id")  # revoke(terminate=True)'s tests check what RQ does with it

    job = queue.create_job("os.getcwd")
    execution = {"worker_name", "execution_id", "execution_started_at", "execution_ended_at"}
    assert execution <= set(inspect.signature(job._handle_success).parameters)
    job._result = "returned"
    assert rq_private.return_value(job) == "returned"

    # The scheduler enqueues from the registries it is given.
    due = queue.create_job("os.getcwd")
    due.save()
    registry = PreciseScheduledJobRegistry("private-names", connection=lab.connection)
    registry.schedule(due, datetime.now(timezone.utc) - timedelta(seconds=1))
    scheduler = RQScheduler([queue], connection=lab.connection)
    rq_private.use_scheduled_registries(scheduler, [registry])
    scheduler.enqueue_scheduled_jobs()
    assert queue.get_job_ids() == [due.id]

    with lab.connection.pipeline() as pipe:
        pipe.set("k", 1)
        assert rq_private.queued_commands(pipe) == [("SET", "k", 1)]
        assert not rq_private.is_watching(pipe)
        assert [args for args, _ in rq_private.take_queued_commands(pipe)] == [("SET", "k", 1)]
        assert rq_private.queued_commands(pipe) == []
    assert rq_private.executions_key(worker.name) == worker.executions_key
    assert rq_private.worker_key(worker.name) == worker.key
    assert rq_private.job_id_of_execution(b"job-1:exec-2") == "job-1"
    worker.register_death()


@pytest.mark.parametrize("worker_name", ["w1", ""])
def test_start_execution_queues_what_rqs_start_of_a_job_queues(lab, monkeypatch, worker_name):
    """rq_private.start_execution stands for RQ's Execution.create and Job.prepare_for_execution:
    the same commands, for the same moment and execution id."""
    import uuid

    from rq import executions, utils
    from rq import job as rq_job
    from rq.executions import Execution
    from rq.job import Job

    moment = datetime(2026, 12, 2, 17, 0, 0, 123456, tzinfo=timezone.utc)
    for module in (executions, rq_job, utils, rq_private):
        monkeypatch.setattr(module, "now", lambda: moment)
    fixed = uuid.UUID("12345678123456781234567812345678")
    monkeypatch.setattr(executions, "uuid4", lambda: fixed)
    monkeypatch.setattr(rq_private, "execution_id", lambda: fixed.hex)

    def queued(start) -> tuple[list, dict]:
        job = Job.create(print, connection=lab.connection, id="job-1", origin="io")
        with lab.connection.pipeline() as pipe:
            execution = start(job, pipe)
            commands = rq_private.queued_commands(pipe)
        state = (execution.id, execution.job_id, execution.created_at, execution.worker_name)
        return commands, {"job": (job.worker_name, job.started_at, job.last_heartbeat, job._status), "exe": state}

    def rqs(job, pipe):
        execution = Execution.create(job, 480, pipeline=pipe, worker_name=worker_name)
        job.prepare_for_execution(worker_name, pipeline=pipe)
        return execution

    theirs = queued(rqs)
    ours = queued(lambda job, pipe: rq_private.start_execution(job, 480, pipe, worker_name))
    assert [[_text(a) for a in c] for c in ours[0]] == [[_text(a) for a in c] for c in theirs[0]]
    assert ours[1] == theirs[1]


def test_execution_ids_look_like_rqs_and_do_not_repeat_when_a_task_seeds_random():
    import random
    import re

    ids, state = [], random.getstate()
    try:
        for _ in range(3):
            random.seed(7)  # as a task may, before each run
            ids.append(rq_private.execution_id())
    finally:
        random.setstate(state)  # later tests get random as they would have
    assert all(re.fullmatch("[0-9a-f]{32}", i) for i in ids) and len(set(ids)) == 3


def test_a_forked_child_makes_other_execution_ids_than_its_parent():
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then out at once, whatever happens
        try:
            os.write(write, rq_private.execution_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert len(child) == 32 and child != rq_private.execution_id()


@pytest.mark.parametrize("value", [None, 42, {"a": [1, 2]}])
@pytest.mark.parametrize("ttl", [86400, -1, None])
def test_save_success_and_end_execution_queue_what_rqs_finish_queues(lab, monkeypatch, value, ttl):
    """rq_private.save_success stands for Result(...).save, add_finished for FinishedJobRegistry.add, and
    end_execution for RQ's cleanup_execution: the same commands."""
    from types import SimpleNamespace

    from rq import registry
    from rq.executions import Execution, cleanup_execution
    from rq.job import Job
    from rq.registry import FinishedJobRegistry
    from rq.results import Result

    monkeypatch.setattr(registry, "current_timestamp", lambda: 1796000000)  # the same second for both
    monkeypatch.setattr(rq_private, "time", SimpleNamespace(time=lambda: 1796000000.5))

    from tasklab.code.serialization import ResultSerializer

    job = Job.create(print, connection=lab.connection, id="job-1", origin="io", serializer=ResultSerializer)
    execution = Execution("e1", job.id, lab.connection, worker_name="w1")
    started, ended = datetime(2026, 12, 2, tzinfo=timezone.utc), datetime(2026, 12, 2, 0, 0, 1, tzinfo=timezone.utc)

    class Worker:
        executions = {"e1": execution}

    def queued(write) -> list:
        with lab.connection.pipeline() as pipe:
            write(pipe)
            return [[_text(a) for a in command] for command in rq_private.queued_commands(pipe)]

    def rqs(pipe):
        result = Result(job_id=job.id, type=Result.Type.SUCCESSFUL, connection=lab.connection, return_value=value,
                        worker_name="w1", execution_id="e1", execution_started_at=started, execution_ended_at=ended,
                        serializer=ResultSerializer)  # fmt: skip
        result.save(ttl=ttl, pipeline=pipe)
        if ttl is not None:
            FinishedJobRegistry(job.origin, connection=lab.connection).add(job, ttl, pipe)
        cleanup_execution(Worker(), job, pipe, execution)

    def ours(pipe):
        rq_private.save_success(job, value, ttl, pipe, "w1", "e1", started, ended)
        if ttl is not None:
            rq_private.add_finished(job, ttl, pipe)
        rq_private.end_execution(job, execution, pipe)

    theirs_commands, ours_commands = queued(rqs), queued(ours)
    assert ours_commands == theirs_commands


def _text(arg: object) -> str:
    """A command's argument as Redis receives it, for comparing two ways of queuing the same command."""
    return arg.decode() if isinstance(arg, bytes) else str(arg)
