"""Compile the bake's kernels in the background when a backend starts, so the first bake does not wait.

numba compiles each kernel on its first call in a process (about 13 s for all of them on 2 cores) or loads
it from its cache beside the code (about 1 s with numba's import); a one-triangle bake in a daemon thread
at start-up does either before the artist's first projection arrives. A job that needs a kernel meanwhile
waits for numba's compiler lock rather than compiling it twice.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger("backend.projection")


def warm_in_background() -> threading.Thread:
    thread = threading.Thread(target=_warm, name="bake-kernels", daemon=True)
    thread.start()
    return thread


def _warm() -> None:
    try:  # below the jobs: Linux gives every thread its own nice value
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass
    started = time.perf_counter()
    try:
        warm()
    except Exception as exc:  # noqa: BLE001 - a failed warm-up is the first bake's to report, not a crash
        log.warning("compiling the bake's kernels ahead failed: %s", exc)
        return
    log.info("bake kernels ready in %.2f s", time.perf_counter() - started)


def warm() -> None:
    """A one-triangle bake through every kernel, with the array types real bakes pass."""
    import numpy as np

    from backend.projection.bake import BakeSettings, BakeView, bake_surface
    from backend.projection.surface import make_surface
    from contract.formats.camera import CameraInfo
    from contract.formats.surface import BakeMesh

    positions = np.array([[-1, -1, 0], [1, -1, 0], [0, 1, 0]], np.float32)
    triangles = np.array([[0, 1, 2]], np.int32)
    uvs = np.array([[[0, 0], [1, 0], [0.5, 1]]], np.float32)
    normals = np.tile(np.array([0, 0, 1], np.float32), (1, 3, 1))
    camera = CameraInfo([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 5], [0, 0, 0, 1]], "PERSP", 50.0, 36.0, 24.0,
                        "AUTO", 0.0, 0.0, 6.0, 0.1, 100.0, 8, 8)
    surf = make_surface(BakeMesh(positions, triangles, uvs, normals, "warm-up"), 16)
    views = [BakeView(camera, np.ones((8, 8, channels), np.float32), np.full((8, 8), 5.0, np.float32))
             for channels in (3, 4)]
    bake_surface(surf, views, BakeSettings(size=16))
