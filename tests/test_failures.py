"""Retries, backoff, time limits: Celery's failure model on real workers."""

from __future__ import annotations

import itertools
import subprocess
import time

import pytest

import tasklab
from tasklab.engine import events

from .conftest import task_cell, wait_for

COUNTER = """
from rq import get_current_job

def _attempt_number(key):
    # Count attempts in Redis, so the test sees every attempt whichever worker ran it.
    return get_current_job().connection.incr(key)
"""


def test_autoretry_with_backoff_succeeds_after_failures(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        COUNTER
        + """
import time

def flaky(key, failures):
    n = _attempt_number(key)
    print("attempt", n, time.time())
    if n <= failures:
        raise ConnectionError(f"attempt {n} failed")
    return n
""",
        "--autoretry-for ConnectionError --max-retries 3 --retry-backoff 0.2 --no-retry-jitter",
    )
    result = shell.user_ns["flaky"].delay("flaky-1", 2)
    assert result.get(timeout=20) == 3
    assert result.retries == 2 and result.state == "SUCCESS"


def test_retries_run_out_with_the_last_exception(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        COUNTER
        + """
def always(key):
    raise ConnectionError(f"attempt {_attempt_number(key)} failed")
""",
        "--autoretry-for ConnectionError --max-retries 2 --retry-backoff 0.1",
    )
    result = shell.user_ns["always"].delay("always-1")
    with pytest.raises(ConnectionError, match="attempt 3 failed"):
        result.get(timeout=20)
    assert int(lab.connection.get("always-1")) == 3, "one try and two retries"
    assert result.retries == 2 and result.state == "FAILURE"


def test_backoff_delays_stay_within_their_bounds(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        """
import time
from rq import get_current_job

def stamped(key):
    get_current_job().connection.rpush(key, time.time())
    raise TimeoutError("still down")
""",
        "--autoretry-for TimeoutError --max-retries 3 --retry-backoff 0.25",
    )
    result = shell.user_ns["stamped"].delay("stamps")
    with pytest.raises(TimeoutError):
        result.get(timeout=30)
    stamps = [float(s) for s in lab.connection.lrange("stamps", 0, -1)]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(gaps) == 3
    interval = tasklab.defaults.SCHEDULER_INTERVAL
    for n, gap in enumerate(gaps):
        cap = 0.25 * 2**n
        assert 0 <= gap <= cap + interval + 0.25, f"retry {n + 1} came {gap:.3f} s later; its cap is {cap} s"


def test_hooks_count_retries_and_one_final_failure(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        """
import tasklab
from rq import get_current_job

class Counted(tasklab.Task):
    def on_retry(self, exc, task_id, args, kwargs, einfo):
        get_current_job().connection.incr(f"{task_id}:on_retry")
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        get_current_job().connection.incr(f"{task_id}:on_failure")
    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        get_current_job().connection.rpush(f"{task_id}:after_return", status)
""",
    )
    task_cell(shell, "def doomed():\n    raise KeyError('x')\n", "--base Counted --autoretry-for KeyError "
              "--max-retries 2 --retry-backoff 0.05")  # fmt: skip
    result = shell.user_ns["doomed"].delay()
    with pytest.raises(KeyError):
        result.get(timeout=20)
    assert int(lab.connection.get(f"{result.id}:on_retry")) == 2
    assert int(lab.connection.get(f"{result.id}:on_failure")) == 1, "on_failure runs once, for the final failure"
    assert lab.connection.lrange(f"{result.id}:after_return", 0, -1) == [b"FAILURE"], "not for a retry, as Celery"


def test_bound_retry_with_countdown_shows_retry_state(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        COUNTER
        + """
def patient(self, key):
    n = _attempt_number(key)
    if n == 1:
        raise self.retry(exc=ValueError("not yet"), countdown=1.5)
    return self.request.retries
""",
        "--bind",
    )
    result = shell.user_ns["patient"].delay("patient-1")
    wait_for(lambda: result.state == "RETRY", 10, "the RETRY state")
    assert result.eta is not None
    assert 0 < result.eta.timestamp() - time.time() <= 1.5
    assert result.get(timeout=10) == 1


