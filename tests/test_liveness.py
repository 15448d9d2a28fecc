"""Faults settle within seconds: real processes killed, frozen and restarted against a real Redis."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest
import redis
from rq.job import Job
from rq.results import Result
from rq.scheduler import RQScheduler

import tasklab
from tasklab import defaults
from tasklab.code.serialization import Serializer
from tasklab.engine import keys, leases, rq_private
from tasklab.local.server import find_redis_server

from .conftest import GATED, task_cell, wait_for

pytestmark = pytest.mark.slow


def scheduler_holder(lab, queue: str = "default") -> int | None:
    """The pid of the worker whose scheduler holds ``queue``'s lock, if one does."""
    name = lab.connection.get(RQScheduler.get_locking_key(queue))
    if name is None:
        return None
    pid = lab.connection.hget(RQScheduler.fetch(name.decode(), lab.connection).key, "pid")
    return int(pid) if pid else None


def test_a_killed_scheduler_holder_delays_a_countdown_by_seconds(shell, lab):
    pool = lab.workers(2)
    task_cell(shell, "def ping():\n    return 'pong'\n")
    holder = wait_for(lambda: scheduler_holder(lab), 10, "a scheduler to take the lock")
    assert holder in {w.pid for w in pool.processes}
    os.kill(holder, signal.SIGKILL)
    submitted = time.monotonic()
    result = shell.user_ns["ping"].apply_async(countdown=1)
    assert result.get(timeout=10) == "pong"
    assert time.monotonic() - submitted <= 3.0, "the countdown ran within 3 s although its scheduler died"
    assert scheduler_holder(lab) != holder


def freeze_the_worker_of(lab, pool, result) -> int:
    """SIGSTOP the worker process running ``result``'s job (a host cut off, or frozen); its pid."""
    wait_for(lambda: result.state == "STARTED", 10, "the task to start")
    name = Job.fetch(result.id, connection=lab.connection, serializer=Serializer).worker_name
    pid = next(w.pid for w in pool.processes if w.name == name)
    os.kill(pid, signal.SIGSTOP)
    return pid


def final_results(lab, job_id: str) -> list[str]:
    job = Job.fetch(job_id, connection=lab.connection, serializer=Serializer)
    finals = Result.all(job, serializer=Serializer)
    return [r.type.name for r in finals if r.type.name in ("SUCCESSFUL", "FAILED", "STOPPED")]


SLOW = "import time\n\ndef slow(seconds):\n    time.sleep(seconds)  # the task's work\n    return 'done'\n"


def outcomes(results, timeout: float) -> set[str]:
    """What each result ended as: its value, or ``"lost"`` for a WorkerLostError."""
    ended = set()
    for result in results:
        try:
            ended.add(result.get(timeout=timeout))
        except tasklab.WorkerLostError:
            ended.add("lost")
    return ended


def test_a_frozen_worker_s_job_fails_with_worker_lost_within_the_lease_and_stays_failed(shell, lab):
    pool = lab.workers(2)
    task_cell(shell, GATED)
    result = shell.user_ns["gated"].delay("gate-1")
    pid = freeze_the_worker_of(lab, pool, result)
    frozen = time.monotonic()
    try:
        with pytest.raises(tasklab.WorkerLostError, match="lease"):
            result.get(timeout=defaults.LEASE_TTL + 10)
        assert time.monotonic() - frozen <= defaults.LEASE_TTL + 2, "settled within the lease's TTL + 2 s"
    finally:
        os.kill(pid, signal.SIGCONT)
    lab.connection.set("gate-1", 1)  # the worker goes on, and its task returns: too late
    wait_for(lambda: "DUPLICATE" in set(lab.history(name="gated")["state"]), 10, "the duplicate")
    history = lab.history(name="gated")
    assert sorted(history["state"]) == ["DUPLICATE", "LOST"]
    assert final_results(lab, result.id) == ["FAILED"], "the first outcome stands"
    with pytest.raises(tasklab.WorkerLostError):
        tasklab.AsyncResult(result.id, lab).get(timeout=1)

    def both_registered():
        status = lab.status()  # this pool's workers (one of a test before may still be stopping)
        return status if len({w.name for w in status.workers} & set(pool.names)) == 2 else None

    status = wait_for(both_registered, 10, "the frozen worker to register again")
    ours = [w for w in status.workers if w.name in pool.names]
    assert all(w.lease_s is not None and 0 < w.lease_s <= defaults.LEASE_TTL for w in ours)
    assert "lease" in str(status)


