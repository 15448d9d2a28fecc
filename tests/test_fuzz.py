"""Generated bad input, hundreds of cases from a fixed seed: each is refused at once, with a TaskLabError
(or what Python itself raises for the user's own code), and nothing is registered or queued half-way.

Every case is checked for the same three things: the outcome is one a user can act on, it comes within
:data:`DEADLINE` seconds, and what was registered and queued before is exactly what is there after,
unless the input was in fact valid. The seed makes a failure reproducible: the case's description is
in the assertion.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from IPython.core.error import UsageError
from rq import Queue

import tasklab
from tasklab.code import cells
from tasklab.core import options as opts
from tasklab.core.task import RESERVED_NAMES

from .conftest import task_cell

SEED = 16
DEADLINE = 10.0  # seconds a refusal may take
CASES = 250  # of each kind

#: The magic's own flags (switches and valued options alike), and flags it does not have.
FLAGS = ["--" + name.replace("_", "-") for name in opts.HELP] + ["--no-retry-jitter"]
BOGUS_FLAGS = ["--no-such-flag", "-x", "--time_limit", "--Name", "-h", "--help", "--countdown", "---queue", "--base="]
VALUES = [
    "nan", "NaN", "inf", "-inf", "-1", "0", "1e308", "-1e308", "1e-308", "''", '""', ":", "a:b", "é", "\ud800",
    "'unclosed", '"unclosed', "10/m", "0/s", "1/0", "x/y", "1e-30/s", "ValueError", "NoSuchError",
    "ValueError,KeyError", "In", "print", "1", "3.5", "yes", "True", "#", "\\", "$x", "{}", "[1]", "None",
    "0x10", "1_000", "\uff11", "\t", "a b", "--", "-", "=",
]  # fmt: skip


@dataclass
class Outcome:
    error: BaseException | None
    seconds: float


def attempt(action: Callable[[], object]) -> Outcome:
    started = time.monotonic()
    try:
        action()
    except Exception as exc:  # what is raised is the outcome judged
        return Outcome(exc, time.monotonic() - started)
    return Outcome(None, time.monotonic() - started)


def acceptable(error: BaseException, *, syntax: bool = False, own: type[BaseException] | None = None) -> bool:
    """A TaskLabError, the UsageError a magic makes of one, a SyntaxError for a cell with one, or the user's
    own exception where the input is the user's own code raising it."""
    if isinstance(error, tasklab.TaskLabError | UsageError):
        return True
    if syntax and isinstance(error, SyntaxError):
        return True
    return own is not None and isinstance(error, own)


def jobs_anywhere(lab: tasklab.Lab) -> int:
    """Jobs queued or scheduled on any queue of the lab's Redis."""
    return sum(q.count + q.scheduled_job_registry.count for q in Queue.all(connection=lab.connection))


def clear_jobs(lab: tasklab.Lab) -> None:
    for queue in Queue.all(connection=lab.connection):
        queue.empty()
        for job_id in queue.scheduled_job_registry.get_job_ids():
            queue.scheduled_job_registry.remove(job_id, delete_job=True)


class Checker:
    """Runs cases and collects what went wrong, so that one run reports every failing case."""

    def __init__(self, lab: tasklab.Lab):
        self.lab = lab
        self.failures: list[str] = []
        self.refused = self.accepted = 0

    def state(self) -> tuple[dict[str, str], set[str], int]:
        versions = {c.version for c in cells.local_cells()}
        return self.lab.registry.current(self.lab.namespace), versions, jobs_anywhere(self.lab)

    def run(self, what: str, action: Callable[[], object], *, must_fail: bool, syntax: bool = False,
            own: type[BaseException] | None = None) -> None:  # fmt: skip
        before = self.state()
        outcome = attempt(action)
        if outcome.seconds > DEADLINE:
            self.failures.append(f"{what}: took {outcome.seconds:.1f} s")
        if outcome.error is None:
            self.accepted += 1
            if must_fail:
                self.failures.append(f"{what}: was accepted")
            clear_jobs(self.lab)
            return
        self.refused += 1
        if not acceptable(outcome.error, syntax=syntax, own=own):
            self.failures.append(f"{what}: raised {type(outcome.error).__name__}: {outcome.error}")
        after = self.state()
        if after != before:
            self.failures.append(f"{what}: refused, but left something registered or queued: {before} -> {after}")
            clear_jobs(self.lab)

    def check(self) -> None:
        assert not self.failures, f"{len(self.failures)} cases failed:\n" + "\n".join(self.failures[:20])


# -- %%task option lines ---------------------------------------------------------------------------------


