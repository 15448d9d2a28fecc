"""A snapshot of a Redis as tasklab sees it: server, queues, workers."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from rq import Queue
from rq.worker import Worker as RQWorker

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
            lines.append(
                f"  {w.name:<40} {w.state:<9} pid {w.pid} on {w.hostname} "
                f"[{','.join(w.queues)}] ok={w.successful} failed={w.failed}{job}"
            )
        return "\n".join(lines)


def read_status(connection: redis.Redis, url: str) -> ServerStatus:
    """Read server version, every RQ queue's length and every live worker."""
    status = ServerStatus(url=url, redis_version=str(connection.info("server").get("redis_version")))
    queues = Queue.all(connection=connection)
    with connection.pipeline(transaction=False) as pipe:
        for q in queues:
            pipe.llen(q.key)
        lengths = pipe.execute()
    status.queues = {q.name: n for q, n in zip(queues, lengths, strict=True)}
    for w in RQWorker.all(connection=connection):
        status.workers.append(
            WorkerStatus(
                name=w.name,
                state=str(w.get_state()),
                queues=w.queue_names(),
                hostname=w.hostname,
                pid=w.pid,
                current_job=w.get_current_job_id(),
                successful=w.successful_job_count,
                failed=w.failed_job_count,
            )
        )
    return status
