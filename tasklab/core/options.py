"""Task options: Celery's names, validated when they are set, resolved in one order.

A value is looked up in the call (``apply_async(queue=...)``), then the task (decorator
argument or class attribute), then the lab, then :data:`DEFAULTS`. ``None`` means "inherit".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import defaults
from ..errors import ConfigurationError

#: Every task option with its default (see :data:`tasklab.defaults.TASK_OPTIONS`).
DEFAULTS: dict[str, Any] = defaults.TASK_OPTIONS

#: ``max_retries`` value meaning "retry forever": Celery spells it ``max_retries=None``, which tasklab
#: accepts where it is written explicitly (decorator argument, class attribute), since elsewhere
#: ``None`` means "inherit".
FOREVER = -1


@dataclass(frozen=True)
class OptionHelp:
    """How a task option reads in ``%%task?``, whose arguments are made from :data:`HELP`."""

    text: str
    #: What its value looks like; ``None`` for a switch (given: on).
    metavar: str | None = None
    #: How the value is read from the magic's line: "str", "int", "float", "backoff", "classes".
    kind: str = "str"
    #: The default in words, where :data:`DEFAULTS` alone would not say it.
    default: str | None = None


#: Every task option, in the order ``%%task?`` lists them (see :class:`OptionHelp`).
HELP: dict[str, OptionHelp] = {
    "name": OptionHelp("task name (a cell with one public function only)", "NAME", default="the function's name"),
    "queue": OptionHelp("the queue its jobs go to", "QUEUE"),
    "base": OptionHelp(
        "a tasklab.Task subclass the tasks build on, from an earlier cell", "CLASS", default="tasklab.Task"
    ),
    "bind": OptionHelp("pass the task instance as the first argument, `self`"),
    "max_retries": OptionHelp("retries before a failure is final (-1: forever)", "N", "int"),
    "autoretry_for": OptionHelp(
        "exception classes that retry the task, comma-separated", "EXC[,EXC...]", "classes", default="none"
    ),
    "retry_backoff": OptionHelp(
        "exponential backoff between retries; its first delay in seconds",
        "[SECONDS]",
        "backoff",
        default="off; alone: 1 s",
    ),
    "retry_backoff_max": OptionHelp("the longest backoff delay, in seconds", "SECONDS", "int"),
    "retry_jitter": OptionHelp("no random jitter on backoff delays", default="jitter on"),
    "default_retry_delay": OptionHelp("seconds before a retry without backoff or countdown", "SECONDS", "int"),
    "time_limit": OptionHelp(
        "hard time limit: the task is stopped after this many seconds", "SECONDS", "float", default="none"
    ),
    "soft_time_limit": OptionHelp(
        "soft time limit: SoftTimeLimitExceeded is raised in the task", "SECONDS", "float", default="none"
    ),
    "rate_limit": OptionHelp("starts across all workers, such as 10/m, 2/s or 100/h", "RATE", default="none"),
    "concurrency_limit": OptionHelp(
        "at most this many running at once, across all workers", "N", "int", default="none"
    ),
    "acks_late": OptionHelp("queue the task again if its worker dies while running it"),
    "ignore_result": OptionHelp("store no return value"),
    "result_ttl": OptionHelp("seconds a result is kept (-1: forever)", "SECONDS", "int", default="86400, a day"),
}


def default_text(name: str) -> str:
    """The default of option ``name``, in words."""
    written = HELP[name].default
    if written is not None:
        return written
    value = DEFAULTS[name]
    return "off" if value is False else "on" if value is True else str(value)


#: Options that a single call may override (``apply_async(**options)``).
CALL_OPTIONS = frozenset({"queue", "result_ttl", "ignore_result", "time_limit", "soft_time_limit"})

#: The largest whole-number options that are no number of seconds (those are at most a year).
_MOST = {"max_retries": 1_000_000, "concurrency_limit": 1_000_000}
_QUEUE = re.compile(r"[A-Za-z0-9_.-]{1,200}")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")
_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def rate_interval(rate: str) -> float:
    """Seconds between starts for a rate such as ``"10/m"`` (``"5"`` means per second).

    Raises :class:`ConfigurationError` for anything else, and for a rate of zero.
    """
    match = _RATE.match(rate) if isinstance(rate, str) else None
    if match is None:
        raise ConfigurationError(f"rate_limit={rate!r} is invalid: expected a rate such as '10/m', '2/s' or '100/h'.")
    count = float(match.group(1))
    if count <= 0:
        raise ConfigurationError(
            f"rate_limit={rate!r} lets no task start; give a positive rate such as '1/h', or no rate_limit."
        )
    interval = _RATE_UNITS[match.group(2) or "s"] / count
    if interval > defaults.LONGEST_SECONDS:
        raise ConfigurationError(
            f"rate_limit={rate!r} lets one task start every {interval:.3g} s, more than a year apart; "
            "give a rate such as '1/h', or no rate_limit."
        )
    return interval


def seconds(name: str, value: Any, *, lowest: float = 0.0, inclusive: bool = False) -> float:
    """``value`` as a number of seconds for option ``name``: a real, finite number above ``lowest``
    (or equal to it, ``inclusive``) and at most :data:`~tasklab.defaults.LONGEST_SECONDS`; else a
    :class:`ConfigurationError` that says so."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= lowest if inclusive else value > lowest) and value <= defaults.LONGEST_SECONDS
    if not ok:
        bound = ">=" if inclusive else ">"
        raise ConfigurationError(
            f"{name}={value!r} is invalid: expected a number of seconds {bound} {lowest:g} and at most a year "
            f"({defaults.LONGEST_SECONDS})."
        )
    return float(value)