def option_line(rng: random.Random) -> tuple[str, bool]:
    """A random magic line, and whether it is bad for sure (a flag the magic lacks, an unclosed quote, a
    lone surrogate, a number that is no number of seconds)."""
    parts: list[str] = []
    surely_bad = commented = False
    for _ in range(rng.randint(1, 3)):
        bogus = rng.random() < 0.2
        flag = rng.choice(BOGUS_FLAGS if bogus else FLAGS)
        value = rng.choice(VALUES) if rng.random() < 0.85 else ""
        joined = bool(value) and rng.random() < 0.3
        parts.append(f"{flag}={value}" if joined else f"{flag} {value}".strip())
        if commented:  # after a "#" word, the rest of the line is a comment
            continue
        surely_bad |= bogus or value in ("'unclosed", '"unclosed', "\ud800")
        surely_bad |= flag in ("--time-limit", "--soft-time-limit") and value in ("nan", "inf", "-inf", "-1", "1e308")
        commented = value == "#" and not joined
    return " ".join(parts), surely_bad


def test_fuzz_task_option_lines(shell, lab):
    rng = random.Random(SEED)
    checker = Checker(lab)
    started = time.monotonic()
    for index in range(CASES):
        line, surely_bad = option_line(rng)
        source = f"def fz{index}(x=None):\n    return x\n"
        checker.run(f"%%task {line!r}", lambda: task_cell(shell, source, line), must_fail=surely_bad)  # noqa: B023
        if f"fz{index}" in shell.user_ns and not isinstance(shell.user_ns[f"fz{index}"], tasklab.Task):
            checker.failures.append(f"%%task {line!r}: fz{index} is left in the notebook, not a task")
    checker.check()
    assert checker.refused > CASES // 2 and checker.accepted > 0, (checker.refused, checker.accepted)
    assert time.monotonic() - started < 30


# -- %%task cell bodies ----------------------------------------------------------------------------------

TEMPLATE = (
    "import math\n\n\ndef fz{i}(values, scale=2):\n    total = sum(values) * scale\n    return math.sqrt(total)\n\n\n"
    "def _helper{i}(x):\n    return [x, (x, {{'k': x}})]\n"
)
BAD_CLASSES = [
    ("import tasklab\n\nclass Fz{i}(tasklab.Task):\n    run = {value}\n", ["5", "None", "'text'", "[]"]),
    (
        "import tasklab\n\nclass Fz{i}(tasklab.Task):\n    def __init__(self, {value}):\n        pass\n\n"
        "    def run(self):\n        return 1\n",
        ["client", "a, b=1", "*, key", "x, /"],
    ),
    (
        "import tasklab\n\ndef fz{i}():\n    return 1\n\nclass Fz{i}(tasklab.Task):\n    name = {value}\n\n"
        "    def run(self):\n        return 2\n",
        ["'fz{i}'", "'\\ud800'", "5"],  # the function's name again, a lone surrogate, no string
    ),
]


def mutated(source: str, rng: random.Random) -> str:
    """``source`` with a character deleted, inserted or the text cut short: often a syntax error."""
    at = rng.randrange(len(source))
    how = rng.choice(["delete", "insert", "cut"])
    if how == "delete":
        return source[:at] + source[at + 1 :]
    if how == "insert":
        return source[:at] + rng.choice("()[]{}:'\"\\ \t\n=@,.#") + source[at:]
    return source[:at]


def cell_body(rng: random.Random, i: int, unfit: list[str]) -> tuple[str, str, dict[str, Any]]:
    """A random bad cell: its kind, its source, and how :meth:`Checker.run` should judge it."""
    kind = rng.choice(["syntax", "undefined", "unfit", "surrogate", "null", "builtin", "raises", "class"])
    valid = TEMPLATE.format(i=i)
    if kind == "syntax":
        # A cut import ("import ath") is the user's own code failing as it runs in the notebook.
        return kind, mutated(valid, rng), {"must_fail": False, "syntax": True, "own": ImportError}
    if kind == "undefined":
        return kind, valid.replace("math.sqrt", f"undefined_{rng.randrange(10**6)}"), {"must_fail": True}
    if kind == "unfit":
        return kind, valid.replace("scale=2", f"scale={rng.choice(unfit)}"), {"must_fail": True}
    if kind in ("surrogate", "null"):
        at = rng.randrange(len(valid))
        char = chr(rng.randrange(0xD800, 0xE000)) if kind == "surrogate" else "\0"
        # IPython reads the cell before tasklab does: inside indentation, it is an IndentationError.
        return kind, valid[:at] + char + valid[at:], {"must_fail": True, "syntax": True}
    if kind == "builtin":
        name = rng.choice(sorted(RESERVED_NAMES))
        return kind, valid.replace(f"def fz{i}(", f"def {name}("), {"must_fail": True}
    if kind == "raises":
        error = rng.choice([ValueError, KeyError, ZeroDivisionError, RuntimeError])
        return kind, valid + f"\nraise {error.__name__}('the user')\n", {"must_fail": True, "own": error}
    template, values = rng.choice(BAD_CLASSES)
    return kind, template.format(i=i, value=rng.choice(values).format(i=i)), {"must_fail": True}


