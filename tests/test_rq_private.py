"""RQ's internals that tasklab relies on (tasklab/engine/rq_private.py): the versions they were
checked against, and the names themselves, so that an RQ upgrade fails here first and clearly."""

from __future__ import annotations

import pytest
import redis
import rq
from rq import Queue
from rq.job import Job
from rq.scheduler import RQScheduler
from rq.worker import SimpleWorker

import tasklab
from tasklab.engine import rq_private


def test_the_installed_rq_is_one_tasklab_was_checked_against():
    assert rq.VERSION in rq_private.CHECKED
    rq_private.check_rq_version()


@pytest.mark.parametrize("version", ["3.1.0", "4.0.0", "2.6.1", "nonsense"])
def test_another_rq_is_refused_with_the_fix(version):
    with pytest.raises(tasklab.ConfigurationError, match=rf"RQ {version} is installed.*pip install 'rq>=3.0,<3.1'"):
        rq_private.check_rq_version(version)


def test_the_private_names_still_exist(lab):
    queue = Queue("private-names", connection=lab.connection)
    worker = SimpleWorker([queue], connection=lab.connection)
    assert [q.name for q in rq_private.ordered_queues(worker)] == ["private-names"]
    rq_private.set_state_locally(worker, "busy")
    assert worker.get_state() == "busy"
    assert hasattr(worker, "_stopped_job_id")
    job = queue.create_job("os.getcwd")
    assert callable(job._handle_success) and hasattr(job, "_result")
    scheduler = RQScheduler([queue], connection=lab.connection)
    assert hasattr(scheduler, "_scheduled_job_registries")
    with lab.connection.pipeline() as pipe:
        pipe.set("k", 1)
        assert rq_private.queued_commands(pipe) == [("SET", "k", 1)]
        assert not rq_private.is_watching(pipe)
        assert [args for args, _ in rq_private.take_queued_commands(pipe)] == [("SET", "k", 1)]
        assert rq_private.queued_commands(pipe) == []
    assert rq_private.executions_key("w") == worker.executions_key.replace(worker.name, "w")
    assert rq_private.worker_key(worker.name) == worker.key
    assert rq_private.job_id_of_execution(b"job-1:exec-2") == "job-1"
    assert isinstance(lab.connection, redis.Redis) and Job.key_for("x") == "rq:job:x"
