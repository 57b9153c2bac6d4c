"""The bake's compiled kernels (backend/projection/view_kernel.py, uv_raster.py, surface.py) against the rules
they implement, written out here in numpy with backend.projection.camera's own functions."""

from __future__ import annotations

import numpy as np
import pytest

from backend.projection import surface as surface_module
from backend.projection import uv_raster, view_kernel
from backend.projection.bake import BORDER_FEATHER, EDGE_WEIGHT, BakeSettings, BakeView, bake
from backend.projection.camera import facing, project, visible
from backend.projection.surface import clear_surface_cache, make_surface, surface
from backend.projection.view_kernel import CameraParams, Weighting, add_view, kept_triangles, normalize
from backend.projection.warm import warm
from tests.unit.bake_scenes import camera, sphere_depth, uv_sphere

CAMERAS = {
    "front": camera((0.0, -4.0, 0.5)),
    "close, sphere over the frame's edges": camera((0.0, -1.8, 0.0), lens=35.0, shift_x=0.3),
    "orthographic": camera((3.0, -3.0, 2.0), kind="ORTHO"),
    "short clip range": camera((0.0, -4.0, 0.0), clip_end=3.6),
}


def _sphere_surface():  # type: ignore[no-untyped-def]
    return make_surface(uv_sphere(segments=64, rings=32), 256)


def _texels_in_view(surf, cam) -> np.ndarray:  # type: ignore[no-untyped-def]
    """N bool: texels in the frame and clip range and facing the camera (the numpy rules)."""
    proj = project(cam, surf.positions)
    return proj.in_frame & (facing(cam, surf.positions, surf.normals) > 0.0)


@pytest.mark.parametrize("name", CAMERAS)
def test_culling_keeps_the_triangle_of_every_texel_the_camera_sees_and_drops_others(name):
    surf = _sphere_surface()
    cam = CAMERAS[name]
    keep = kept_triangles(surf.corner_positions, surf.corner_normals, CameraParams.of(cam))
    seen = _texels_in_view(surf, cam)
    assert seen.any()
    assert keep[surf.raster.triangles[seen]].all(), "a triangle with a visible texel was culled"
    # The back half at least faces away: culling must drop a good share, not keep everything.
    assert keep.mean() < 0.75, f"kept {keep.mean():.0%} of the triangles"


@pytest.mark.parametrize("name", CAMERAS)
def test_view_kernel_weights_follow_the_projection_rules(name):
    """Exponent 1 and a white image without depth: each texel's weight is its cosine (at most 1) times the
    border feather, on exactly the texels the numpy rules call in view."""
    surf = _sphere_surface()
    cam = CAMERAS[name]
    size = surf.raster.size
    texture = np.zeros((size * size, 4), np.float32)
    image = np.ones((cam.resolution_y, cam.resolution_x, 3), np.float32)
    keep = kept_triangles(surf.corner_positions, surf.corner_normals, CameraParams.of(cam))
    used = add_view(surf.positions, surf.normals, surf.raster.triangles, surf.raster.texels, keep,
                    CameraParams.of(cam), image, None, Weighting(1.0, 0.01, EDGE_WEIGHT, BORDER_FEATHER), texture)
    got = texture[surf.raster.texels, 3]

    proj = project(cam, surf.positions)
    cosine = facing(cam, surf.positions, surf.normals)
    border = np.minimum(np.minimum(proj.fx, 1 - proj.fx), np.minimum(proj.fy, 1 - proj.fy)) / BORDER_FEATHER
    expected = np.where(_texels_in_view(surf, cam),
                        np.minimum(cosine, 1.0) * np.clip(border, EDGE_WEIGHT, 1.0), 0.0)
    assert used == int((expected > 0).sum())
    np.testing.assert_allclose(got, expected, atol=2e-5)
    np.testing.assert_allclose(texture[surf.raster.texels, :3], np.repeat(got[:, None], 3, axis=1), atol=2e-5)


