"""A snapshot of a Redis as tasklab sees it: server, queues, workers."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Queue
from rq.utils import as_text
from rq.worker import Worker as RQWorker

from ..engine.leases import LEASES, settle_expired
from .connection import redact


@dataclass
class WorkerStatus:
    name: str
    state: str
    queues: list[str]
    hostname: str | None
    pid: int | None
    current_job: str | None
    successful: int
    failed: int
    #: Seconds its lease has left (tasklab's workers; ``None`` for others), negative once it ran out.
    lease_s: float | None = None


@dataclass
class ServerStatus:
    url: str
    redis_version: str
    queues: dict[str, int] = field(default_factory=dict)
    workers: list[WorkerStatus] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"Redis {self.redis_version} at {redact(self.url)}", f"queues ({len(self.queues)}):"]
        lines += [f"  {name:<20} {length:>6} queued" for name, length in sorted(self.queues.items())]
        lines.append(f"workers ({len(self.workers)}):")
        for w in sorted(self.workers, key=lambda w: w.name):
            job = f" running {w.current_job}" if w.current_job else ""
            lease = f" lease {w.lease_s:g} s" if w.lease_s is not None else ""
            lines.append(
                f"  {w.name:<40} {w.state:<9} pid {w.pid} on {w.hostname} "
                f"[{','.join(w.queues)}] ok={w.successful} failed={w.failed}{lease}{job}"
            )
        return "\n".join(lines)


def read_status(connection: redis.Redis, url: str) -> ServerStatus:
    """Read server version, every RQ queue's length and every worker, on any host. Workers whose
    lease ran out are settled first (see :mod:`tasklab.engine.leases`); one whose lease runs out
    meanwhile shows the state ``lost``."""
    settle_expired(connection)
    status = ServerStatus(url=url, redis_version=str(connection.info("server").get("redis_version")))
    seconds, micros = connection.time()
    now_ms = seconds * 1000 + micros // 1000
    lease_ends = {as_text(name): score for name, score in connection.zrange(LEASES, 0, -1, withscores=True)}
    queues = Queue.all(connection=connection)
    with connection.pipeline(transaction=False) as pipe:
        for q in queues:
            pipe.llen(q.key)
        lengths = pipe.execute()
    status.queues = {q.name: n for q, n in zip(queues, lengths, strict=True)}
    for w in RQWorker.all(connection=connection):
        ends = lease_ends.get(w.name)
        lease_s = None if ends is None else round((ends - now_ms) / 1000, 1)
        status.workers.append(
            WorkerStatus(
                name=w.name,
                state="lost" if lease_s is not None and lease_s < 0 else str(w.get_state()),
                queues=w.queue_names(),
                hostname=w.hostname,
                pid=w.pid,
                current_job=w.get_current_job_id(),
                successful=w.successful_job_count,
                failed=w.failed_job_count,
                lease_s=lease_s,
            )
        )
    return status


class ProcessUsage:
    """CPU and memory of worker processes on this host, by pid (psutil), for a monitor that asks
    again and again: a process is kept between calls, so its CPU share is over the time since the
    last call. A worker on another host, or one psutil cannot read, has ``None`` for both."""

    def __init__(self) -> None:
        import psutil  # loaded with the first monitor, not with tasklab

        self._psutil = psutil
        self.hostname = socket.gethostname()
        self._processes: dict[int, Any] = {}

    def read(self, hostname: str | None, pid: int | None) -> tuple[float | None, int | None]:
        """(CPU percent, resident memory in bytes) of the worker ``pid`` on ``hostname``."""
        psutil = self._psutil
        if pid is None or hostname != self.hostname:
            return None, None
        process = self._processes.get(pid)
        try:
            if process is None:
                process = self._processes[pid] = psutil.Process(pid)
                process.cpu_percent()  # the first reading only starts the interval
            return process.cpu_percent(), process.memory_info().rss
        except (psutil.Error, OSError):
            self._processes.pop(pid, None)
            return None, None

    def forget_others(self, pids: set[int]) -> None:
        """Drop the processes of workers that are gone."""
        for pid in set(self._processes) - pids:
            del self._processes[pid]
