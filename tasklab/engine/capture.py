"""Capturing what a task prints, per attempt, bounded, while still writing the worker log."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

from .. import defaults

TASK_LOGGER = "tasklab.task"


class _Tee:
    """A text stream that copies writes to the capture and to the original stream."""

    def __init__(self, capture: OutputCapture, original: TextIO):
        self._capture = capture
        self._original = original

    def write(self, text: str) -> int:
        self._capture.append(text)
        return self._original.write(text)

    def flush(self) -> None:
        self._original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


class _Handler(logging.Handler):
    """The one handler on the ``tasklab.task`` logger: it adds each record to the innermost capture
    running, if any (one handler per process, rather than one added and removed per attempt)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("[%(levelname)s/%(name)s] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        captures = _active
        if not captures:
            return
        try:
            captures[-1].append(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


#: The captures running, innermost last (see OutputCapture.__enter__).
_active: list[OutputCapture] = []
_handler_lock = threading.Lock()
_handler: _Handler | None = None


def _install_handler() -> None:
    global _handler
    with _handler_lock:
        if _handler is None:
            logger = logging.getLogger(TASK_LOGGER)
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.INFO)
            _handler = _Handler()
            logger.addHandler(_handler)


class OutputCapture:
    """Within ``with``, stdout, stderr and ``tasklab.task.*`` loggers are kept: the last ``limit`` characters."""

    def __init__(self, limit: int = defaults.OUTPUT_LIMIT):
        self.limit = limit
        self._parts: list[str] = []
        self._size = 0
        self._dropped = 0
        self._lock = threading.Lock()

    def append(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            self._parts.append(text)
            self._size += len(text)
            while self._size > self.limit and len(self._parts) > 1:
                removed = self._parts.pop(0)
                self._size -= len(removed)
                self._dropped += len(removed)
            if self._size > self.limit:  # one huge write: keep its end
                cut = self._size - self.limit
                self._parts[0] = self._parts[0][cut:]
                self._size -= cut
                self._dropped += cut

    def text(self) -> str:
        with self._lock:
            body = "".join(self._parts)
            if self._dropped:
                return f"[... {self._dropped} earlier characters dropped ...]\n{body}"
            return body

    def __enter__(self) -> OutputCapture:
        if _handler is None:
            _install_handler()
        self._stdout, self._stderr = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(self, sys.stdout), _Tee(self, sys.stderr)
        _active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout, sys.stderr = self._stdout, self._stderr
        if self in _active:
            _active.remove(self)