def test_a_frozen_worker_s_acks_late_job_runs_again_elsewhere_to_one_outcome(shell, lab):
    pool = lab.workers(2)
    task_cell(shell, GATED)
    result = shell.user_ns["Requeued"].delay("gate-2")
    pid = freeze_the_worker_of(lab, pool, result)
    frozen = time.monotonic()
    try:
        assert result.get(timeout=defaults.LEASE_TTL + 10) == "requeued attempt"
        assert time.monotonic() - frozen <= defaults.LEASE_TTL + 2
        assert result.retries == 1, "the requeue counts as a retry"
    finally:
        os.kill(pid, signal.SIGCONT)
    lab.connection.set("gate-2", 1)
    wait_for(lambda: "DUPLICATE" in set(lab.history(name="Requeued")["state"]), 10, "the duplicate")
    assert final_results(lab, result.id) == ["SUCCESSFUL"], "one final outcome"
    assert tasklab.AsyncResult(result.id, lab).get(timeout=1) == "requeued attempt"


def test_a_job_stranded_in_rqs_intermediate_list_is_queued_again(shell, lab):
    task_cell(shell, "def ping():\n    return 'pong'\n")
    result = shell.user_ns["ping"].delay()  # no worker yet: it waits in its queue
    queue = lab.queue()
    # What a process that took the job the way RQ does, and died before starting it, leaves behind.
    assert lab.connection.lmove(queue.key, queue.intermediate_queue_key, "LEFT", "RIGHT") == result.id.encode()
    stranded = time.monotonic()
    lab.workers(1)
    assert result.get(timeout=defaults.LEASE_TTL + 10) == "pong"
    assert time.monotonic() - stranded <= defaults.LEASE_TTL + 2
    assert lab.connection.llen(queue.intermediate_queue_key) == 0 and result.retries == 0


def test_a_job_taken_by_a_worker_lost_before_it_started_it_is_queued_again(shell, lab):
    task_cell(shell, "def ping():\n    return 'pong'\n")
    result = shell.user_ns["ping"].delay()
    queue = lab.queue()
    # A worker on another host took the job into its claimed list, and was lost with its host.
    lab.connection.lmove(queue.key, keys.claimed_key("lost-host.1"), "LEFT", "RIGHT")
    lab.connection.zadd(leases.LEASES, {"lost-host.1": 0})  # its lease ran out long ago
    lost = time.monotonic()
    lab.workers(1)
    assert result.get(timeout=defaults.LEASE_TTL + 10) == "pong"
    assert time.monotonic() - lost <= defaults.LEASE_TTL + 2
    assert result.retries == 0, "it never ran, so no retry is counted"
    assert not lab.connection.exists(keys.claimed_key("lost-host.1"))
    assert "lost-host.1" not in {m.decode() for m in lab.connection.zrange(leases.LEASES, 0, -1)}


CHURN = """
import random
import time
import tasklab

class Short(tasklab.Task):
    acks_late = True  # a job lost with its worker runs again
    max_retries = None

    def run(self, i):
        time.sleep(random.uniform(0, 0.004))
        return i
"""


def test_workers_killed_at_random_points_lose_no_job_and_leave_none_stuck(shell, lab):
    pool = lab.workers(2)
    task_cell(shell, CHURN)
    results = shell.user_ns["Short"].map_async(range(8000))
    schedule = random.Random(20261202)  # the moments and victims of the kills, reproducible
    kills = 0
    while kills < 200:
        time.sleep(schedule.uniform(0.02, 0.2))  # the fault schedule, not a wait for anything
        victim = pool.processes[schedule.randrange(len(pool))]
        if victim.alive():
            os.kill(victim.pid, signal.SIGKILL)
            kills += 1
    assert results.get(timeout=120) == list(range(8000)), "every job reached its one outcome"
    queue = lab.queue()
    claimed = [key for pattern in (keys.claimed_key("*"), keys.handed_key("*"))
               for key in lab.connection.scan_iter(pattern) if lab.connection.llen(key)]  # fmt: skip
    assert (queue.count, queue.started_job_registry.count, claimed) == (0, 0, []), "nothing stuck"
    history = lab.history(name="Short")
    assert (history["state"] == "LOST").sum() >= 1, "some kills hit a running task"
    assert pool.restarts >= 200


