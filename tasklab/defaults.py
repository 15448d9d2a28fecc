"""Every default tasklab uses, in one place, each with the reason for its value.

Settings resolve in one order: call options, then task options, then the lab's
configuration, then these defaults. ``None`` anywhere means "inherit".
"""

from __future__ import annotations

import os

#: Environment variable naming the Redis URL to use instead of the embedded server.
URL_ENV = "TASKLAB_REDIS_URL"

#: Environment variable naming the embedded server's data directory.
DATA_DIR_ENV = "TASKLAB_DATA_DIR"

#: Environment variable through which a pool tells a worker which process is its parent.
PARENT_ENV = "TASKLAB_PARENT_PID"

#: Data directory of the embedded server, relative to the working directory, so a later
#: kernel started in the same project finds its history and queued jobs again.
DATA_DIR = ".tasklab"

#: Unix domain socket paths are limited to 108 bytes including the terminating NUL on Linux
#: (104 on macOS); we keep well inside the smaller one.
SOCKET_PATH_MAX = 100

#: Seconds to wait for a Redis server to accept a connection before saying it is unreachable.
CONNECT_TIMEOUT = 3.0

#: Seconds the embedded server keeps running after its last lab has gone, so that a lab
#: reconnecting at once (a restarted kernel, the next test) finds it still up.
SERVER_IDLE_GRACE = 2.0

#: Seconds to wait for the embedded server to answer PING after it was started.
SERVER_START_TIMEOUT = 15.0

#: Queue that tasks go to when neither the call nor the task names one.
QUEUE = "default"
#: Level of the worker logs. RQ's line for each job taken and each job done is at DEBUG.
WORKER_LOG_LEVEL = "INFO"

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

#: Entries the event stream keeps (about; Redis trims in whole nodes). At roughly three events
#: per attempt, that is the last ~150,000 attempts.
EVENTS_MAXLEN = 500_000

#: Events the monitor's plots show: the most recent, about a third as many attempts.
MONITOR_PLOT_EVENTS = 3000

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
