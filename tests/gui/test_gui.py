"""The GUI tier: the extension in real Blender binaries with a window (Xvfb, Mesa's software OpenGL),
each in a Debian root of its own (devtools/gui_root.py: Debian stable's Blender 4.3, unstable's 5.2 LTS).

Blender installs the extension zip with its own command line, opens a scene, and tests/gui/driver.py
presses each capability's button as a click would, screenshots the screen mid-job, clicks the job's
Cancel button with the mouse, then runs the job to its end. Everything is checked here from the
driver's report *and* from the screenshots: the progress bar and the step preview must be on the screen,
not only in Python state. The backend is the project's own interpreter (.venv, bind-mounted) on the tiny
models. Needs root (debootstrap, chroot, mount); run with `make test-gui`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import screen  # tests/gui/screen.py, beside this file
from PIL import Image

from devtools import extension, gui_root

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().parent / "driver.py"
WINDOW = (1600, 1200)
CAPABILITIES: dict[str, dict[str, Any]] = {
    "texture": {"operator": "scene_diffusion.generate_texture", "size": 256, "steps": 8, "cancel_steps": 200},
    "render": {"operator": "scene_diffusion.render_controlnet", "size": 256, "steps": 8, "cancel_steps": 200},
    "project": {"operator": "scene_diffusion.project_texture", "size": 256, "steps": 8, "cancel_steps": 200},
    # Shap-E and Marigold report steps but no step previews (the backend sends previews for SD pipelines).
    # The tiny Shap-E prior runs its 200 steps within a second or two: the cancel run also extracts its surface
    # on a finer grid (seconds), so a screenshot and the Cancel click still catch it running.
    "mesh": {"operator": "scene_diffusion.image_to_mesh", "size": 64, "steps": 8, "cancel_steps": 200,
             "cancel_setting": ["frame_size", 256], "setting": ["frame_size", 64], "preview": False},
    "pbr": {"operator": "scene_diffusion.derive_pbr", "size": 256, "steps": 4, "cancel_steps": 200,
            "preview": False},
}
SECONDS: dict[str, float] = {}


@pytest.fixture(scope="module", params=gui_root.SUITES)
def gui_run(request: pytest.FixtureRequest, tiny_models: Path) -> dict[str, Any]:
    """One Blender session in the suite's root through every capability; its report, with ``out`` added."""
    if os.geteuid() != 0:
        pytest.fail("the GUI tier needs root (debootstrap, chroot, mount): run `make test-gui` as root")
    suite = request.param
    started = time.monotonic()
    root = gui_root.build(suite)
    built = time.monotonic() - started
    # Inside the checkout, so the root sees it at the same path through the bind mount.
    work = ROOT / ".cache" / "gui-runs" / suite
    shutil.rmtree(work, ignore_errors=True)
    out = work / "out"
    out.mkdir(parents=True)
    zip_path = extension.build(work)
    plan = work / "plan.json"
    plan.write_text(json.dumps({"out": str(out), "capabilities": CAPABILITIES}), encoding="utf-8")
    env = {"BLENDER_USER_RESOURCES": str(work / "user"), "HF_HUB_OFFLINE": "1",
           "SCENE_DIFFUSION_BACKEND_PYTHON": str(ROOT / ".venv" / "bin" / "python"),
           "SCENE_DIFFUSION_MODELS": str(tiny_models)}
    with gui_root.RootSession(root, display=90 + gui_root.SUITES.index(suite),
                              screen=f"{WINDOW[0]}x{WINDOW[1]}x24") as session:
        session.run(f"blender --factory-startup -b -c extension install-file -r user_default -e {zip_path}", env=env)
        # A file given on the command line: Blender shows no splash screen over the window.
        session.run("blender -b --factory-startup --python-expr "
                    f"'import bpy; bpy.ops.wm.save_as_mainfile(filepath=\"{work / 'start.blend'}\")'", env=env)
        ran = time.monotonic()
        log = work / "blender.log"
        geometry = f"--window-geometry 0 0 {WINDOW[0]} {WINDOW[1]}"
        session.run(f"timeout 900 blender -noaudio {geometry} {work / 'start.blend'} --python {DRIVER} -- {plan} "
                    f"> {log} 2>&1", timeout=960, env=env)
    report_path = out / "report.json"
    if not report_path.is_file():
        pytest.fail(f"Blender wrote no report; its log:\n{log.read_text(errors='replace')[-4000:]}")
    report: dict[str, Any] = json.loads(report_path.read_text(encoding="utf-8"))
    report["out"] = out
    SECONDS[suite] = time.monotonic() - ran
    print(f"\nGUI tier {suite} ({gui_root.blender_version(root)}): root {built:.0f} s, "
          f"Blender session {SECONDS[suite]:.0f} s")
    return report