def test_the_monitor_marks_a_worker_whose_lease_ran_out_and_status_settles_it(lab):
    from rq.worker import SimpleWorker

    from tasklab.widgets.monitor import Monitor

    ghost = SimpleWorker([lab.queue()], name="ghost-host.7", connection=lab.connection)
    ghost.register_birth()  # a worker on another host, whose lease ran out a moment ago
    lab.connection.zadd(leases.LEASES, {ghost.name: 0})
    rows = {row["name"]: row for row in Monitor(lab, plots=False).read()["workers"]}
    assert rows[ghost.name]["state"] == "lost"
    assert ghost.name not in {w.name for w in lab.status().workers}, "status settled and unregistered it"


COUNTED = """
from rq import get_current_job

def counted(key):
    get_current_job().connection.incr(key)  # how many times it ran, anywhere
    return "ran"
"""


def test_a_renewal_tells_a_lease_being_settled_from_a_held_one(lab):
    """A worker frozen past its lease, whose renewal comes while a settler holds the lease it took, is
    told so (the lease's epoch changes): a job it claimed before is started fenced, not run unwritten."""
    keeper = leases.LeaseKeeper(lab.connection, "renewing-host.1")
    try:
        keeper.renew()
        keeper.renew()
        assert keeper.epoch == 0, "held"
        lab.connection.zadd(leases.LEASES, {keeper.worker_name: 0})  # it ran out
        taken = dict(leases.take_expired(lab.connection))  # a settler takes it, and settles it now
        assert keeper.worker_name in taken
        keeper.renew()
        assert keeper.epoch == 1, "being settled"
        keeper.renew()
        assert keeper.epoch == 1, "held again"
    finally:
        keeper.stop()


def waiting_in_blmove(lab: tasklab.Lab) -> bool:
    """Whether a worker waits for a job, blocked in BLMOVE."""
    return any(c.get("cmd") == "blmove" and "b" in c.get("flags", "") for c in lab.connection.client_list())


def test_a_job_claimed_by_a_frozen_idle_worker_runs_once(shell, lab):
    pool = lab.workers(1)
    task_cell(shell, COUNTED)
    idle = pool.processes[0]

    wait_for(lambda: waiting_in_blmove(lab), 10, "the worker to block, waiting for a job")
    os.kill(idle.pid, signal.SIGSTOP)  # frozen in its wait: Redis still hands it the next job
    try:
        result = shell.user_ns["counted"].delay("runs")
        wait_for(lambda: lab.connection.llen(keys.handed_key(idle.name)), 10, "the job handed to the frozen worker")
        lab.workers(2)  # another worker finds the lease run out and queues the job again
        assert result.get(timeout=defaults.LEASE_TTL + 10) == "ran"
    finally:
        os.kill(idle.pid, signal.SIGCONT)
    # The resumed worker reads the job it was handed, and must not start it: it is no longer its claim.
    wait_for(lambda: "does not run it here" in lab.worker_logs(tail=None).get(idle.name, ""), 10, "its refusal")
    assert lab.connection.get("runs") == b"1"


def test_a_job_left_in_a_waiting_worker_s_list_goes_back_and_the_worker_goes_on(shell, lab):
    """A BLMOVE whose reply was lost (and which redis-py or the worker sent again) leaves a job in the
    list of jobs handed to the worker: the next job handed to it is then not the first there. Both go
    back to their queues, and the worker goes on taking jobs."""
    pool = lab.workers(1)
    task_cell(shell, COUNTED)
    name = pool.names[0]

    wait_for(lambda: waiting_in_blmove(lab), 10, "the worker to block, waiting for a job")
    elsewhere = lab.queue("served-by-none")  # not lab.submit: the local workers would serve it
    stale = elsewhere.enqueue(os.getpid)
    lab.connection.lmove(elsewhere.key, keys.handed_key(name), "LEFT", "RIGHT")
    result = shell.user_ns["counted"].delay("fresh")
    assert result.get(timeout=10) == "ran", "the worker goes on taking jobs"
    assert elsewhere.get_job_ids() == [stale.id], "back in its queue"
    assert not lab.connection.exists(keys.handed_key(name))