def test_fuzz_task_cell_bodies(shell, lab, tmp_path):
    rng = random.Random(SEED + 1)
    # Values in the notebook that no worker can be given.
    shell.user_ns["LOCK"] = threading.Lock()
    shell.user_ns["HANDLE"] = (tmp_path / "f.txt").open("w")
    shell.user_ns["EVENT"] = threading.Event()
    unfit = ["LOCK", "HANDLE", "EVENT", "In", "get_ipython", "display"]
    checker = Checker(lab)
    started = time.monotonic()
    try:
        for index in range(CASES):
            kind, source, judge = cell_body(rng, index, unfit)
            checker.run(f"{kind} cell {source!a}", lambda: task_cell(shell, source), **judge)  # noqa: B023
    finally:
        shell.user_ns["HANDLE"].close()
    checker.check()
    assert checker.refused > CASES // 2, (checker.refused, checker.accepted)
    assert shell.user_ns["get_ipython"]() is shell, "no cell broke the magics"
    task_cell(shell, "def still_works():\n    return 1\n")
    assert "still_works" in lab.registry.current(lab.namespace)
    assert time.monotonic() - started < 30


# -- calls: delay, apply_async, map_async ----------------------------------------------------------------


def _bad_values(deep: list, handle: Any) -> list[Any]:
    return [
        math.nan, math.inf, -math.inf, -1, 1e308, 10**30, True, "5", "", ":", "a:b", "\ud800", [], {}, object(),
        1j, datetime.min, datetime.max, datetime(9999, 1, 1), datetime.now() - timedelta(days=1),
        date(2020, 1, 1), timedelta(days=1), "x" * 129, "é", 0, 5, deep, handle,
    ]  # fmt: skip


def call(rng: random.Random, target: Any, deep: list, handle: Any) -> tuple[str, Callable[[], object], bool]:
    """A random call of ``target(a, b=None)`` with bad arguments or options: what it is, the call, and
    whether it is bad for sure (its arguments are; its options may be valid)."""
    values = _bad_values(deep, handle)
    arguments: list[tuple[str, tuple, dict]] = [
        ("fine", (1,), {}),
        ("open file", (handle,), {}),
        ("open file in a list", ([1, handle],), {}),
        ("deep nesting", (deep,), {}),
        ("deep nesting as b", (1,), {"b": deep}),
        ("a lock", (threading.Lock(),), {}),
        ("a generator", ((i for i in range(3)),), {}),
        ("too many", (1, 2, 3), {}),
        ("missing", (), {}),
        ("unknown keyword", (1,), {"c": 3}),
    ]
    label, args, kwargs = rng.choice(arguments)
    how = rng.choice(["delay", "apply_async", "apply_async", "apply_async", "map_async"])
    if how == "delay":
        return f"delay({label})", lambda: target.delay(*args, **kwargs), label != "fine"
    if how == "map_async":
        items = [1, 2, rng.choice([handle, deep, threading.Lock(), 3])]
        return f"map_async([1, 2, {type(items[2]).__name__}])", lambda: target.map_async(items), items[2] != 3
    options: dict[str, Any] = {}
    for _ in range(rng.randint(0, 2)):
        option = rng.choice(["countdown", "eta", "time_limit", "soft_time_limit", "task_id", "queue", "ignore_result",
                             "result_ttl", "priority", "expires", "retries", "rate_limit", "link"])  # fmt: skip
        options[option] = rng.choice(values)
    shown = {k: (type(v).__name__ if v is deep or v is handle else v) for k, v in options.items()}
    return f"apply_async({label}, {shown!a})", lambda: target.apply_async(args, kwargs, **options), label != "fine"


def test_fuzz_calls(shell, lab, tmp_path):
    rng = random.Random(SEED + 2)
    task_cell(shell, "def target(a, b=None):\n    return a\n")
    target = shell.user_ns["target"]
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    path = tmp_path / "data.txt"
    path.write_text("contents")
    checker = Checker(lab)
    started = time.monotonic()
    with path.open() as handle:
        for _ in range(CASES):
            what, action, surely_bad = call(rng, target, deep, handle)
            checker.run(what, action, must_fail=surely_bad)
    checker.check()
    assert checker.refused > CASES // 2 and checker.accepted > 0, (checker.refused, checker.accepted)
    assert time.monotonic() - started < 30