def test_bound_retry_without_exc_raises_max_retries_exceeded(shell, lab):
    lab.workers(1)
    task_cell(shell, "def stubborn(self):\n    raise self.retry(countdown=0)\n", "--bind --max-retries 1")
    with pytest.raises(tasklab.MaxRetriesExceededError):
        shell.user_ns["stubborn"].delay().get(timeout=20)


def test_exceptions_not_listed_are_not_retried(shell, lab):
    lab.workers(1)
    task_cell(shell, COUNTER + "\ndef picky(key):\n    _attempt_number(key)\n    raise ValueError('no')\n",
              "--autoretry-for KeyError --max-retries 3 --retry-backoff 0.05")  # fmt: skip
    with pytest.raises(ValueError):
        shell.user_ns["picky"].delay("picky-1").get(timeout=10)
    assert int(lab.connection.get("picky-1")) == 1


def test_autoretry_for_class_based_tasks(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        COUNTER
        + """
import tasklab

class Fetch(tasklab.Task):
    autoretry_for = (ConnectionError,)
    max_retries = 2
    retry_backoff = 0.05

    def run(self, key):
        if _attempt_number(key) < 3:
            raise ConnectionError("down")
        return "fetched"
""",
    )
    result = shell.user_ns["Fetch"].delay("fetch-1")
    assert result.get(timeout=20) == "fetched"
    assert result.retries == 2


def test_autoretry_matches_subclasses_of_the_listed_classes(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        COUNTER
        + """
def reset(key):
    if _attempt_number(key) < 3:
        raise ConnectionResetError("reset by peer")  # a subclass of ConnectionError
    return "through"
""",
        "--autoretry-for ConnectionError --max-retries 2 --retry-backoff 0.05",
    )
    task_cell(
        shell,
        COUNTER
        + """
import tasklab

class Transient(Exception):
    pass

class Throttled(Transient):
    pass

class Polite(tasklab.Task):
    autoretry_for = (Transient,)
    max_retries = 2
    retry_backoff = 0.05

    def run(self, key):
        if _attempt_number(key) < 3:
            raise Throttled("slow down")
        return "through"
""",
    )
    result = shell.user_ns["reset"].delay("reset-1")
    assert result.get(timeout=20) == "through" and result.retries == 2
    polite = shell.user_ns["Polite"].delay("polite-1")
    assert polite.get(timeout=20) == "through" and polite.retries == 2, "a subclass defined beside the task"


def _retry_delays(lab, job_id):
    """The delays a worker chose before each retry of ``job_id``, from its RETRY events: when the
    attempt is to run again (``next``) less when the event was written (within a millisecond)."""
    retries = [events.decode(entry_id, fields) for entry_id, fields in lab.connection.xrange(events.STREAM)]
    retries = sorted((e for e in retries if e["e"] == "retry" and e["id"] == job_id), key=lambda e: int(e["n"]))
    return [float(e["next"]) - float(e["ts"]) for e in retries]


def test_jitter_changes_the_backoff_delays_within_their_caps(shell, lab):
    lab.workers(2)
    body = COUNTER + "\ndef {name}(key):\n    raise ConnectionError(f'attempt {{_attempt_number(key)}}')\n"
    options = "--autoretry-for ConnectionError --max-retries 4 --retry-backoff 0.2"
    task_cell(shell, body.format(name="plain"), options + " --no-retry-jitter")
    task_cell(shell, body.format(name="jittered"), options)
    plain, jittered = shell.user_ns["plain"].delay("plain-1"), shell.user_ns["jittered"].delay("jittered-1")
    for result in (plain, jittered):
        with pytest.raises(ConnectionError, match="attempt 5"):
            result.get(timeout=30)
    caps = [0.2, 0.4, 0.8, 1.6]
    assert _retry_delays(lab, plain.id) == pytest.approx(caps, abs=0.02), "without jitter: the plain backoff"
    delays = _retry_delays(lab, jittered.id)
    assert len(delays) == 4 and all(-0.02 <= d <= cap + 0.02 for d, cap in zip(delays, caps, strict=True)), delays
    assert delays != pytest.approx(caps, abs=0.02), f"jitter left every delay at its cap: {delays}"
    # Over many draws: each delay is within [0, its cap], and the draws differ from each other.
    options_ = {"max_retries": 6, "retry_backoff": 1, "retry_backoff_max": 100}
    plain_schedule = tasklab.retry_schedule({**options_, "retry_jitter": False})
    assert plain_schedule == [1, 2, 4, 8, 16, 32]
    drawn = [tasklab.retry_schedule(options_, seed=seed) for seed in range(50)]
    assert all(0 <= d <= cap for schedule in drawn for d, cap in zip(schedule, plain_schedule, strict=True))
    assert len({tuple(schedule) for schedule in drawn}) == 50 and plain_schedule not in drawn


