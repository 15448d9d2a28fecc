"""Job functions for the worker tests; importable by worker processes as ``tests.jobfuncs``."""

from __future__ import annotations

from rq import get_current_job


def current_job_id() -> str | None:
    """The id of the job running this function, as RQ's ``get_current_job`` sees it."""
    job = get_current_job()
    return job.id if job is not None else None


def fail_until(key: str, failures: int) -> int:
    """Raise on the first ``failures`` calls (counted in Redis under ``key``), then succeed."""
    job = get_current_job()
    assert job is not None
    attempt = job.connection.incr(key)
    if attempt <= failures:
        raise RuntimeError(f"attempt {attempt} fails on purpose")
    return attempt


def wait_for_signal(key: str, timeout: int = 20) -> str:
    """Block until the test pushes to the list ``key``, so that a test controls when a job ends."""
    job = get_current_job()
    assert job is not None
    if job.connection.blpop([key], timeout) is None:
        raise TimeoutError(f"no signal on {key} within {timeout} s")
    return "released"