def shot(report: dict[str, Any], name: str) -> np.ndarray:
    return np.asarray(Image.open(report["out"] / name).convert("RGB"))


def test_the_session_ran_every_capability(gui_run: dict[str, Any]) -> None:
    assert gui_run["errors"] == []
    assert set(gui_run["capabilities"]) == set(CAPABILITIES)
    major, minor = (int(part) for part in gui_run["blender"].split(".")[:2])
    assert (major, minor) >= (4, 2)
    assert gui_run["window"]["width"] == WINDOW[0] and gui_run["window"]["height"] == WINDOW[1]


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_mid_job_screen_shows_progress_and_preview(gui_run: dict[str, Any], capability: str) -> None:
    entry = gui_run["capabilities"][capability]
    assert entry["cancel_invoke"] == ["FINISHED"], "the button press did not start a job"
    box = screen.job_box(shot(gui_run, entry["idle"]), shot(gui_run, entry["mid"]), entry["sidebar"],
                         gui_run["progress_colour"])
    assert box is not None, "the mid-job screenshot shows no job box in the sidebar"
    assert 0 < entry["mid_fraction"] < 1
    assert box.progress_pixels >= 20, "no progress bar fill on the screen"
    if CAPABILITIES[capability].get("preview", True):
        assert box.preview_pixels >= screen.PREVIEW_SEEN, "no step preview on the screen"


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_cancel_button_ends_the_job_with_nothing_applied(gui_run: dict[str, Any], capability: str) -> None:
    entry = gui_run["capabilities"][capability]
    assert entry["cancelled_state"] == "cancelled"
    assert entry["cancelled_step"] < entry["cancelled_total"]
    assert entry["cancelled_applied"] is False
    assert entry["cancelled_datablocks_same"] is True, "a cancelled job added or removed datablocks"
    # The panel now says so: the box under the button changed from the running bar.
    assert screen.changed_pixels(shot(gui_run, entry["mid"]), shot(gui_run, entry["cancelled"]),
                                 entry["sidebar"]) > 200


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_result_lands_in_the_scene_and_on_the_screen(gui_run: dict[str, Any], capability: str) -> None:
    entry = gui_run["capabilities"][capability]
    assert entry["state"] == "done", entry["error"]
    assert entry["applied"]
    result = entry["result"]
    if capability == "texture":
        assert result["cube_images"]
        assert result["loras"] == ["sd15-style-a.safetensors"] and result["scheduler"] == "euler_a"
    elif capability == "render":
        assert result["image"] == "Diffusion Render" and result["size"] == [256, 256]
    elif capability == "project":
        assert "Cube Projected" in result["cube_images"]
    elif capability == "mesh":
        assert len(result["objects"]) == 4  # the default scene's three and the new mesh
        assert result["active"] not in ("Camera", "Cube", "Light")  # the new object is the active one
        assert result["location"] == [0.0, -3.0, 0.0]  # at the 3D cursor
    else:
        assert len([name for name in result["cube_images"] if name.endswith(("albedo", "normal", "roughness"))]) == 3
    # Seen in the window: the viewport (or, for a render, the Image Editor beside it) changed.
    area, sidebar = entry["viewport"], entry["sidebar"]
    if capability == "render":
        rect = {"left": area["left"] + area["width"], "top": 0, "width": WINDOW[0] - area["left"] - area["width"],
                "height": WINDOW[1]}
    else:  # the 3D View left of its sidebar
        rect = {**area, "width": sidebar["left"] - area["left"]}
    assert screen.changed_pixels(shot(gui_run, entry["idle"]), shot(gui_run, entry["done"]), rect) > 2000
