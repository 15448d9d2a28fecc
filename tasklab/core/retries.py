"""Whether and when a failed attempt runs again: Celery's policy.

A task is retried when it raises an exception listed in ``autoretry_for`` or calls
``self.retry()``, while ``request.retries < max_retries`` (``None``: no limit). The delay is
the countdown given to ``retry()``; else, with ``retry_backoff``, ``base * 2 ** retries``
capped at ``retry_backoff_max``, with full jitter (uniform between 0 and that) unless
``retry_jitter`` is off; else ``default_retry_delay``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError, MaxRetriesExceededError, Retry
from . import options as opts


def backoff_delay(retries: int, backoff: bool | float, backoff_max: float, jitter: bool, rng: random.Random) -> float:
    """The delay before attempt ``retries + 1`` under exponential backoff."""
    base = 1.0 if backoff is True else float(backoff)
    ceiling = min(float(backoff_max), base * 2**retries)
    return rng.uniform(0, ceiling) if jitter else ceiling


@dataclass(frozen=True)
class Decision:
    """What to do with a failed attempt: retry after ``delay`` seconds, or fail with ``exc``."""

    retry: bool
    exc: BaseException
    delay: float = 0.0


def decide(options: dict[str, Any], exc: BaseException, retries: int, rng: random.Random | None = None) -> Decision:
    """Decide on the attempt that raised ``exc`` after ``retries`` earlier retries.

    ``options`` are the task's resolved options. The returned ``exc`` is what to report:
    the cause of a ``Retry``, or ``MaxRetriesExceededError`` as Celery raises it.
    """
    option = lambda name: opts.resolve(name, options)  # noqa: E731
    if isinstance(exc, Retry):
        cause, countdown = exc.exc, exc.when
        limit = exc.max_retries if exc.max_retries is not None else option("max_retries")
    elif option("autoretry_for") and isinstance(exc, tuple(option("autoretry_for"))):
        cause, countdown, limit = exc, None, option("max_retries")
    else:
        return Decision(False, exc)
    if limit != opts.FOREVER and retries >= limit:
        final = cause if cause is not None else MaxRetriesExceededError(
            f"Can't retry: the task used its {limit} retries."
        )  # fmt: skip
        return Decision(False, final)
    if countdown is None:
        if option("retry_backoff"):
            countdown = backoff_delay(
                retries, option("retry_backoff"), option("retry_backoff_max"), option("retry_jitter"),
                rng or random.Random(),
            )  # fmt: skip
        else:
            countdown = option("default_retry_delay")
    return Decision(True, cause if cause is not None else exc, float(countdown))


def retry_schedule(task_or_options: Any, seed: int | None = 0) -> list[float]:
    """The planned delays before each retry of a task that keeps failing (``max_retries`` of them).

    With jitter, the delays come from a random generator seeded with ``seed``; the real ones
    vary, each between 0 and its cap.
    """
    if isinstance(task_or_options, dict):
        options = opts.validate(task_or_options)
    else:
        task_class: Any = task_or_options if isinstance(task_or_options, type) else type(task_or_options)
        options = task_class.task_options()
    limit = opts.resolve("max_retries", options)
    if limit == opts.FOREVER:
        raise ConfigurationError(
            "max_retries is None (retry forever), so there is no finite schedule to show; give max_retries a number."
        )
    rng = random.Random(seed)
    reason = Retry(exc=RuntimeError("preview"))
    return [decide(options, reason, n, rng).delay for n in range(limit)]