def test_retry_schedule_preview():
    options = {"autoretry_for": (IOError,), "max_retries": 5, "retry_backoff": True}
    planned = tasklab.retry_schedule(options, seed=1)
    assert planned == tasklab.retry_schedule(options, seed=1), "seeded: the same preview twice"
    assert len(planned) == 5
    assert all(0 <= delay <= min(600, 2**n) for n, delay in enumerate(planned))
    assert tasklab.retry_schedule({"max_retries": 3, "retry_backoff": 2, "retry_jitter": False}) == [2, 4, 8]
    assert tasklab.retry_schedule({"max_retries": 2}) == [180, 180], "Celery's default_retry_delay"
    capped = tasklab.retry_schedule({"max_retries": 12, "retry_backoff": True, "retry_jitter": False,
                                     "retry_backoff_max": 100})  # fmt: skip
    assert max(capped) == 100


def test_soft_time_limit_lets_the_task_clean_up(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        """
import time
import tasklab

def slow():
    try:
        while True:
            time.sleep(0.01)
    except tasklab.SoftTimeLimitExceeded:
        return "cleaned up"
""",
        "--soft-time-limit 0.3",
    )
    assert shell.user_ns["slow"].delay().get(timeout=10) == "cleaned up"


def test_hard_time_limit_fails_the_task(shell, lab):
    lab.workers(1)
    task_cell(shell, "import time\n\ndef forever():\n    while True:\n        time.sleep(0.01)\n", "--time-limit 0.3")
    started = time.monotonic()
    with pytest.raises(tasklab.TimeLimitExceeded):
        shell.user_ns["forever"].delay().get(timeout=10)
    assert time.monotonic() - started < 5


def test_time_limit_per_call(shell, lab):
    lab.workers(1)
    task_cell(shell, "import time\n\ndef nap(s):\n    time.sleep(s)\n    return s\n")
    with pytest.raises(tasklab.TimeLimitExceeded):
        shell.user_ns["nap"].apply_async((5,), time_limit=0.2).get(timeout=10)
    assert shell.user_ns["nap"].apply_async((0.01,), time_limit=5).get(timeout=10) == 0.01


SPAN = """
import time
from rq import get_current_job

def span(key, seconds):
    started = time.time()
    time.sleep(seconds)
    get_current_job().connection.rpush(key, f"{started} {time.time()}")
"""


def _spans(lab, key):
    return sorted(tuple(map(float, item.split())) for item in lab.connection.lrange(key, 0, -1))


def test_rate_limit_holds_across_workers(shell, lab):
    lab.workers(2)
    task_cell(shell, SPAN, "--rate-limit 5/s")
    results = shell.user_ns["span"].starmap_async([("rated", 0)] * 8)
    assert "RATE_LIMITED" in {r.state for r in results}, "jobs held back by the limit say so"
    results.get(timeout=30)
    starts = [start for start, _ in _spans(lab, "rated")]
    window = starts[-1] - starts[0]
    assert window >= 7 * 0.2 - tasklab.defaults.SCHEDULER_INTERVAL - 0.05
    assert (len(starts) - 1) / window <= 5 * 1.25, f"measured {(len(starts) - 1) / window:.2f} starts/s"


def test_concurrency_limit_allows_n_at_once(shell, lab):
    lab.workers(2)
    task_cell(shell, SPAN, "--concurrency-limit 1")
    results = shell.user_ns["span"].starmap_async([("serial", 0.15)] * 4)
    assert "RATE_LIMITED" in {r.state for r in results}
    results.get(timeout=30)
    spans = _spans(lab, "serial")
    assert len(spans) == 4
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end - 0.01, "two jobs of a concurrency_limit=1 task overlapped"


