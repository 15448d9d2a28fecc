"""The job plain RQ workers run in the benchmark: importable, so an RQ worker finds it by name."""

from __future__ import annotations


def noop(x: object = None) -> None:
    """Do nothing, so that a benchmark measures the queue and not the task."""
    return None
