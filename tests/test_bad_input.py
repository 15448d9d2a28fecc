"""Bad input gets a clear TaskLabError at the moment the user acts, and nothing is submitted."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

import tasklab

from .conftest import task_cell

PING = "def ping():\n    return 'pong'\n"


def nothing_queued(lab) -> bool:
    queue = lab.queue()
    return queue.count == 0 and queue.scheduled_job_registry.count == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"countdown": math.nan}, "countdown=nan"),
        ({"countdown": math.inf}, "countdown=inf"),
        ({"countdown": 1e12}, "at most a year"),
        ({"countdown": 10**30}, "at most a year"),
        ({"countdown": True}, "countdown=True"),
        ({"countdown": -1}, "countdown=-1"),
        ({"eta": datetime.min}, "eta="),
        ({"eta": datetime.now(timezone.utc) + timedelta(days=400)}, "more than a year ahead"),
        ({"time_limit": math.nan}, "time_limit=nan"),
        ({"soft_time_limit": math.inf}, "soft_time_limit=inf"),
        ({"time_limit": 1e308}, "at most a year"),
        ({"task_id": ""}, "task_id=''"),
        ({"task_id": "a:b"}, "task_id='a:b'"),
        ({"task_id": 123}, "task_id=123"),
        ({"queue": "default:intermediate"}, "no ':'"),
        ({"queue": ""}, "queue=''"),
    ],
)
def test_bad_call_options_are_refused_and_submit_nothing(shell, lab, options, message):
    task_cell(shell, PING)
    with pytest.raises(tasklab.ConfigurationError, match=message.replace("(", r"\(")):
        shell.user_ns["ping"].apply_async(**options)
    assert nothing_queued(lab)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--time-limit nan", "time_limit=nan"),
        ("--time-limit inf", "time_limit=inf"),
        ("--soft-time-limit 1e308", "at most a year"),
        ("--rate-limit 0/s", "lets no task start"),
        ("--rate-limit 0.00000001/h", "more than a year apart"),
        ("--rate-limit 1e-30/s", "is invalid"),
        ("--concurrency-limit 0", "concurrency_limit=0"),
        ("--queue default:intermediate", "no ':'"),
    ],
)
def test_bad_task_options_are_refused_and_register_nothing(shell, line, message):
    result = shell.run_cell(f"%%task {line}\ndef refused():\n    return 1\n")
    assert not result.success and message in str(result.error_in_exec)
    assert "refused" not in shell.user_ns
