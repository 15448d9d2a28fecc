"""The worker's logger, with the two lines RQ writes for every job at DEBUG."""

from __future__ import annotations

import logging
from typing import Any

#: The lines RQ logs at INFO for every job: when a worker takes it, and when it succeeded.
_PER_JOB_LINES = frozenset(
    {
        "Worker %s: %s: %s (%s)",
        "Worker %s: %s: %s",
        "Successfully completed %s job in %ss on worker %s",
        "Successfully completed job %s in %ss on worker %s",
    }
)


class JobLinesAtDebug:
    """RQ's worker logger, with the lines RQ writes for every job logged at DEBUG, not INFO.

    At hundreds of jobs a second they filled the worker log (two lines a job, never rotated)
    and cost a twentieth of each job's time, while each attempt's outcome, timing and output
    are kept with its result and shown by the monitor. Failures, retries and all other lines
    keep their levels; ``--log-level DEBUG`` shows every job again.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)

    def info(self, msg: str, *args: object, **kwargs: Any) -> None:
        kwargs.setdefault("stacklevel", 2)
        self._logger.log(logging.DEBUG if msg in _PER_JOB_LINES else logging.INFO, msg, *args, **kwargs)
