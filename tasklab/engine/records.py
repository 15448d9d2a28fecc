"""What tasklab keeps about a job's final exception, beside RQ's result: its type, message,
the user's part of its traceback, and the exception itself, pickled, so that ``get()`` can
raise it with its own type. Written by the worker, and by whoever settles a lost job."""

from __future__ import annotations

import logging
import os
import traceback
from typing import Any

import rq
from rq.job import Job

from .. import defaults
from ..code.serialization import dumps
from ..core.signing import RESULT
from . import keys

log = logging.getLogger("tasklab.runtime")


def record_exception(job: Job, exc: BaseException, pipe: Any = None) -> None:
    """Store the final exception of ``job`` so that ``result.get()`` raises it with its type."""
    record: dict[str, Any] = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "traceback": user_traceback(exc),
    }
    try:
        record["pickled"] = dumps(exc, RESULT)
    except Exception:
        log.warning("exception of job %s cannot be pickled; it will come back as TaskError", job.id)
    target = pipe if pipe is not None else job.connection.pipeline(transaction=False)
    target.hset(keys.exception_key(job.id), mapping=record)
    expire(target, keys.exception_key(job.id), job.failure_ttl or defaults.FAILURE_TTL)
    if pipe is None:
        target.execute()


def user_traceback(exc: BaseException) -> str:
    """``exc``'s traceback from the first frame outside tasklab and RQ: the user's code."""
    tb = exc.__traceback__
    while tb is not None and _internal(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _internal(filename: str) -> bool:
    return filename.startswith((_TASKLAB_DIR, _RQ_DIR))


_TASKLAB_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_RQ_DIR = os.path.dirname(os.path.abspath(rq.__file__)) + os.sep


def expire(pipe: Any, key: str, ttl: int | None) -> None:
    if ttl is not None and ttl > 0:
        pipe.expire(key, int(ttl))
