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
