"""The worker's logger, with the two lines RQ writes for every job at DEBUG, and one line at INFO
for a job held back by its rate limit instead of RQ's traceback."""

from __future__ import annotations

import logging
from typing import Any

from .execution import RateLimited

#: The lines RQ logs at INFO for every job: when a worker takes it, and when it succeeded.
_PER_JOB_LINES = frozenset(
    {
        "Worker %s: %s: %s (%s)",
        "Worker %s: %s: %s",
        "Successfully completed %s job in %ss on worker %s",
        "Successfully completed job %s in %ss on worker %s",
    }
)

#: RQ's line for a job whose function raised (its arguments: worker, job id, function, traceback).
_RAISED = "Worker %s: job %s: exception raised while executing (%s)\n%s"
#: How the traceback names the runtime's exception for a job held back by its rate limit.
RATE_LIMITED = f"{RateLimited.__module__}.{RateLimited.__qualname__}"


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

    def error(self, msg: str, *args: object, **kwargs: Any) -> None:
        """RQ's error lines; for a job the runtime put back until its rate-limit slot (no failure, see
        :func:`tasklab.engine.execution.execute_task`), one line at INFO instead of a traceback."""
        kwargs.setdefault("stacklevel", 2)
        if msg == _RAISED and len(args) == 4 and f"{RATE_LIMITED}:" in str(args[3]):
            self._logger.info("Worker %s: job %s is held back by its rate limit", args[0], args[1], **kwargs)
            return
        self._logger.error(msg, *args, **kwargs)
