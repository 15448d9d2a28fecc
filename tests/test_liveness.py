"""Faults settle within seconds: real processes killed, frozen and restarted against a real Redis."""

from __future__ import annotations

import os
import signal
import time

import pytest
from rq.scheduler import RQScheduler

from .conftest import task_cell, wait_for

pytestmark = pytest.mark.slow


def scheduler_holder(lab, queue: str = "default") -> int | None:
    """The pid of the worker whose scheduler holds ``queue``'s lock, if one does."""
    name = lab.connection.get(RQScheduler.get_locking_key(queue))
    if name is None:
        return None
    pid = lab.connection.hget(RQScheduler.fetch(name.decode(), lab.connection).key, "pid")
    return int(pid) if pid else None


def test_a_killed_scheduler_holder_delays_a_countdown_by_seconds(shell, lab):
    pool = lab.workers(2)
    task_cell(shell, "def ping():\n    return 'pong'\n")
    holder = wait_for(lambda: scheduler_holder(lab), 10, "a scheduler to take the lock")
    assert holder in {w.pid for w in pool.processes}
    os.kill(holder, signal.SIGKILL)
    submitted = time.monotonic()
    result = shell.user_ns["ping"].apply_async(countdown=1)
    assert result.get(timeout=10) == "pong"
    assert time.monotonic() - submitted <= 3.0, "the countdown ran within 3 s although its scheduler died"
    assert scheduler_holder(lab) != holder
