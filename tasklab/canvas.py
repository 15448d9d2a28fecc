"""Old home of the workflow functions jobs stored in Redis before tasklab's packages still name."""

from .engine.workflow import join, on_step_failure

__all__ = ["join", "on_step_failure"]
