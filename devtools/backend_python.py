"""Which Python runs the backend in tests, the demo and benchmarks.

The Blender tests run inside a ``bpy`` environment that may lack the backend's requirements
(torch, diffusers): ``make test-bpy`` runs them on every bpy version the manifest claims, each
in an environment with bpy and numpy only. Those runs name the Python that has the backend's
requirements in ``SCENE_DIFFUSION_TEST_BACKEND_PYTHON``; without it the current interpreter is
used (the ``.venv`` has both).
"""

from __future__ import annotations

import os
import sys

TEST_BACKEND_PYTHON_ENV = "SCENE_DIFFUSION_TEST_BACKEND_PYTHON"


def backend_python() -> str:
    """The interpreter to start ``python -m backend ...`` with (an absolute path)."""
    return os.path.abspath(os.environ.get(TEST_BACKEND_PYTHON_ENV) or sys.executable)