def _check_type(name: str, value: Any) -> Any:
    def fail(expected: str) -> ConfigurationError:
        return ConfigurationError(f"Task option {name}={value!r} is invalid: expected {expected}.")

    if name == "name":
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            raise fail("a non-empty string without spaces")
    elif name == "queue":
        if not isinstance(value, str) or not _QUEUE.fullmatch(value):
            raise fail("a queue name of letters, digits, '_', '-' and '.' (no ':', which RQ's own keys use)")
    elif name in ("bind", "ignore_result", "retry_jitter", "acks_late"):
        if not isinstance(value, bool):
            raise fail("True or False")
    elif name in ("result_ttl", "max_retries", "retry_backoff_max", "concurrency_limit", "default_retry_delay"):
        lowest = -1 if name in ("result_ttl", "max_retries") else 1 if name == "concurrency_limit" else 0
        highest = _MOST.get(name, defaults.LONGEST_SECONDS)
        if not isinstance(value, int) or isinstance(value, bool) or not lowest <= value <= highest:
            kept = " (-1 keeps results forever)" if name == "result_ttl" else ""
            raise fail(f"a whole number from {lowest} to {highest}{kept}")
    elif name in ("time_limit", "soft_time_limit"):
        seconds(name, value)
    elif name == "retry_backoff":
        if not isinstance(value, bool):
            seconds(name, value, inclusive=True)
    elif name == "autoretry_for":
        items = value if isinstance(value, tuple | list) else (value,)
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in items):
            raise fail("an exception class or a tuple of them")
        value = tuple(items)
    elif name == "rate_limit":
        rate_interval(value)
    return value


def validate(options: Mapping[str, Any], *, where: str = "task") -> dict[str, Any]:
    """Check names, types and support of ``options``; return them with ``None`` values dropped."""
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if name not in DEFAULTS:
            close = [n for n in DEFAULTS if n.replace("_", "") == name.replace("_", "").lower()]
            hint = f" Did you mean {close[0]!r}?" if close else f" Known options: {', '.join(sorted(DEFAULTS))}."
            raise ConfigurationError(f"Unknown {where} option {name!r}.{hint}")
        if value is None:
            if name == "max_retries":
                checked[name] = FOREVER
            continue
        checked[name] = _check_type(name, value)
    return checked


def resolve(name: str, *layers: Mapping[str, Any] | None) -> Any:
    """The first non-``None`` value of ``name`` in ``layers`` (call, task, lab), else the default."""
    for layer in layers:
        if layer is not None and layer.get(name) is not None:
            return layer[name]
    return DEFAULTS[name]
