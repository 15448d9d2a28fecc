"""Every default tasklab uses, in one place, each with the reason for its value.

Settings resolve in one order: call options, then task options, then the lab's
configuration, then these defaults. ``None`` anywhere means "inherit".
"""

from __future__ import annotations

import os
from typing import Any

#: Environment variable naming the Redis URL to use instead of the embedded server.
URL_ENV = "TASKLAB_REDIS_URL"

#: Environment variable naming the embedded server's data directory.
DATA_DIR_ENV = "TASKLAB_DATA_DIR"

#: Environment variable naming modules (comma-separated; a package covers its submodules) that every
#: worker can import although no installed distribution provides them, such as a shared directory on
#: every worker's PYTHONPATH: their tasks ship by import path, not by source (see tasklab.code.modules).
IMPORTABLE_ENV = "TASKLAB_IMPORTABLE"

#: Environment variable through which a pool tells a worker which process is its parent.
PARENT_ENV = "TASKLAB_PARENT_PID"

#: Environment variables holding the deployment's key, or naming the file that holds it; the key
#: file in an embedded server's data directory (see tasklab.core.signing).
SECRET_ENV = "TASKLAB_SECRET"
SECRET_FILE_ENV = "TASKLAB_SECRET_FILE"
SECRET_FILE_NAME = "secret"

#: Data directory of the embedded server, relative to the working directory, so a later
#: kernel started in the same project finds its history and queued jobs again.
DATA_DIR = ".tasklab"

#: Unix domain socket paths are limited to 108 bytes including the terminating NUL on Linux
#: (104 on macOS); we keep well inside the smaller one.
SOCKET_PATH_MAX = 100

#: Seconds to wait for a Redis server to accept a connection before saying it is unreachable.
CONNECT_TIMEOUT = 3.0

#: Seconds a TCP connection to Redis may be idle before keepalive probes ask whether the peer is
#: still there (a cut link or a lost host is then noticed a few seconds later, even mid-read).
KEEPALIVE_AFTER = 5

#: Seconds a pooled connection may sit idle before it is checked (PING) on its next use.
HEALTH_CHECK_INTERVAL = 30

#: Seconds the embedded server keeps running after its last lab has gone, so that a lab
#: reconnecting at once (a restarted kernel, the next test) finds it still up.
SERVER_IDLE_GRACE = 2.0

#: Seconds to wait for the embedded server to answer PING after it was started.
SERVER_START_TIMEOUT = 15.0

#: Queue that tasks go to when neither the call nor the task names one.
QUEUE = "default"

#: Every task option with its default. ``None`` means unset: no limit, no name, inherit.
TASK_OPTIONS: dict[str, Any] = {
    "name": None,
    "queue": QUEUE,
    "base": None,
    "bind": False,
    "ignore_result": False,
    # Celery keeps results for a day (result_expires); RQ for 500 s. Notebook users come back
    # to a result after lunch, so we follow Celery.
    "result_ttl": 86400,
    "max_retries": 3,
    # Celery's delay before a retry when there is no backoff and no countdown: three minutes.
    "default_retry_delay": 180,
    "autoretry_for": (),
    "retry_backoff": False,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "time_limit": None,
    "soft_time_limit": None,
    "rate_limit": None,
    "concurrency_limit": None,
    "acks_late": False,
}

#: A job's payload (its arguments, pickled and signed) and exception text of fewer bytes than this are
#: stored in Redis as they are; longer ones compressed, as RQ does with all. Compressing costs more
#: time than it saves space below a few kilobytes (see tasklab.engine.rq_private).
COMPRESS_FROM = 4096

#: The embedded server's size of a stream's node, in bytes (Redis: 4096). RQ keeps each job's results
#: in a stream of its own, which Redis allocates a whole node for: 4.7 KB for one entry, 0.9 KB with
#: 256-byte nodes. Measured with 3,000 no-op tasks: 6.3 KB of Redis memory per finished task with
#: Redis's settings, 1.5 KB with these two (see benchmarks/memory.py).
STREAM_NODE_MAX_BYTES = 256
#: The embedded server's longest value of a compact hash, in bytes (Redis: 64). A job's hash holds its
#: signed payload and meta, of a few hundred bytes: above 64 bytes, Redis turns the whole hash into a
#: table three times its size.
HASH_MAX_ZIPLIST_VALUE = 1024

#: The embedded server's memory limit, and what it does when it reaches it: it evicts, least recently
#: used first, keys that expire anyway (finished and failed jobs' records and results, kept for their
#: result_ttl or FAILURE_TTL), and never keys that don't: queued, scheduled, deferred and running jobs,
#: queues, code versions, leases and the (capped) event history. Without a limit, a lab that runs a
#: million small tasks a day would keep ~2 GB of results for their day.
EMBEDDED_MAXMEMORY = 1024**3
EMBEDDED_MAXMEMORY_POLICY = "volatile-lru"
#: Keys Redis compares to pick the least recently used (Redis: 5): more, so that a key in use (a
#: worker's record, a scheduler's lock, renewed every second) is not picked among old results.
EMBEDDED_MAXMEMORY_SAMPLES = 10
#: Seconds a failed job's record and exception are kept (RQ: a year). A week leaves time to look.
FAILURE_TTL = 7 * 86400

