"""One module per task, named like the task: ``run(ctx, params) -> outputs`` with the task's typed
parameters and outputs from ``contract.tasks``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from contract.tasks import TASKS

if TYPE_CHECKING:
    from backend.tasks.context import JobContext
    from contract.tasks import TaskOutputs

TaskRun = Callable[["JobContext", Any], "TaskOutputs"]


def get_task(name: str) -> TaskRun:
    """The task's ``run``; imported on first use so a broken task cannot stop the server."""
    if name not in TASKS:
        raise KeyError(name)
    module = importlib.import_module(f"backend.tasks.{name}")
    return module.run  # type: ignore[no-any-return]
