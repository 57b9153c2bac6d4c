"""The one exception of the model layer: a user-facing model problem with a protocol error code."""

from __future__ import annotations

from backend.errors import TaskError


class ModelError(TaskError):
    """A user-facing model problem: ``code`` is a protocol error code, ``hint`` how to fix it."""

    def __str__(self) -> str:
        return self.message