#: Jobs written per pipelined round trip when a batch is submitted (map_async, workflows): large enough
#: to amortise the round trip, small enough that one reply stays a few hundred kilobytes.
SUBMIT_BATCH = 1000
#: Bytes of job payloads written per round trip when a batch is submitted, about: large
#: arguments make smaller batches (one call's arguments, however large, go alone).
SUBMIT_BATCH_BYTES = 1024 * 1024

#: Characters of a job's description (``add(1, 2)``, as RQ's tools show it) kept: arguments can be large.
DESCRIPTION_MAX = 200

#: Characters of output kept per attempt: the end of what a task printed, where the error usually is.
OUTPUT_LIMIT = 64 * 1024
#: Seconds ``AsyncResult.output`` waits for a task's ``on_success``/``after_return`` hooks, which
#: run after its result is stored, to end (and how often it looks): what they print is output too.
HOOKS_OUTPUT_WAIT = 10.0
HOOKS_OUTPUT_POLL = 0.02

#: Most jobs a workflow step waits for directly. RQ checks every dependency of a step each time one
#: of them finishes, so a callback after N members costs O(N²); past this many, the step waits for
#: join jobs that wait for the members, in a tree, which costs O(N * JOIN_FAN_IN).
JOIN_FAN_IN = 32

#: Seconds a workflow's stream of failure notices is kept: longer than anyone waits on a workflow.
WORKFLOW_NOTICE_TTL = 7 * 86400

#: Times a worker retries queueing dependents that RQ skipped because another worker changed the
#: ready registry at the same moment (backing off 1, 2, 4 ... ms), before leaving them to maintenance.
READY_ATTEMPTS = 5

#: Level of the worker logs. RQ's line for each job taken and each job done is at DEBUG.
WORKER_LOG_LEVEL = "INFO"

#: Seconds between two heartbeats of a busy worker (RQ sends several per job): often enough that
#: its worker key never expires while it works, rarely enough to cost nothing per job.
WORKER_HEARTBEAT_INTERVAL = 1.0

#: Seconds a short task may run before its worker writes its start (STARTED, with RQ's execution
#: record): a task that ends sooner is recorded by one commit, its start and its end together, and
#: is PENDING until then, as Celery shows a task without ``track_started``. 0: always written first.
START_WRITTEN_AFTER = 0.05

#: Seconds a worker holds the counters of the tasks it finished (outcomes and run times, for the
#: monitor and ``stats()``; RQ's counts of its successful jobs and working time) before it writes them
#: with a commit: a stream of short tasks writes them a few times a second, not once per task. They
#: are written at once when the worker goes idle or stops.
TOTALS_HELD = 0.5

#: Seconds between a worker pool supervisor's rounds: dead workers, overrun deadlines, terminate
#: requests. A job lost with its worker is settled within about this long.
SUPERVISE_INTERVAL = 0.2

#: Seconds between the embedded server's guardian's checks for labs still holding a lease.
GUARDIAN_CHECK_INTERVAL = 0.25

#: Seconds to wait for local workers to register themselves in Redis.
WORKER_START_TIMEOUT = 30.0

#: Seconds a worker is given to finish its current job on shutdown before it is killed.
WORKER_STOP_TIMEOUT = 10.0

#: Seconds between the RQ scheduler's checks for due jobs (delayed and retried jobs).
#: RQ's own default is 1 s; a notebook user watching a countdown notices less.
SCHEDULER_INTERVAL = 0.2

#: Longest single blocking read of a wait for results. Between reads, a wait checks for jobs that
#: will never have a result (revoked, cancelled, lost with their worker), so this bounds how long
#: such a job can keep a waiter before it is told.
WAIT_SLICE = 1.0

#: Result streams one XREAD reads at most when a wait catches up on many jobs (a ResultSet of
#: thousands): larger replies cost Redis and the client more than a round trip.
XREAD_STREAMS = 500

#: Seconds a worker's lease lives unless renewed, and how often its lease thread renews it. A
#: worker that dies, freezes or loses its host or its link to Redis stops renewing, and its jobs are
#: settled (failed with WorkerLostError, or requeued under acks_late) within about LEASE_TTL plus
#: one LEASE_RENEW_INTERVAL. Three renewals fit in one TTL, and a failed one is retried at once.
LEASE_TTL = 3.0
LEASE_RENEW_INTERVAL = 1.0

#: Seconds a worker's lease thread waits for Redis's reply before it counts the renewal as failed,
#: and waits before it tries again: a failed renewal is retried well before the lease runs out.
LEASE_SOCKET_TIMEOUT = 1.0
LEASE_RETRY_INTERVAL = 0.2