GATED = """
import os
from rq import get_current_job

def gated(gate):
    connection = get_current_job().connection
    connection.rpush(gate + ":started", os.getpid())
    connection.blpop(gate, timeout=30)  # released by the test: a synchronisation point, not a sleep
    return os.getpid()
"""


def _kill_running_worker(lab, gate):
    pid = int(lab.connection.blpop(f"{gate}:started", timeout=10)[1])
    (victim,) = [w for w in lab.pool.processes if w.pid == pid]
    lab.pool.kill(victim.name)
    return pid


@pytest.mark.slow
def test_worker_killed_during_a_run_fails_the_job(shell, lab):
    lab.workers(1)
    task_cell(shell, GATED)
    result = shell.user_ns["gated"].delay("gate-lost")
    _kill_running_worker(lab, "gate-lost")
    started = time.monotonic()
    with pytest.raises(tasklab.WorkerLostError, match="died"):
        result.get(timeout=10)
    assert time.monotonic() - started < 2, "worker loss is detected within the supervisor's bound"
    assert result.state == "FAILURE"
    assert not lab.queue().started_job_registry.get_job_ids(), "the job does not stay STARTED"


SELF_KILLING = """
import os
import signal
from rq import get_current_job

def dies(key):
    get_current_job().connection.incr(key)  # how many times it ran, anywhere
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("options, runs", [("", 1), ("--acks-late --max-retries 1", 2)])
def test_a_task_that_kills_its_worker_before_its_start_is_written_is_lost_with_it(shell, lab, options, runs):
    """A task that dies within START_WRITTEN_AFTER of its start (here at once) leaves its start unwritten:
    the job is still its dead worker's claim, and is settled as lost with the worker, as a started job is
    (requeued only under acks_late), not queued again as a job that never ran."""
    task_cell(shell, SELF_KILLING, options)
    result = shell.user_ns["dies"].delay("t:runs")  # queued first: the worker takes it by a script
    lab.workers(1)
    with pytest.raises(tasklab.WorkerLostError, match="died"):
        result.get(timeout=20)
    assert lab.connection.get("t:runs") == str(runs).encode(), "it ran once per attempt it was given"
    assert (result.state, result.retries) == ("FAILURE", runs - 1)
    assert list(lab.history(name="dies")["state"]) == ["LOST"] * runs
    assert not lab.connection.llen(f"rq:queue:{lab.queue().name}"), "nothing queued again"


@pytest.mark.slow
def test_acks_late_requeues_a_job_lost_with_its_worker(shell, lab):
    lab.workers(1)
    task_cell(shell, GATED, "--acks-late --max-retries 1")
    result = shell.user_ns["gated"].delay("gate-late")
    first_pid = _kill_running_worker(lab, "gate-late")
    second_pid = int(lab.connection.blpop("gate-late:started", timeout=10)[1])
    assert second_pid != first_pid, "the job ran again, on the restarted worker"
    lab.connection.rpush("gate-late", 1)
    assert result.get(timeout=10) == second_pid
    assert result.retries == 1, "the lost attempt counts as a retry"


@pytest.mark.slow
def test_acks_late_stops_after_max_retries(shell, lab):
    lab.workers(1)
    task_cell(shell, GATED, "--acks-late --max-retries 1")
    result = shell.user_ns["gated"].delay("gate-twice")
    _kill_running_worker(lab, "gate-twice")
    _kill_running_worker(lab, "gate-twice")
    with pytest.raises(tasklab.WorkerLostError):
        result.get(timeout=10)


@pytest.mark.slow
def test_hard_time_limit_kills_a_task_that_ignores_it(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        """
import time

def stubborn():
    while True:
        try:
            time.sleep(0.01)
        except Exception:
            pass  # swallows TimeLimitExceeded: the supervisor must step in
