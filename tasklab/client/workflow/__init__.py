"""Workflows (chains, groups, chords) compiled into RQ jobs, submitted, and waited for.

The signatures themselves are data, in :mod:`tasklab.core.signatures`; the worker's part
(what follows a failed step) is in :mod:`tasklab.engine.workflow`.
"""

from .results import GroupResult, WorkflowResult
from .write import submit_workflow

__all__ = ["GroupResult", "WorkflowResult", "submit_workflow"]