#: Seconds an idle worker of one queue blocks in one wait for a job (BLMOVE, which takes the job
#: into a list of the worker's in the same step); between waits it checks its lease and heartbeat.
CLAIM_BLOCK = 5
#: Jobs a worker takes at once from a queue at least :data:`CLAIM_BATCH_DEPTH` long, in the same step as the
#: commit of the job it finished: the first it runs at once, the others when it is done, each read while
#: the commit of the one before it travels to Redis. The whole batch is the worker's under its lease: if
#: the worker is lost, the job it was running is settled, and the others go back to the head of their
#: queue, never having run. A shorter queue gives one job at a time, so that idle workers share it.
CLAIM_BATCH = 4
CLAIM_BATCH_DEPTH = 16
#: Seconds between an idle worker's looks for a job when it serves several queues (Redis has no
#: blocking move from several lists).
CLAIM_POLL_INTERVAL = 0.05
#: Longest pause, in seconds, between a worker's attempts to reach Redis while it is unreachable
#: (from 0.1 s, doubling).
RECONNECT_BACKOFF_MAX = 2.0
#: Seconds a job may sit in an RQ intermediate list without being started (taken by a process that
#: died before starting it: tasklab's own workers use claimed lists) before it is queued again.
STRAND_GRACE = 2.0

#: Seconds a worker's scheduler lock on a queue lives unless refreshed, and how often every
#: worker's scheduler tries to take or refresh its locks. The death of the lock's holder delays
#: countdowns, etas and retries by at most about the TTL (RQ: a minute, retried every two).
SCHEDULER_LOCK_TTL = 1.5
SCHEDULER_LOCK_REFRESH = 0.4
#: Seconds a scheduler's claim on the due jobs it is about to queue lasts: it takes them by moving
#: their time this far ahead (while it still holds the lock), so that a scheduler whose lock lapsed
#: mid-pass (a frozen worker) and the one that took the lock over never queue a job twice; one that
#: dies mid-pass leaves its jobs due again this much later.
SCHEDULER_CLAIM = 10.0

#: Entries the event stream keeps (about; Redis trims in whole nodes). At roughly three events
#: per attempt, that is the last ~150,000 attempts.
EVENTS_MAXLEN = 500_000

#: Events the monitor's plots show: the most recent, about a third as many attempts.
MONITOR_PLOT_EVENTS = 3000

#: Seconds between the monitor's refreshes of its counters and tables, and of its plots (which
#: cost more to draw).
MONITOR_INTERVAL = 0.5
MONITOR_PLOT_INTERVAL = 5.0

#: Seconds of activity the task stream shows by default (up to the latest event); the monitor's
#: window menu widens it, and ``task_stream(frame, window=None)`` shows the whole frame.
STREAM_WINDOW = 120.0

#: Attempts the monitor lists under "Recent attempts".
MONITOR_RECENT = 30

#: Seconds between the live result badges' reads of their results' states.
RESULT_BADGE_INTERVAL = 0.5
#: Seconds within which a result set's progress, read for one form of its display (the live view),
#: serves its text, which IPython asks for right after.
SAME_DISPLAY = 1.0

#: Seconds between two writes of the state a running task reports (``self.update_state``): a task
#: that reports more often costs Redis at most one write per interval, and its latest report is
#: written at the end of the interval it came in.
STATE_REPORT_INTERVAL = 0.25
#: Seconds a task's reported state is kept in Redis (it is read only while the task runs).
STATE_REPORT_TTL = 24 * 3600

#: Events ``history()`` reads per round trip.
HISTORY_READ_CHUNK = 10_000

#: Run times kept per task for the monitor's percentiles.
RUNTIMES_KEPT = 1000

#: Seconds past a job's hard time limit after which its worker process is killed, in case the
#: task swallowed TimeLimitExceeded or is stuck in code that signals cannot interrupt.
TIME_LIMIT_GRACE = 1.0

#: Seconds between a worker's RQ maintenance passes (RQ's default is 600): cleaning registries and
#: recovering jobs whose dependencies were met but that were not queued.
MAINTENANCE_INTERVAL = 60

#: Seconds between a worker's checks that its parent process is still alive.
PARENT_CHECK_INTERVAL = 0.5


def worker_count() -> int:
    """Default number of local workers: one per CPU this process may use, within a container's quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:  # cgroup v2: "max 100000" or "<quota> <period>" (Binder, Docker --cpus)
        with open("/sys/fs/cgroup/cpu.max") as limits:
            quota, period = limits.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


#: Seconds between two checks, at submit, that some worker serves a job's queue (one SCARD).
UNSERVED_CHECK_INTERVAL = 5.0

#: The longest delay or limit tasklab accepts, in seconds (a year): a countdown, an eta this far
#: ahead, a time limit, or the interval a rate limit leaves between two starts. Longer ones are
#: mistakes (``countdown=1e12``), and would overflow the clocks that carry them.
LONGEST_SECONDS = 366 * 24 * 3600

#: A task id given by the user (``apply_async(task_id=...)``): RQ's job id characters, and a length.
TASK_ID_PATTERN = r"[A-Za-z0-9_-]{1,128}"