def test_view_kernel_samples_bilinearly_with_the_border_repeated():
    """A linear ramp across the image comes back as the ramp at each texel's projected position (bilinear
    filtering is exact on it), clamped where the position lies within half a pixel of the frame's edge."""
    surf = _sphere_surface()
    cam = CAMERAS["close, sphere over the frame's edges"]
    width, height = cam.resolution_x, cam.resolution_y
    cols, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    image = np.dstack([cols, rows, cols + rows, np.ones_like(cols)])
    texture = np.zeros((surf.raster.size ** 2, 4), np.float32)
    keep = np.ones(len(surf.corner_positions), bool)
    add_view(surf.positions, surf.normals, surf.raster.triangles, surf.raster.texels, keep, CameraParams.of(cam),
             image, None, Weighting(4.0, 0.01, EDGE_WEIGHT, BORDER_FEATHER), texture)
    normalize(texture, surf.raster.texels)
    got = texture[surf.raster.texels]
    live = got[:, 3] > 0
    proj = project(cam, surf.positions)
    col = np.clip(proj.fx * width - 0.5, 0, width - 1)[live]
    row = np.clip(proj.fy * height - 0.5, 0, height - 1)[live]
    assert live.sum() > 1000 and ((col == 0).any() or (col == width - 1).any())  # the clamp is exercised
    np.testing.assert_allclose(got[live, 0], col, atol=2e-3)
    np.testing.assert_allclose(got[live, 1], row, atol=2e-3)
    np.testing.assert_allclose(got[live, 2], col + row, atol=4e-3)


def test_view_kernel_occlusion_matches_the_visibility_rule():
    """With a depth pass holding a second sphere in front, the texels given weight are those
    ``camera.visible`` calls visible, bar the few within float rounding of its tolerance."""
    surf = _sphere_surface()
    cam = camera((0.0, -4.0, 0.0), width=128, height=96)
    depth = sphere_depth(cam, [((0.0, 0.0, 0.0), 1.0), ((0.4, -1.6, 0.2), 0.35)])
    texture = np.zeros((surf.raster.size ** 2, 4), np.float32)
    keep = kept_triangles(surf.corner_positions, surf.corner_normals, CameraParams.of(cam))
    add_view(surf.positions, surf.normals, surf.raster.triangles, surf.raster.texels, keep, CameraParams.of(cam),
             np.ones((96, 128, 3), np.float32), depth, Weighting(4.0, 0.01, EDGE_WEIGHT, BORDER_FEATHER), texture)
    got = texture[surf.raster.texels, 3] > 0
    proj = project(cam, surf.positions)
    expected = visible(proj, facing(cam, surf.positions, surf.normals), depth, 0.01)
    in_front = _texels_in_view(surf, cam)
    assert (in_front & ~expected).sum() > 500  # the small sphere hides a real part of the big one
    assert (got != expected).sum() <= 0.001 * expected.sum()


def test_uv_raster_lists_texels_by_triangle_and_gives_shared_texels_to_the_last_triangle():
    # Two triangles over the same UV square, the second listed last: it owns every texel both cover.
    uvs = np.array([[[0, 0], [1, 0], [1, 1]], [[0, 0], [1, 0], [1, 1]], [[0, 0], [1, 1], [0, 1]]], np.float32)
    raster = uv_raster.rasterize_uv(uvs, 32)
    assert np.all(np.diff(raster.triangles) >= 0)
    assert 0 not in raster.triangles  # fully covered by triangle 1
    assert len(np.unique(raster.texels)) == len(raster.texels) == 32 * 32


def _dispatchers():  # type: ignore[no-untyped-def]
    return [view_kernel._add_view, view_kernel._normalize, view_kernel._keep_triangles, surface_module._interpolate,
            uv_raster._count_texels, uv_raster._write_texels, uv_raster._any_repeated]


def test_warm_up_compiles_every_kernel_with_the_types_real_bakes_pass():
    """After ``warm``, bakes of a cached (read-only) and a fresh surface, with and without depth, with 3- and
    4-channel images, compile nothing more: the start-up warm-up covers the first real bake."""
    warm()
    compiled = [len(kernel.signatures) for kernel in _dispatchers()]
    assert all(compiled)
    mesh = uv_sphere(segments=16, rings=8)
    cam = camera((0.0, -4.0, 0.5), width=32, height=24)
    views = [BakeView(cam, np.ones((24, 32, 3))), BakeView(cam, np.ones((24, 32, 4), np.float32),
                                                           sphere_depth(cam, [((0.0, 0.0, 0.0), 1.0)]))]
    clear_surface_cache()
    bake(mesh, views, BakeSettings(size=64))
    surface(mesh, 64)  # the cached, read-only arrays
    bake(mesh, views, BakeSettings(size=64))
    assert [len(kernel.signatures) for kernel in _dispatchers()] == compiled


def test_every_server_engine_warms_the_kernels_on_a_background_thread(monkeypatch):
    import threading

    from backend.engine_options import EngineOptions
    from backend.projection import warm as warm_module

    ran: list[str] = []
    done = threading.Event()
    monkeypatch.setattr(warm_module, "warm", lambda: (ran.append(threading.current_thread().name), done.set()))
    EngineOptions(device="cpu").make()
    assert done.wait(30)
    assert ran == ["bake-kernels"]
