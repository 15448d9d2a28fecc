"""``%%task`` and ``%tasklab``: thin magics over the plain Python API.

The magics are where a notebook's code meets "the current lab": tasks of a ``%%task`` cell
are bound to it, and ``%tasklab`` commands act on it.

``%%task`` is :func:`tasklab.code.define.register_cell` with options from the magic line;
``%tasklab`` calls methods of the current lab. Mistakes raise ``UsageError``, which IPython
shows as a one-line message, with nothing registered.
"""

from __future__ import annotations

import argparse
import builtins
import shlex
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import MagicHelpFormatter, argument, kwds, magic_arguments

from ..client.result import AsyncResult
from ..code import cells
from ..code.define import register_cell
from ..core import options as opts
from ..errors import TaskLabError
from ..lab import connect, current_app, current_lab, current_lab_or_none
from ..local.connection import redact

_TASKLAB_USAGE = """\
%tasklab start              start the embedded Redis and local workers now (else at the first submit)
%tasklab status             server, queues and workers
%tasklab monitor            the live monitor widget
%tasklab workers N          start or stop local workers until N run
%tasklab debug ID           re-run task ID's failed attempt here and open the debugger at its exception
%tasklab connect URL [--namespace NAME]   use the Redis at URL from now on
%tasklab stop               stop the local workers and leave the embedded server"""


def _backoff(text: str) -> bool | float:
    lowered = text.lower()
    if lowered in ("true", "yes"):
        return True
    if lowered in ("false", "no"):
        return False
    return float(text)


_READ_AS: dict[str, Callable[[str], Any]] = {"str": str, "int": int, "float": float, "classes": str}


def _option_arguments(func: Any) -> Any:
    """The magic's arguments, one per task option of :data:`tasklab.core.options.HELP`, in its order."""
    for name, help in reversed(opts.HELP.items()):
        text = f"{help.text} (default: {opts.default_text(name)})"
        flag = "--" + name.replace("_", "-")
        if help.metavar is None and opts.DEFAULTS[name] is True:  # a switch that turns a default off
            func = argument(f"--no-{name.replace('_', '-')}", dest=name, action="store_false", default=None,
                            help=text)(func)  # fmt: skip
        elif help.metavar is None:
            func = argument(flag, action="store_true", default=None, help=text)(func)
        elif help.kind == "backoff":
            metavar = help.metavar.strip("[]")  # argparse adds the brackets of an optional value
            func = argument(flag, nargs="?", const=True, type=_backoff, metavar=metavar, help=text)(func)
        else:
            func = argument(flag, type=_READ_AS[help.kind], metavar=help.metavar, help=text)(func)
    return func


class _HelpFormatter(MagicHelpFormatter):
    """IPython's help of a magic, with metavars as they are written (``--retry-backoff [SECONDS]``),
    not wrapped in ``<…>``."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        return ", ".join(f"{flag} {self._format_args(action, action.dest.upper())}" for flag in action.option_strings)


def _words(line: str) -> list[str]:
    """The words of a magic's line, quotes honoured and a ``# comment`` left out."""
    try:
        return shlex.split(line, comments=True)
    except ValueError as exc:  # an unclosed quote
        raise UsageError(f"Cannot read the magic's line ({exc}): {line!r}. Close the quote.") from None


@magics_class
class TaskLabMagics(Magics):
    @magic_arguments("%task")  # IPython puts one % before it: the help shows %%task
    @kwds(formatter_class=_HelpFormatter)
    @_option_arguments
    @cell_magic
    def task(self, line: str, cell: str) -> None:
        """Run the cell and register its public functions and Task subclasses as tasks.

        The cell's source is stored in Redis, versioned by content; workers load it from
        there. What it uses from earlier cells (imports, helpers, values) travels with it,
        and one line says what was carried.
        """
        args = self.task.parser.parse_args(_words(line))  # the words as read, quotes taken off once
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
        """The task options of the magic's line, by their names in :data:`tasklab.core.options.HELP`."""
        options = {name: getattr(args, name) for name in opts.HELP}
        if options["autoretry_for"]:
            classes = []
            for name in options["autoretry_for"].split(","):
                name = name.strip()
                cls = self._ip().user_ns.get(name, getattr(builtins, name, None))
                if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                    raise UsageError(f"--autoretry-for: {name!r} is not an exception class in this notebook.")
                classes.append(cls)
            options["autoretry_for"] = tuple(classes)
        return {k: v for k, v in options.items() if v is not None}

    @line_magic
    def tasklab(self, line: str) -> None:
        """Control tasklab: start, status, monitor, workers N, debug ID, connect URL, stop."""
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
            elif command == "debug" and len(rest) == 1:
                AsyncResult(rest[0], current_lab()).debug()
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
