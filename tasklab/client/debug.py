"""Post-mortem debugging of a failed task in the kernel: ``result.debug()``.

The failed attempt is run again here, on the calling thread: the exact code version its job ran
(loaded by :mod:`tasklab.code.loader`, from Redis if this kernel has not run it), its arguments
(with the values of the workflow steps it followed), its attempt number (``self.request.retries``)
and its time limits. It runs as an eager run does (:mod:`tasklab.core.eager`): ``before_start``
is called, the outcome hooks are not, and what it reports with ``update_state`` is kept nowhere.
No worker is involved and nothing is written to Redis, though the task's own code may write.

The outcome is a :class:`Reproduction`: whether the failure happened again (the same exception
type), something else failed here (the task needed the worker's environment), or it succeeded.
:meth:`Reproduction.debug` opens IPython's debugger at the exception, as ``%debug`` does.
"""

from __future__ import annotations

import contextlib
import os
import reprlib
import sys
import threading
import types
from dataclasses import dataclass
from typing import Any, TextIO

from rq.exceptions import NoSuchJobError
from rq.job import Job

from ..code.loader import task_for
from ..code.serialization import Serializer, dumps
from ..core.eager import eager_request
from ..core.hooks import call_hook
from ..core.request import request_stack
from ..core.retries import decide
from ..core.states import FAILURE
from ..engine import keys
from ..engine.execution import parent_value, time_limits
from ..errors import DebugError, TaskLabError

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

#: Failures a re-run in the kernel could end the same way: the process died running the task.
_FATAL = {"WorkerLostError": "its worker process died while it ran (killed, out of memory, or a crash)"}


