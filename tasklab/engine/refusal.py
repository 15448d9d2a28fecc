"""Jobs a worker refuses to run: unsigned or forged (see :mod:`tasklab.core.signing`).

A job whose meta or payload does not carry the deployment's signature, or which names a callback
outside tasklab, is not unpickled further and not run. It fails at once, with a reason that names
the job and its signature, where ``get()``, ``rq info`` and the failed-job registry show it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pickle
import zlib
from typing import Any

from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import FailedJobRegistry
from rq.results import Result
from rq.utils import now

from ..code import serialization
from ..core.signing import JOB, MAGIC, keyring
from .keys import claimed_key
from .workflow import FAILURE_CALLBACK

log = logging.getLogger("tasklab.worker")

#: The hash fields naming functions RQ calls with a job, and the only ones tasklab's jobs name, by
#: exact name (RQ resolves a dotted name through attributes: a prefix would let through
#: ``tasklab.errors.builtins.exec``).
CALLBACK_FIELDS = (b"success_callback_name", b"failure_callback_name", b"stopped_callback_name")
CALLBACKS = frozenset({FAILURE_CALLBACK, "tasklab.canvas.on_step_failure"})


def allowed_callback(name: str | None, job_id: str) -> bool:
    """Whether RQ may call the callback ``name`` of a job: one of tasklab's, or any in a process that
    runs plain RQ jobs. Checked where RQ resolves it, so its maintenance is covered too."""
    if not name or name in CALLBACKS or keyring.accept_unsigned or keyring.insecure:
        return True
    log.warning("job %s names the callback %r, which is not tasklab's: it is not called", job_id, name)
    return False


def check_signed(job_id: str, fields: dict[bytes, bytes]) -> None:
    """Raise :class:`~tasklab.errors.SignatureError` unless the payload and meta of a job hash carry
    an accepted signature (or the process accepts unsigned ones), checked before RQ unpickles them."""
    keyring.unsign(_payload(fields), f"the payload of job {job_id}", JOB)  # never a signed result
    if fields.get(b"meta"):
        keyring.unsign(fields[b"meta"], f"the meta of job {job_id}", JOB)


def _payload(fields: dict[bytes, bytes]) -> bytes:
    data = fields.get(b"data", b"")
    with contextlib.suppress(zlib.error):
        return zlib.decompress(data)
    return data


def signed_job(fields: dict[bytes, bytes]) -> bool:
    """Whether a job hash's payload carries a signature (a tasklab job), read without unpickling."""
    return _payload(fields).startswith(MAGIC)


class PlainSerializer:
    """RQ's own pickle, for the results of plain RQ jobs a worker runs with ``--allow-rq-jobs``."""

    dumps = staticmethod(functools.partial(pickle.dumps, protocol=pickle.HIGHEST_PROTOCOL))

    @staticmethod
    def loads(data: bytes) -> Any:
        return serialization.loads(data, "a plain RQ job's payload")


def foreign_callback(fields: dict[bytes, bytes]) -> str | None:
    """The first callback of a job hash that is not tasklab's, unless plain RQ jobs are allowed."""
    if keyring.accept_unsigned or keyring.insecure:
        return None
    for field in CALLBACK_FIELDS:
        name = fields.get(field, b"").decode(errors="replace")
        if name and name not in CALLBACKS:
            return name
    return None


def refuse(job_id: str, queue: Queue, worker_name: str, reason: str) -> None:
    """Fail the claimed job ``job_id`` without running it: failed, in the failed-job registry, with
    a failure result saying ``reason``, and out of the worker's claimed list."""
    connection = queue.connection
    job = Job(job_id, connection=connection, serializer=queue.serializer)  # nothing of it is unpickled
    exc_string = f"SignatureError: {reason}"
    registry = FailedJobRegistry(queue=queue)
    with connection.pipeline() as pipe:
        pipe.lrem(claimed_key(worker_name), 1, job_id)
        pipe.hset(job.key, mapping={"status": JobStatus.FAILED.value, "ended_at": now().isoformat()})
        pipe.zadd(registry.key, {job_id: -1})  # kept until deleted: someone wrote it there
        Result.create_failure(job, -1, exc_string, worker_name=worker_name, pipeline=pipe)
        pipe.execute()
    log.warning("Worker %s: refused job %s without running it: %s", worker_name, job_id, reason)