""",
        "--time-limit 0.3",
    )
    started = time.monotonic()
    with pytest.raises(tasklab.TimeLimitExceeded, match="worker was killed"):
        shell.user_ns["stubborn"].delay().get(timeout=15)
    assert time.monotonic() - started < 0.3 + tasklab.defaults.TIME_LIMIT_GRACE + 2
    wait_for(lambda: len(lab.pool) == 1 and lab.pool.processes[0].alive(), 10, "the worker to be restarted")


@pytest.mark.slow
@pytest.mark.parametrize("started", [False, True], ids=["at-once", "once-started"])
def test_revoke_terminate_stops_a_running_job(shell, lab, started):
    """Whether its start was written yet (a task revoked at once, within START_WRITTEN_AFTER) or not,
    the process running it is stopped, and the job is REVOKED."""
    task_cell(shell, GATED)
    result = shell.user_ns["gated"].delay("gate-terminate")  # queued first: taken by a script, start unwritten
    pool = lab.workers(1)
    lab.connection.blpop("gate-terminate:started", timeout=10)
    if started:
        wait_for(lambda: result.state == "STARTED", 5, "its start")
    result.revoke(terminate=True)
    with pytest.raises(tasklab.TaskRevokedError):
        result.get(timeout=10)
    assert result.state == "REVOKED"
    wait_for(lambda: pool.restarts == 1, 5, "the worker running it to be stopped (and restarted)")
    lab.connection.rpush("gate-terminate", 1)  # what it would do next, were it still running
    following = shell.user_ns["gated"].delay("gate-next")
    assert lab.connection.blpop("gate-next:started", timeout=10), "the restarted worker takes the next task"
    lab.connection.rpush("gate-next", 1)
    assert following.get(timeout=10) and result.state == "REVOKED"


def test_revoke_each_state(shell, lab):
    task_cell(shell, "def quick(x):\n    return x\n")
    quick = shell.user_ns["quick"]
    scheduled = quick.apply_async((1,), countdown=30)
    queued = quick.delay(2)
    scheduled.revoke()
    queued.revoke()
    assert scheduled.state == "REVOKED" and queued.state == "REVOKED"
    lab.workers(1)
    done = quick.delay(3)
    assert done.get(timeout=10) == 3
    with pytest.warns(tasklab.TaskLabWarning, match="only a job that has not finished"):
        done.revoke()
    assert done.state == "SUCCESS"
    assert lab.queue().scheduled_job_registry.get_job_ids() == []


def test_retry_countdown_is_kept_to_the_sub_second(shell, lab):
    lab.workers(1)
    task_cell(
        shell,
        """
import time
from rq import get_current_job

def punctual(self, key):
    connection = get_current_job().connection
    connection.rpush(key, time.time())
    if self.request.retries == 0:
        raise self.retry(countdown=0.6)
    return self.request.retries
""",
        "--bind",
    )
    assert shell.user_ns["punctual"].delay("punctual").get(timeout=10) == 1
    first, second = (float(t) for t in lab.connection.lrange("punctual", 0, -1))
    assert 0.6 <= second - first <= 0.6 + tasklab.defaults.SCHEDULER_INTERVAL + 0.3, f"retried after {second - first}"


@pytest.mark.slow
def test_killed_kernel_does_not_leave_its_jobs_started(tmp_path, run_python):
    from tasklab.local.server import EmbeddedServer

    data = tmp_path / "data"
    server = EmbeddedServer(data).start()  # our own lease keeps the server up after the kernel dies
    try:
        kernel = run_python(
            "import sys, tasklab\n"
            f"lab = tasklab.connect(data_dir={str(data)!r}, autostart_workers=False); lab.workers(1)\n"
            "ns = {}\n"
            "tasklab.register_cell('from rq import get_current_job\\n\\ndef hold(gate):\\n"
            "    get_current_job().connection.blpop(gate, timeout=60)\\n', ns, app=lab)\n"
            "print(ns['hold'].delay('never-opened').id, flush=True)\n"
            "sys.stdin.read()\n",
            stdin=subprocess.PIPE,
        )
        job_id = kernel.stdout.readline().strip()
        lab = tasklab.Lab(data_dir=data, autostart_workers=False)
        try:
            result = tasklab.AsyncResult(job_id, lab)
            wait_for(lambda: result.state == "STARTED", 15, "the job to start")
            kernel.kill()
            kernel.wait()
            with pytest.raises(tasklab.WorkerLostError, match="died while it ran"):
                result.get(timeout=10)
        finally:
            lab.shutdown()
    finally:
        server.stop()
