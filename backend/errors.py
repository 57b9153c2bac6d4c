"""The one exception a task, the model registry or the command line raises for a failure the user can act on."""

from __future__ import annotations


class TaskError(Exception):
    """``code`` from contract.messages (INVALID_PARAMS, MODEL_MISSING, ...), a message and a hint."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


class JobCancelled(Exception):
    """Raised at the next step after a cancel request; the job yields no result."""
