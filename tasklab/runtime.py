"""Old home of ``execute_task``: jobs stored in Redis before tasklab's packages name it here."""

from .engine.execution import execute_task

__all__ = ["execute_task"]