def test_a_job_claimed_beside_a_started_one_goes_back_when_its_worker_dies(shell, lab):
    """A worker runs one job at a time: when it dies running a job whose start is written, a job still in
    its claimed list (left there by a reply lost on the way) never began. It goes back to its queue; only
    the started one is lost."""
    pool = lab.workers(1)
    task_cell(shell, GATED)
    task_cell(shell, COUNTED)
    running = shell.user_ns["gated"].delay("t:gate-beside")
    wait_for(lambda: running.state == "STARTED", 10, "the long task's start")
    claimed = shell.user_ns["counted"].delay("t:beside")  # queued: the worker is busy
    assert lab.connection.lmove(lab.queue().key, keys.claimed_key(pool.names[0]), "LEFT", "RIGHT")
    pool.kill(pool.names[0])
    with pytest.raises(tasklab.WorkerLostError):
        running.get(timeout=10)
    assert claimed.get(timeout=10) == "ran", "queued again, and run by the restarted worker"
    assert (claimed.retries, lab.connection.get("t:beside")) == (0, b"1")


#: A task whose first run kills the worker process running it, mid-task (its start unwritten: it is short).
KILLS_ITS_WORKER = """
import os
import signal
from rq import get_current_job

def kills_its_worker(key):
    if get_current_job().connection.incr(key) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return "ran again"
"""


def behind_a_frozen_worker(lab, worker, shell, first_key: str, submit):
    """Freeze ``worker`` as it waits for a job, hand it a ``counted`` job (``first_key``), queue what
    ``submit()`` submits behind it, and let the worker go on: the commit of that first job claims a batch
    of what follows. The first job's result, and what ``submit()`` returned."""
    wait_for(lambda: waiting_in_blmove(lab), 10, "the worker to block, waiting for a job")
    os.kill(worker.pid, signal.SIGSTOP)  # frozen in its wait: the queue fills behind the job handed to it
    try:
        first = shell.user_ns["counted"].delay(first_key)
        wait_for(lambda: lab.connection.llen(keys.handed_key(worker.name)), 10, "the job handed to the worker")
        submitted = submit()
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    return first, submitted


def test_a_worker_lost_in_a_batch_settles_the_job_it_ran_and_queues_the_rest_again(shell, lab, caplog):
    """From a deep queue, a worker takes a batch with the commit of the job it finished. Killed while it
    runs the first job of the batch, that job is lost with it, as a single one is; the rest of the batch
    never ran: it goes back to its queue and runs once each."""
    pool = lab.workers(1)
    task_cell(shell, COUNTED)
    task_cell(shell, KILLS_ITS_WORKER)
    counted = shell.user_ns["counted"]

    def submit():
        killer = shell.user_ns["kills_its_worker"].delay("t:batch-killer")
        return killer, counted.map_async([f"t:batch-{i}" for i in range(defaults.CLAIM_BATCH_DEPTH)])

    first, (killer, rest) = behind_a_frozen_worker(lab, pool.processes[0], shell, "t:batch-first", submit)
    assert first.get(timeout=10) == "ran"
    with pytest.raises(tasklab.WorkerLostError):
        killer.get(timeout=defaults.LEASE_TTL + 10)
    assert lab.connection.get("t:batch-killer") == b"1", "lost, not run again"
    assert [r.get(timeout=10) for r in rest] == ["ran"] * len(rest)
    assert [lab.connection.get(f"t:batch-{i}") for i in range(len(rest))] == [b"1"] * len(rest), "each ran once"
    assert {r.retries for r in rest} == {0}
    requeued = [r.getMessage() for r in caplog.records if "queued again the jobs it had taken" in r.getMessage()]
    batch = [r.id for r in rest[: defaults.CLAIM_BATCH - 1]]
    assert any(all(job_id in line for job_id in batch) for line in requeued), (batch, requeued)


