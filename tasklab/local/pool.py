"""Local worker processes: start, scale, restart the dead, stop them all.

A :class:`WorkerPool` owns worker subprocesses (:mod:`tasklab.local.worker_process`) of the process
that made it: a notebook kernel, or ``tasklab worker`` on another machine. A supervisor
thread restarts any worker that dies. Workers exit by themselves when the pool's process
dies, even by SIGKILL (see :mod:`tasklab.local.worker_process`), so none is ever orphaned.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
from rq.worker import SimpleWorker

from .. import defaults
from ..engine import keys, leases
from ..engine.lost import settle_jobs_of
from ..engine.rq_private import executions_key, job_id_of_execution, worker_key
from ..errors import TaskRevokedError, TimeLimitExceeded, WorkerError, WorkerLostError

log = logging.getLogger("tasklab.workers")


WORKER_ENTRY = "import sys; from tasklab.local.worker_process import main; sys.exit(main(sys.argv[1:]))"


@dataclass
class WorkerProcess:
    """One worker subprocess and where its log goes."""

    slot: int
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.time)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None


def private_log_dir(path: Path) -> None:
    """Make ``path`` for worker logs, which hold whatever tasks print: only its owner may enter it.
    A directory named ``logs`` (tasklab's own: ``<data dir>/logs``) is made private if it was not;
    any other existing one (``--log-dir .``) keeps its mode, and the log files are private anyway."""
    existed = path.is_dir()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not existed or path.name == "logs":
        path.chmod(0o700)


class WorkerPool:
    """Worker subprocesses of this process, serving ``queues`` of the Redis at ``url``."""

    def __init__(
        self,
        url: str,
        connection: redis.Redis,
        log_dir: Path,
        queues: Sequence[str] = (defaults.QUEUE,),
        log_level: str = defaults.WORKER_LOG_LEVEL,
        *,
        secret: bytes | None = None,
        allow_rq_jobs: bool = False,
    ):
        self.url = url
        #: The deployment's key, handed to each worker in its environment (``None``: insecure).
        self.secret = secret
        self.allow_rq_jobs = allow_rq_jobs
        self.log_level = log_level
        self.connection = connection
        self.log_dir = Path(log_dir)
        self.queues = list(queues)
        self._kill_reasons: dict[str, BaseException] = {}
        self.restarts = 0
        self._prefix = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:4]}"
        self._serial = itertools.count()
        self._workers: dict[int, WorkerProcess] = {}
        self._lock = threading.RLock()
        self._closing = False
        self._supervisor: threading.Thread | None = None
        self._stop_supervisor = threading.Event()
        #: Called while Redis does not answer (the lab starts its embedded server again if it died).
        self.on_unreachable: Callable[[], object] | None = None

    # -- inspection ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._workers)

    def __repr__(self) -> str:
        return f"<WorkerPool {len(self)} workers on {','.join(self.queues)}>"

    @property
    def processes(self) -> list[WorkerProcess]:
        with self._lock:
            return [self._workers[slot] for slot in sorted(self._workers)]

    @property
    def names(self) -> list[str]:
        return [w.name for w in self.processes]

    def logs(self, tail: int | None = 50) -> dict[str, str]:
        """The last ``tail`` lines (all with ``None``) of each current worker's log, by name."""
        out = {}
        for w in self.processes:
            text = w.log_path.read_text(errors="replace") if w.log_path.exists() else ""
            out[w.name] = "\n".join(text.splitlines()[-tail:]) if tail else text
        return out

    # -- control ---------------------------------------------------------------------------

    def scale(self, n: int, timeout: float = defaults.WORKER_START_TIMEOUT) -> WorkerPool:
        """Start or stop workers until ``n`` run; return once the new ones are ready."""
        if not isinstance(n, int) or n < 0:
            raise WorkerError(f"The number of workers must be a whole number >= 0, not {n!r}.")
        with self._lock:
            if self._closing:
                raise WorkerError("This worker pool has been shut down; connect again for new workers.")
            surplus = [self._workers.pop(slot) for slot in sorted(self._workers)[n:]]
            started = [self._spawn(slot) for slot in range(n) if slot not in self._workers]
        self._stop(surplus)
        self._wait_ready(started, timeout)
        self._ensure_supervisor()
        return self

    def serve(self, queues: Sequence[str], timeout: float = defaults.WORKER_START_TIMEOUT) -> WorkerPool:
        """Serve ``queues`` from now on: as many new workers start on them, and the old ones stop
        after their current job (without waiting for it here); return once the new ones are ready."""
        with self._lock:
            if self._closing:
                raise WorkerError("This worker pool has been shut down; connect again for new workers.")
            self.queues = list(queues)
            old = [self._workers.pop(slot) for slot in sorted(self._workers)]
            started = [self._spawn(w.slot) for w in old]
        for w in old:
            with contextlib.suppress(ProcessLookupError):
                w.process.send_signal(signal.SIGTERM)  # a warm stop: after its current job
        threading.Thread(target=self._stop, args=(old,), name="tasklab-retire", daemon=True).start()
        self._wait_ready(started, timeout)
        self._ensure_supervisor()
        return self

    def stop(self, timeout: float = defaults.WORKER_STOP_TIMEOUT) -> None:
        """Stop every worker: each finishes its current job, or is killed after ``timeout``."""
        with self._lock:
            self._closing = True
            workers = list(self._workers.values())
        self._stop_supervisor.set()
        self._stop(workers, timeout)
        with self._lock:
            self._workers.clear()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=2)

    def kill(self, worker: str | WorkerProcess, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to ``worker``, one of :attr:`processes` or its name (for tests and demonstrations
        of loss)."""
        if isinstance(worker, WorkerProcess):
            name = worker.name
        elif isinstance(worker, str):
            name = worker
        else:
            raise WorkerError(
                f"kill() takes a worker of this pool (one of pool.processes) or its name, not {type(worker).__name__} "
                f"{worker!r}."
            )
        for w in self.processes:
            if w.name == name:
                os.kill(w.pid, sig)
                return
        gone = " (it was replaced or stopped)" if isinstance(worker, WorkerProcess) else ""
        raise WorkerError(f"No worker called {name!r} in this pool{gone}; it has {self.names}.")

    # -- internals ---------------------------------------------------------------------

    def _spawn(self, slot: int) -> WorkerProcess:
        name = f"{self._prefix}.{slot}.{next(self._serial)}"
        private_log_dir(self.log_dir)
        log_path = self.log_dir / f"worker-{slot}.log"
        # The URL (it may hold a password) and the key go in the environment, which only this user
        # can read, never on the command line, which every user can (ps).
        env = {**os.environ, defaults.PARENT_ENV: str(os.getpid()), defaults.URL_ENV: self.url}
        env.pop(defaults.SECRET_FILE_ENV, None)
        flags = []
        if self.secret is not None:
            env[defaults.SECRET_ENV] = self.secret.decode()
        else:
            env.pop(defaults.SECRET_ENV, None)
            flags.append("--insecure")
        if self.allow_rq_jobs:
            flags.append("--allow-rq-jobs")
        with open(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as log_file:
            os.fchmod(log_file.fileno(), 0o600)  # made earlier with a looser mode
            process = subprocess.Popen(
                [sys.executable, "-c", WORKER_ENTRY, "--name", name,
                 "--queues", ",".join(self.queues), "--log-level", self.log_level, *flags],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C in the kernel interrupts the cell, not the workers
            )  # fmt: skip
        worker = WorkerProcess(slot, name, process, log_path)
        self._workers[slot] = worker
        return worker

    def _wait_ready(self, workers: list[WorkerProcess], timeout: float) -> None:
        """Wait until each worker has registered itself in Redis."""
        deadline = time.monotonic() + timeout
        pending = list(workers)
        while pending:
            with self.connection.pipeline(transaction=False) as pipe:
                for w in pending:
                    pipe.exists(worker_key(w.name))
                registered = pipe.execute()
            pending = [w for w, ok in zip(pending, registered, strict=True) if not ok]
            for w in pending:
                if not w.alive():
                    raise WorkerError(
                        f"Worker {w.name} exited with status {w.process.returncode} while starting; "
                        f"its log {w.log_path} says:\n{self._tail(w.log_path)}"
                    )
            if pending and time.monotonic() > deadline:
                raise WorkerError(
                    f"{len(pending)} worker(s) did not register within {timeout:.0f} s; see {pending[0].log_path}."
                )
            if pending:
                time.sleep(0.01)

    @staticmethod
    def _tail(path: Path, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _stop(self, workers: list[WorkerProcess], timeout: float = defaults.WORKER_STOP_TIMEOUT) -> None:
        for w in workers:
            if w.alive():
                with contextlib.suppress(ProcessLookupError):
                    w.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for w in workers:
            try:
                w.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %s did not stop within %.0f s; killing it", w.name, timeout)
                w.process.kill()
                w.process.wait()

    def _ensure_supervisor(self) -> None:
        if self._supervisor is None or not self._supervisor.is_alive():
            self._supervisor = threading.Thread(target=self._supervise, name="tasklab-supervisor", daemon=True)
            self._supervisor.start()

    def _supervise(self) -> None:
        unreachable = False
        while not self._stop_supervisor.wait(defaults.SUPERVISE_INTERVAL):
            if unreachable and self.on_unreachable is not None:
                try:
                    self.on_unreachable()
                except Exception as exc:  # tried again next round
                    log.warning("could not start the embedded Redis again: %s", exc)
            with self._lock:
                if self._closing:
                    return
                # While Redis does not answer, a restarted worker could not start: wait for it.
                dead = [] if unreachable else [w for w in self._workers.values() if not w.alive()]
                for w in dead:
                    log.warning("worker %s (pid %s) died with status %s; restarting it",
                                w.name, w.pid, w.process.returncode)  # fmt: skip
                    self.restarts += 1
                    self._spawn(w.slot)
                running = list(self._workers.values())
            for w in dead:
                self._forget(w)
            try:
                self._police(running)
                leases.settle_expired(self.connection)  # of workers anywhere: another host's too
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if not unreachable:  # one line per outage, not one a round
                    log.warning("Redis is unreachable (%s); the supervisor keeps trying", exc)
                unreachable = True
                continue
            except Exception:
                log.exception("checking the workers' deadlines, terminate requests and leases failed")
            if unreachable:
                log.warning("Redis answers again")
                unreachable = False

    def _police(self, workers: list[WorkerProcess]) -> None:
        """Kill a worker whose job outlived its hard time limit, or whose job is to be terminated."""
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.smembers(keys.TERMINATE_KEY)
            for w in workers:
                pipe.hget(worker_key(w.name), keys.WORKER_DEADLINE)
            terminate, *deadlines = pipe.execute()
        now = time.time()
        for w, deadline in zip(workers, deadlines, strict=True):
            if deadline is not None and now > float(deadline) + defaults.TIME_LIMIT_GRACE:
                self._kill(w, TimeLimitExceeded("the task outlived its hard time limit; its worker was killed"))
        if not terminate:
            return
        wanted = {job_id.decode() for job_id in terminate}
        with self.connection.pipeline(transaction=False) as pipe:
            for w in workers:
                pipe.smembers(executions_key(w.name))
                # A job run with its start unwritten: still claimed, the last of the list (see keys.claimed_key).
                pipe.lindex(keys.claimed_key(w.name), -1)
            replies = pipe.execute()
        for i, w in enumerate(workers):
            members, last_claimed = replies[2 * i : 2 * i + 2]
            running = {job_id_of_execution(member) for member in members}
            if last_claimed is not None and not running:  # a worker runs one job at a time
                running.add(last_claimed.decode())
            for job_id in running & wanted:
                self.connection.srem(keys.TERMINATE_KEY, job_id)
                self._kill(w, TaskRevokedError(f"Task {job_id} was terminated on request."))

    def _kill(self, w: WorkerProcess, reason: BaseException) -> None:
        if w.alive() and w.name not in self._kill_reasons:
            log.warning("killing worker %s (pid %s): %s", w.name, w.pid, reason)
            self._kill_reasons[w.name] = reason
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGKILL)

    def _forget(self, w: WorkerProcess) -> None:
        """Settle the jobs a dead worker held, then remove its registration."""
        reason = self._kill_reasons.pop(w.name, None) or WorkerLostError(
            f"Worker {w.name} (pid {w.pid}) died with exit status {w.process.returncode} while running the task."
        )
        try:
            settle_jobs_of(self.connection, w.name, reason)
            leases.drop(self.connection, w.name)  # settled already: not again when its lease runs out
        except (redis.ConnectionError, redis.TimeoutError):
            return  # Redis is away: its lease runs out, and whoever looks first settles it then
        except Exception:
            log.exception("settling the jobs of dead worker %s failed", w.name)
        try:
            rq_worker = SimpleWorker.find_by_key(worker_key(w.name), self.connection)
            if rq_worker is not None:
                rq_worker.register_death()
        except Exception:
            log.exception("could not unregister dead worker %s", w.name)
