"""Celery's task states, as ``AsyncResult.state`` reports them."""

from __future__ import annotations

PENDING = "PENDING"
STARTED = "STARTED"
RETRY = "RETRY"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
#: Not a Celery state: the job is due but held back by its rate_limit or concurrency_limit.
RATE_LIMITED = "RATE_LIMITED"

#: States after which nothing more happens to a task.
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