#: A task whose success hook waits for the test to open a gate (a Redis key).
HOOKED = """
import time
import tasklab
from rq import get_current_job

class Hooked(tasklab.Task):
    def run(self, gate):
        return "ran"

    def on_success(self, retval, task_id, args, kwargs):
        gate = args[0]
        connection = get_current_job().connection
        connection.set(gate + ":hooked", 1)
        while not connection.get(gate):
            time.sleep(0.02)
"""


def test_a_worker_holds_no_batch_while_a_success_hook_runs(shell, lab):
    """A success hook may take long, and a job held in the claimed list meanwhile would count as run if
    the worker died: the worker puts back the rest of its batch before the hook runs."""
    pool = lab.workers(1)
    task_cell(shell, COUNTED)
    task_cell(shell, HOOKED)
    worker, counted = pool.processes[0], shell.user_ns["counted"]

    def submit():
        hooked = shell.user_ns["Hooked"].delay("t:hook-gate")
        return hooked, counted.map_async([f"t:hook-{i}" for i in range(defaults.CLAIM_BATCH_DEPTH)])

    first, (hooked, rest) = behind_a_frozen_worker(lab, worker, shell, "t:hook-first", submit)
    assert first.get(timeout=10) == "ran"
    wait_for(lambda: lab.connection.get("t:hook-gate:hooked"), 10, "the success hook to run")
    assert hooked.state == "SUCCESS", "stored before its hook runs"
    assert lab.connection.llen(keys.claimed_key(worker.name)) == 0, "nothing held while the hook runs"
    assert lab.connection.llen(lab.queue().key) == len(rest), "the rest of the batch back in the queue"
    lab.connection.set("t:hook-gate", 1)
    assert [r.get(timeout=10) for r in rest] == ["ran"] * len(rest)


def test_a_long_task_keeps_its_execution_record_alive(shell, lab):
    lab.workers(1)
    task_cell(shell, GATED)
    result = shell.user_ns["gated"].delay("gate-long")
    wait_for(lambda: result.state == "STARTED", 10, "the task to start")
    worker = lab.status().workers[0].name
    (member,) = lab.connection.smembers(rq_private.executions_key(worker))
    job_id, execution_id = member.decode().split(":")
    key = f"rq:execution:{job_id}:{execution_id}"
    lab.connection.pexpire(key, 2500)  # as if the worker's heartbeat TTL were about to run out
    wait_for(lambda: lab.connection.ttl(key) > 60, 5, "the lease thread to renew the record")
    lab.connection.set("gate-long", 1)
    assert result.get(timeout=10) == "first attempt"


def test_a_killed_embedded_redis_is_started_again_and_its_jobs_settle(shell, tmp_path):
    # A server of its own: the session's is shared by the other tests.
    lab = tasklab.connect(data_dir=tmp_path / "own", autostart_workers=False)
    try:
        pool = lab.workers(2)
        task_cell(shell, SLOW)
        in_flight = [shell.user_ns["slow"].delay(1.0) for _ in range(2)]
        wait_for(lambda: all(r.state == "STARTED" for r in in_flight), 10, "the tasks to start")
        redis_pid = int(lab.connection.info("server")["process_id"])
        os.kill(redis_pid, signal.SIGKILL)
        killed = time.monotonic()
        # The next use finds the server dead and starts it again from its append-only file.
        again = shell.user_ns["slow"].delay(0)
        back = time.monotonic()
        assert int(lab.connection.info("server")["process_id"]) != redis_pid
        assert back - killed < 3, "started again within seconds"
        # The attempts that ran when Redis died end once: recorded by their worker, which rode the
        # outage out, or settled as lost if its lease ran out first.
        assert outcomes(in_flight, timeout=defaults.LEASE_TTL + 10) <= {"done", "lost"}
        assert time.monotonic() - back <= defaults.LEASE_TTL + 2
        assert again.get(timeout=20) == "done"
        assert "STARTED" not in set(lab.history(name="slow")["state"])
        wait_for(lambda: len(lab.status().workers) == len(pool), 10, "every worker back")
    finally:
        lab.shutdown()


