"""Task options: Celery's names, validated when they are set, resolved in one order.

A value is looked up in the call (``apply_async(queue=...)``), then the task (decorator
argument or class attribute), then the lab, then :data:`DEFAULTS`. ``None`` means "inherit".
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigurationError

#: Every task option with its default. ``None`` means unset: no limit, no name, inherit.
DEFAULTS: dict[str, Any] = {
    "name": None,
    "queue": "default",
    "base": None,
    "bind": False,
    "ignore_result": False,
    # Celery keeps results for a day (result_expires); RQ for 500 s. Notebook users come back
    # to a result after lunch, so we follow Celery.
    "result_ttl": 86400,
    "max_retries": 3,
    # Celery's delay before a retry when there is no backoff and no countdown: three minutes.
    "default_retry_delay": 180,
    "autoretry_for": (),
    "retry_backoff": False,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "time_limit": None,
    "soft_time_limit": None,
    "rate_limit": None,
    "concurrency_limit": None,
    "acks_late": False,
}

#: ``max_retries`` value meaning "retry forever": Celery spells it ``max_retries=None``, which tasklab
#: accepts where it is written explicitly (decorator argument, class attribute), since elsewhere
#: ``None`` means "inherit".
FOREVER = -1

#: Options accepted by name but not implemented yet; setting one is refused, never ignored.
NOT_YET_SUPPORTED: dict[str, str] = {}

#: Options that a single call may override (``apply_async(**options)``).
CALL_OPTIONS = frozenset({"queue", "result_ttl", "ignore_result", "time_limit", "soft_time_limit"})

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")


def _check_type(name: str, value: Any) -> Any:
    def fail(expected: str) -> ConfigurationError:
        return ConfigurationError(f"Task option {name}={value!r} is invalid: expected {expected}.")

    if name in ("name", "queue"):
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            raise fail("a non-empty string without spaces")
    elif name in ("bind", "ignore_result", "retry_jitter", "acks_late"):
        if not isinstance(value, bool):
            raise fail("True or False")
    elif name in ("result_ttl", "max_retries", "retry_backoff_max", "concurrency_limit", "default_retry_delay"):
        lowest = -1 if name in ("result_ttl", "max_retries") else 0
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            raise fail("a whole number" + (" (-1 keeps results forever)" if name == "result_ttl" else " >= 0"))
    elif name in ("time_limit", "soft_time_limit"):
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise fail("a number of seconds > 0")
    elif name == "retry_backoff":
        if not isinstance(value, bool | int | float) or value < 0:
            raise fail("True, False or a number of seconds")
    elif name == "autoretry_for":
        items = value if isinstance(value, tuple | list) else (value,)
        if not all(isinstance(t, type) and issubclass(t, BaseException) for t in items):
            raise fail("an exception class or a tuple of them")
        value = tuple(items)
    elif name == "rate_limit" and (not isinstance(value, str) or not _RATE.match(value)):
        raise fail("a rate such as '10/m', '2/s' or '100/h'")
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
        if name in NOT_YET_SUPPORTED and value != DEFAULTS[name]:
            raise ConfigurationError(
                f"Task option {name!r} is not yet supported (it comes with {NOT_YET_SUPPORTED[name]}); "
                "remove it for now."
            )
        checked[name] = _check_type(name, value)
    return checked


def resolve(name: str, *layers: Mapping[str, Any] | None) -> Any:
    """The first non-``None`` value of ``name`` in ``layers`` (call, task, lab), else the default."""
    for layer in layers:
        if layer is not None and layer.get(name) is not None:
            return layer[name]
    return DEFAULTS[name]