@dataclass
class Reproduction:
    """A failed attempt run again in this process (:meth:`AsyncResult.reproduce`)."""

    task_id: str
    task_name: str
    version: str
    attempt: int
    #: The failure the worker recorded: its exception's type (its name, without its module), and
    #: ``"Type: message"``.
    original_type: str
    original: str
    #: What the re-run raised (as the worker would have reported it), or ``None`` if it succeeded.
    exception: BaseException | None
    #: What it returned, when it succeeded.
    value: Any = None

    @property
    def reproduced(self) -> bool:
        """Whether the re-run failed as the attempt did (an exception of the same type)."""
        return self.exception is not None and type(self.exception).__qualname__.rsplit(".", 1)[-1] == self.original_type

    @property
    def traceback(self) -> types.TracebackType | None:
        """The re-run's traceback, from the task's own first frame (tasklab's frames left out)."""
        if self.exception is None:
            return None
        tb = self.exception.__traceback__
        while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):
            tb = tb.tb_next
        return tb

    @property
    def locals(self) -> dict[str, Any]:
        """The local variables of the frame that raised (where the debugger stops), empty if it succeeded."""
        tb = self.traceback
        if tb is None:
            return {}
        while tb.tb_next is not None:
            tb = tb.tb_next
        return dict(tb.tb_frame.f_locals)

    def summary(self) -> str:
        """One line: what was run and what came of it."""
        run = f"Task {self.task_name} ({self.task_id}, attempt {self.attempt + 1}, v{self.version[:7]})"
        if self.exception is None:
            return (
                f"{run} succeeded when run here (it returned {_short(self.value)}): its failure on the worker, "
                f"{self.original}, was not reproduced. It may depend on the worker's environment or on data that "
                "has changed since."
            )
        here = f"{type(self.exception).__name__}: {self.exception}"
        if self.reproduced:
            return f"{run} failed again here: {_short_text(here)}."
        return (
            f"{run} failed differently here: {_short_text(here)}, where the worker raised {self.original}. The "
            "task may need the worker's environment (files, variables, services); this is the failure seen here."
        )

    def __repr__(self) -> str:
        return f"<Reproduction: {self.summary()}>"

    def debug(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        """Open IPython's debugger at the exception, as ``%debug`` does (``p x``, ``up``, ``c``, ``q``).
        ``stdin``/``stdout`` default to the shell's (the notebook's input box, in a kernel)."""
        tb = self.traceback
        if tb is None:
            raise DebugError(f"{self.summary()} There is no exception to debug.")
        assert self.exception is not None  # there is a traceback
        post_mortem(self.exception, tb, stdin, stdout)


def reproduce(result: Any) -> Reproduction:
    """Run ``result``'s failed attempt again in this process (see the module's docstring).

    :class:`DebugError` if it has not failed, its job or code is gone, or its worker died running it.
    """
    connection = result.connection
    try:
        job = Job.fetch(result.id, connection=connection, serializer=Serializer)
    except NoSuchJobError:
        raise DebugError(
            f"Task {result.id} is not in this lab's Redis (an unknown id, or its record expired or was forgotten): "
            "there is no failed attempt to debug."
        ) from None
    meta = job.meta
    if keys.META_TASK not in meta:
        raise DebugError(f"Job {result.id} is not a tasklab task: debug() re-runs the tasks tasklab submitted.")
    state = result.state
    if state != FAILURE:
        raise DebugError(
            f"Task {result.id} is {state}, not FAILURE: debug() re-runs an attempt that failed for good. "
            + ("Wait for it to fail (result.get()), then debug it." if state not in ("SUCCESS", "REVOKED") else "")
        )
    recorded = {
        k.decode(): v.decode(errors="replace") for k, v in connection.hgetall(keys.exception_key(job.id)).items()
    }
    original_type = recorded.get("type", "Exception").rsplit(".", 1)[-1]  # recorded as module.qualname
    if original_type in _FATAL:
        raise DebugError(
            f"Task {job.id} failed with {original_type}: {_FATAL[original_type]}. Run again in the kernel, it could "
            f"end the kernel the same way, so debug() does not; to try anyway, run the task with task.apply(args)."
        )
    name, version, attempt = meta[keys.META_TASK], meta[keys.META_VERSION], int(meta.get(keys.META_RETRIES, 0))
    try:
        task = task_for(version, name)
    except TaskLabError as exc:
        raise DebugError(f"Cannot load the code of task {name} (v{version[:7]}) to debug it: {exc}") from None
    args, kwargs = tuple(job.args), dict(job.kwargs)
    parents = meta.get(keys.META_PARENTS)
    if parents:
        try:
            values = [parent_value(connection, parent) for parent in parents]
        except TaskLabError as exc:
            raise DebugError(f"Cannot debug workflow step {job.id}: {exc}") from None
        args = ((values[0],) if meta.get(keys.META_MERGE) == "one" else (values,)) + args
    original = f"{original_type}: {recorded['message']}" if recorded.get("message") else original_type
    limits = (meta.get(keys.META_SOFT_TIME_LIMIT), meta.get(keys.META_TIME_LIMIT))
    exception, value = _run(task, args, kwargs, job.id, attempt, limits)
    return Reproduction(job.id, name, version, attempt, original_type, _short_text(original), exception, value)


def _run(
    task: Any, args: tuple, kwargs: dict, task_id: str, attempt: int, limits: tuple[Any, Any]
) -> tuple[BaseException | None, Any]:
    """Call the task as its attempt was called; the exception it failed with (as the worker reports
    it), or ``None`` and its value."""
    stack = request_stack()
    stack.append(eager_request(task, args, kwargs, task_id, attempt))
    try:
        call_hook(task, "before_start", task_id, task_id, args, kwargs)
        on_main = threading.current_thread() is threading.main_thread()  # SIGALRM works there only
        try:
            with time_limits(*limits) if on_main else contextlib.nullcontext():
                value = task(*args, **kwargs)
            dumps(value)  # a worker fails an attempt whose value cannot be stored
        except Exception as exc:
            reported = decide(type(task).task_options(), exc, attempt).exc  # self.retry(exc=...) reports exc
            if reported.__traceback__ is None:
                reported = reported.with_traceback(exc.__traceback__)
            return reported, None
        return None, value
    finally:
        stack.pop()


def post_mortem(
    exc: BaseException, tb: types.TracebackType, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> None:
    """IPython's debugger at the innermost frame of ``tb`` (of ``exc``), as ``%debug`` opens it: the shell's own
    debugger class in a shell (ipykernel's in a notebook), else IPython's plain one."""
    from IPython.core.debugger import Pdb
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance() if InteractiveShell.initialized() else None
    debugger_cls = getattr(shell, "debugger_cls", Pdb) if shell is not None else Pdb
    debugger = debugger_cls(stdin=stdin, stdout=stdout) if (stdin or stdout) else debugger_cls()
    debugger.reset()
    debugger.botframe = tb.tb_frame
    # As after an uncaught exception, so that %debug opens the same place again.
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, tb
    debugger.interaction(None, tb)


def _short(value: Any) -> str:
    return reprlib.repr(value)


def _short_text(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
