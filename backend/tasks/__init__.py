"""One module per capability; each exposes ``run(ctx: JobContext) -> TaskOutput``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backend.tasks.context import JobContext, TaskOutput

# Task name -> module. Imported on first use so a typo in one task cannot stop the server.
TASKS = {
    "texture": "backend.tasks.texture",
    "pbr": "backend.tasks.pbr",
    "export_maps": "backend.tasks.export_maps",
    "import_maps": "backend.tasks.import_maps",
    "render": "backend.tasks.render",
    "mesh": "backend.tasks.mesh",
    "import_mesh": "backend.tasks.import_mesh",
    "bake": "backend.tasks.bake",
    "project_texture": "backend.tasks.project_texture",
}


def get_task(name: str) -> Callable[[JobContext], TaskOutput]:
    module = importlib.import_module(TASKS[name])
    return module.run  # type: ignore[no-any-return]