def test_a_redis_that_does_not_answer_is_a_tasklab_error(shell, tmp_path):
    socket_path = tmp_path / "other.sock"
    other = subprocess.Popen(
        [find_redis_server(), "--port", "0", "--unixsocket", str(socket_path), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for(socket_path.exists, 10, "a Redis this lab does not start")
        lab = tasklab.connect(f"unix://{socket_path}", autostart_workers=False)
        task_cell(shell, "def ping():\n    return 'pong'\n")
        result = shell.user_ns["ping"].delay()
        other.kill()
        other.wait()
        with pytest.raises(tasklab.RedisUnreachable, match=r"does not answer.*Nothing was submitted"):
            shell.user_ns["ping"].delay()
        for read in (lambda: result.get(timeout=5), lambda: result.state, lambda: result.result):
            with pytest.raises(tasklab.RedisUnreachable, match=r"does not answer.*outcome is kept"):
                read()
        with pytest.raises(tasklab.RedisUnreachable):
            lab.status()
        with pytest.raises(tasklab.RedisUnreachable, match=r"does not answer.*history is kept"):
            lab.history()
        lab.shutdown()
    finally:
        other.kill()
        other.wait()


class ExternalRedis:
    """A redis-server this lab does not start (as a user's own), on a unix socket; killed and
    started again by the test, with its append-only file (``appendfsync always``) or with none."""

    def __init__(self, directory, aof: bool) -> None:
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.aof = aof
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> ExternalRedis:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        self.process = subprocess.Popen(
            [find_redis_server(), "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700",
             "--dir", str(self.directory), "--save", "", *persistence],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(unix_socket_path=str(self.socket))
        wait_for(lambda: _answers(client), 10, "the Redis to answer")
        client.close()
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.socket.unlink(missing_ok=True)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.BusyLoadingError):
        return False


@pytest.fixture
def external(tmp_path):
    servers: list[ExternalRedis] = []

    def make(aof: bool) -> ExternalRedis:
        server = ExternalRedis(tmp_path, aof).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        if server.process is not None and server.process.poll() is None:
            server.kill()


@pytest.mark.parametrize("outage", [0.0, defaults.LEASE_TTL + 1], ids=["brief", "longer-than-the-lease"])
def test_a_killed_external_redis_with_its_aof_settles_the_jobs_in_flight(shell, external, outage):
    server = external(aof=True)
    lab = tasklab.connect(server.url, autostart_workers=False)
    try:
        pool = lab.workers(2)
        task_cell(shell, SLOW)
        results = [shell.user_ns["slow"].delay(1.5) for _ in range(2)]
        wait_for(lambda: all(r.state == "STARTED" for r in results), 10, "both tasks to start")
        server.kill()
        time.sleep(outage)  # how long Redis stays down: the fault's length, not a wait for something
        server.start()
        back = time.monotonic()
        assert outcomes(results, timeout=defaults.LEASE_TTL + 10) <= {"done", "lost"}
        assert time.monotonic() - back <= defaults.LEASE_TTL + 2, "settled within the lease's TTL + 2 s"
        history = lab.history(name="slow")
        assert "STARTED" not in set(history["state"]), history
        assert lab.queue().started_job_registry.get_job_ids() == []
        wait_for(lambda: len(lab.status().workers) == len(pool), 10, "every worker back")
        assert shell.user_ns["slow"].delay(0).get(timeout=10) == "done"
    finally:
        lab.shutdown()


def test_a_redis_that_came_back_empty_gets_the_code_again_and_its_workers(shell, external):
    server = external(aof=False)
    lab = tasklab.connect(server.url, autostart_workers=False)
    try:
        pool = lab.workers(2)
        task_cell(shell, "def ping():\n    return 'pong'\n")
        assert shell.user_ns["ping"].delay().get(timeout=10) == "pong"
        server.kill()
        server.start()  # empty: no code, no workers, no leases
        assert shell.user_ns["ping"].delay().get(timeout=10) == "pong"
        wait_for(lambda: len(lab.status().workers) == len(pool), defaults.LEASE_TTL + 2, "every worker listed again")
    finally:
        lab.shutdown()


def test_a_worker_rides_out_an_outage_and_keeps_the_outcome_it_held(shell, external, tmp_path):
    server = external(aof=True)
    lab = tasklab.connect(server.url, data_dir=tmp_path / "lab", autostart_workers=False)
    try:
        pool = lab.workers(1)
        (pid,) = [w.pid for w in pool.processes]
        task_cell(shell, SLOW)
        result = shell.user_ns["slow"].delay(0.5)
        wait_for(lambda: result.state == "STARTED", 10, "the task to start")
        server.kill()
        time.sleep(1.0)  # the outage's length (shorter than the lease): the task ends meanwhile
        server.start()
        assert result.get(timeout=10) == "done", "the outcome held through the outage is recorded"
        assert [w.pid for w in pool.processes] == [pid], "the worker rode the outage out"
        assert shell.user_ns["slow"].delay(0).get(timeout=10) == "done"
        (log,) = lab.worker_logs(tail=None).values()
        assert "Traceback" not in log
        assert log.count("Worker") and log.count("Redis is unreachable") <= 3, log  # loop, lease, scheduler
        assert "Redis answers again" in log
    finally:
        lab.shutdown()


def test_due_jobs_go_to_one_scheduler_only_and_only_while_it_holds_the_lock(shell, lab):
    task_cell(shell, "def ping():\n    return 'pong'\n")
    result = shell.user_ns["ping"].apply_async(countdown=0.01)  # no worker runs: it stays scheduled
    lock = RQScheduler.get_locking_key("default")
    registry = lab.queue().scheduled_job_registry
    wait_for(lambda: registry.get_jobs_to_schedule(), 5, "the job to be due")
    lapsed, holder = registry, lab.queue().scheduled_job_registry
    lapsed.holder, holder.holder = ("frozen", lock), ("current", lock)
    lab.connection.set(lock, "current")  # the frozen scheduler's lock lapsed; another took it over
    assert lapsed.get_jobs_to_schedule() == []
    assert holder.get_jobs_to_schedule() == [result.id]
    assert holder.get_jobs_to_schedule() == [], "claimed: a second pass does not queue it again"
    due = lab.connection.zscore(registry.key, result.id)
    assert due > time.time() + defaults.SCHEDULER_CLAIM - 2, "due again later if its scheduler died"


FLAKY = """
import time
import tasklab

class Flaky(tasklab.Task):
    autoretry_for = (ValueError,)
    max_retries = 1
    default_retry_delay = 0

    def run(self, seconds):
        time.sleep(seconds)  # the task's work
        if self.request.retries == 0:
            raise ValueError("first attempt fails")
        return "retried"
"""


@pytest.mark.parametrize("stop", [False, True], ids=["running", "asked-to-stop"])
def test_an_outcome_held_through_an_outage_is_written_once(shell, external, tmp_path, stop):
    """A failure that asks for a retry, and a success while the worker is asked to stop, both
    ending while Redis is down: each is written once Redis is back, as it would have been."""
    server = external(aof=True)
    lab = tasklab.connect(server.url, data_dir=tmp_path / "lab", autostart_workers=False)
    try:
        pool = lab.workers(1)
        (pid,) = [w.pid for w in pool.processes]
        task_cell(shell, SLOW if stop else FLAKY)
        result = shell.user_ns["slow"].delay(0.5) if stop else shell.user_ns["Flaky"].delay(0.5)
        wait_for(lambda: result.state == "STARTED", 10, "the task to start")
        server.kill()
        if stop:
            os.kill(pid, signal.SIGTERM)  # a warm stop: after its job
        time.sleep(1.0)  # the outage's length (shorter than the lease): the attempt ends meanwhile
        server.start()
        assert result.get(timeout=15) == ("done" if stop else "retried")
        states = sorted(lab.history(name="slow" if stop else "Flaky")["state"])
        assert states == (["SUCCESS"] if stop else ["RETRY", "SUCCESS"]), states
    finally:
        lab.shutdown()
