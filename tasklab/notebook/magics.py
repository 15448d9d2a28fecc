"""``%%task`` and ``%tasklab``: thin magics over the plain Python API.

The magics are where a notebook's code meets "the current lab": tasks of a ``%%task`` cell
are bound to it, and ``%tasklab`` commands act on it.

``%%task`` is :func:`tasklab.code.define.register_cell` with options from the magic line;
``%tasklab`` calls methods of the current lab. Mistakes raise ``UsageError``, which IPython
shows as a one-line message, with nothing registered.
"""

from __future__ import annotations

import builtins
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..code import cells
from ..code.define import register_cell
from ..errors import TaskLabError
from ..lab import connect, current_app, current_lab, current_lab_or_none
from ..local.connection import redact

_TASKLAB_USAGE = """\
%tasklab start              start the embedded Redis and local workers now (else at the first submit)
%tasklab status             server, queues and workers
%tasklab monitor            the live monitor widget
%tasklab workers N          start or stop local workers until N run
%tasklab connect URL [--namespace NAME]   use the Redis at URL from now on
%tasklab stop               stop the local workers and leave the embedded server"""


def _backoff(text: str) -> bool | float:
    lowered = text.lower()
    if lowered in ("true", "yes"):
        return True
    if lowered in ("false", "no"):
        return False
    return float(text)


def _words(line: str) -> list[str]:
    """The words of a magic's line, quotes honoured and a ``# comment`` left out."""
    try:
        return shlex.split(line, comments=True)
    except ValueError as exc:  # an unclosed quote
        raise UsageError(f"Cannot read the magic's line ({exc}): {line!r}. Close the quote.") from None


@magics_class
class TaskLabMagics(Magics):
    @magic_arguments()
    @argument("--name", help="task name (a cell with one public function only)")
    @argument("--queue", help="queue the tasks go to (default: default)")
    @argument("--base", help="a tasklab.Task subclass the tasks build on, defined in an earlier cell")
    @argument("--bind", action="store_true", default=None, help="pass the task instance as `self`")
    @argument("--max-retries", type=int, help="retries before a failure is final")
    @argument("--autoretry-for", help="comma-separated exception class names to retry on")
    @argument("--retry-backoff", nargs="?", const=True, type=_backoff, help="exponential backoff (base s)")
    @argument("--retry-backoff-max", type=int, help="cap of the backoff delay, in seconds")
    @argument("--no-retry-jitter", action="store_true", default=None, help="no random jitter on backoff")
    @argument("--time-limit", type=float, help="hard time limit, in seconds")
    @argument("--soft-time-limit", type=float, help="soft time limit, in seconds")
    @argument("--rate-limit", help="e.g. 10/m, 2/s, 100/h: starts across all workers")
    @argument("--concurrency-limit", type=int, help="at most this many running at once")
    @argument("--acks-late", action="store_true", default=None, help="requeue if the worker dies")
    @argument("--ignore-result", action="store_true", default=None, help="store no return value")
    @argument("--result-ttl", type=int, help="seconds a result is kept (-1: forever)")
    @cell_magic
    def task(self, line: str, cell: str) -> None:
        """Run the cell and register its public functions and Task subclasses as tasks.

        The cell's source is stored in Redis, versioned by content; workers load it from
        there. What it uses from earlier cells (imports, helpers, values) travels with it,
        and one line says what was carried.
        """
        args = parse_argstring(self.task, shlex.join(_words(line)))
        options = self._options(args)
        shell = self._ip()
        source = shell.transform_cell(cell)
        try:
            tasks = register_cell(source, shell.user_ns, options, app=current_app, report=print)
        except SyntaxError:
            raise  # IPython shows it as a syntax error of the cell, and the cell fails ("Run All" stops)
        except TaskLabError as exc:
            raise UsageError(str(exc)) from None
        made = cells.local_cells()[-1] if cells.local_cells() else None
        bases = ", ".join(made.bases) if made is not None and made.bases else ""
        if tasks or bases:
            version = made.version if made is not None else ""
            parts = [f"tasks: {', '.join(tasks)}"] if tasks else []
            parts += [f"base classes: {bases}"] if bases else []
            print(f"{'; '.join(parts)} (v{version[:7]})")

    def _ip(self) -> InteractiveShell:
        """The shell the magics are registered with (IPython types it as optional)."""
        assert self.shell is not None, "tasklab's magics are used through a shell"
        return self.shell

    def _options(self, args: Any) -> dict[str, Any]:
        options: dict[str, Any] = {
            "name": args.name,
            "queue": args.queue,
            "base": args.base,
            "bind": args.bind,
            "max_retries": args.max_retries,
            "retry_backoff": args.retry_backoff,
            "retry_backoff_max": args.retry_backoff_max,
            "retry_jitter": False if args.no_retry_jitter else None,
            "time_limit": args.time_limit,
            "soft_time_limit": args.soft_time_limit,
            "rate_limit": args.rate_limit,
            "concurrency_limit": args.concurrency_limit,
            "acks_late": args.acks_late,
            "ignore_result": args.ignore_result,
            "result_ttl": args.result_ttl,
        }
        if args.autoretry_for:
            classes = []
            for name in args.autoretry_for.split(","):
                name = name.strip()
                cls = self._ip().user_ns.get(name, getattr(builtins, name, None))
                if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                    raise UsageError(f"--autoretry-for: {name!r} is not an exception class in this notebook.")
                classes.append(cls)
            options["autoretry_for"] = tuple(classes)
        return {k: v for k, v in options.items() if v is not None}

    @line_magic
    def tasklab(self, line: str) -> None:
        """Control tasklab: start, status, monitor, workers N, connect URL, stop."""
        words = _words(line)
        command, rest = (words[0], words[1:]) if words else ("", [])
        try:
            if command == "start" and not rest:
                lab = current_lab()
                lab.ensure_workers()
                if lab.pool is not None and not lab.autostart_workers:
                    print(f"tasklab: Redis at {redact(lab.url)}, {len(lab.pool)} local workers")
            elif command == "status" and not rest:
                print(current_lab().status())
            elif command == "monitor" and not rest:
                current_lab().monitor()
            elif command == "workers" and len(rest) == 1 and rest[0].isdigit():
                pool = current_lab().workers(int(rest[0]))
                print(f"tasklab: {len(pool)} local workers")
            elif command == "connect" and rest:
                url, namespace = rest[0], None
                if rest[1:2] == ["--namespace"] and len(rest) == 3:
                    namespace = rest[2]
                elif len(rest) != 1:
                    raise UsageError(_TASKLAB_USAGE)
                lab = connect(url, namespace=namespace, autostart_workers=False)
                print(f"tasklab: connected to {redact(lab.url)} (namespace {lab.namespace})")
            elif command == "stop" and not rest:
                running = current_lab_or_none()
                if running is not None:
                    running.shutdown()
                print("tasklab: stopped")
            else:
                raise UsageError(f"Unknown or incomplete command {line!r}.\n{_TASKLAB_USAGE}")
        except TaskLabError as exc:
            raise UsageError(str(exc)) from None
