"""Projection baking in numpy: the camera model, UV rasterization, visibility, blending, fill and padding,
checked against analytic scenes (tests/unit/bake_scenes.py)."""

from __future__ import annotations

import numpy as np
import pytest

from backend.projection.bake import (
    BakeSettings,
    BakeView,
    bake,
    bake_surface,
    render_into_view,
)
from backend.projection.camera import camera_rays, project
from backend.projection.fill import fill_holes, pad_islands, upsampled_at
from backend.projection.surface import clear_surface_cache, make_surface, surface
from backend.projection.uv_raster import rasterize_uv
from contract.formats.surface import BakeMesh, BakeMeshError, load_bake_mesh, save_bake_mesh
from tests.unit.bake_scenes import camera, plane, sphere_depth, uv_sphere

CAMERA_CASES = [
    dict(),
    dict(shift_x=0.15, shift_y=-0.1),
    dict(sensor_fit="VERTICAL", lens=35.0),
    dict(kind="ORTHO", ortho_scale=2.5),
    dict(kind="ORTHO", shift_x=-0.2, sensor_fit="HORIZONTAL"),
]


@pytest.mark.parametrize("width,height", [(96, 72), (60, 90)])
@pytest.mark.parametrize("case", CAMERA_CASES)
def test_project_inverts_blenders_camera_rays(case, width, height):
    """Points on each pixel's ray (camera_rays agrees with Cycles to 1e-5) land on that pixel's centre."""
    options = dict(case)
    cam = camera((3.0, -4.0, 2.5), width, height, kind=options.pop("kind", "PERSP"), **options)
    origins, directions = camera_rays(cam)
    depth = np.random.default_rng(0).uniform(1.0, 20.0, size=(height, width))
    points = (origins + depth[..., None] * directions).reshape(-1, 3)
    proj = project(cam, points.T)
    cols, rows = proj.pixels(width, height)
    expected_cols, expected_rows = np.meshgrid(np.arange(width), np.arange(height))
    assert np.abs(cols - expected_cols.ravel()).max() < 2e-3
    assert np.abs(rows - expected_rows.ravel()).max() < 2e-3
    assert np.allclose(proj.depth, depth.ravel(), rtol=1e-5)
    assert proj.in_frame.all()


def test_clip_range_and_points_behind_are_out_of_frame():
    cam = camera((0.0, 0.0, 5.0), clip_start=1.0, clip_end=6.0)
    points = np.array([[0.0, 0.0, 4.5], [0.0, 0.0, 0.0], [0.0, 0.0, -2.0], [0.0, 0.0, 7.0]]).T
    assert project(cam, points).in_frame.tolist() == [False, True, False, False]


def _brute_force_cover(uvs, size):
    centres = (np.arange(size) + 0.5) / size
    u, v = np.meshgrid(centres, 1.0 - centres)
    cover = np.zeros((size, size), bool)
    for a, b, c in uvs:
        def side(p, q):
            return (q[0] - p[0]) * (v - p[1]) - (q[1] - p[1]) * (u - p[0])
        e = [side(a, b), side(b, c), side(c, a)]
        cover |= ((e[0] >= 0) & (e[1] >= 0) & (e[2] >= 0)) | ((e[0] <= 0) & (e[1] <= 0) & (e[2] <= 0))
    return cover


def test_uv_raster_covers_exactly_the_texel_centres_inside_and_interpolates_exactly():
    rng = np.random.default_rng(3)
    for _ in range(50):
        uvs = rng.random((6, 3, 2)) * 1.3 - 0.15  # some triangles reach past the texture's edges
        raster = rasterize_uv(uvs, 29)
        assert np.array_equal(raster.mask(), _brute_force_cover(uvs, 29))
        assert len(np.unique(raster.texels)) == len(raster.texels)  # one owner per texel
        rows, cols = np.divmod(raster.texels, 29)
        got = raster.interpolate(uvs.astype(np.float32))
        assert np.abs(got - np.stack([(cols + 0.5) / 29, 1 - (rows + 0.5) / 29], axis=1)).max() < 1e-5


def test_bake_mesh_file_round_trip_and_bad_input(tmp_path):
    mesh = plane()
    loaded = load_bake_mesh(save_bake_mesh(tmp_path / "m.npz", mesh))
    assert loaded.name == "plane" and np.array_equal(loaded.uvs, mesh.uvs)
    with pytest.raises(BakeMeshError, match="vertex indices"):
        BakeMesh(mesh.positions, mesh.triangles + 1000, mesh.uvs, mesh.normals, "broken")
    with pytest.raises(BakeMeshError, match="NaN"):
        BakeMesh(mesh.positions * np.nan, mesh.triangles, mesh.uvs, mesh.normals, "broken")
    np.savez(tmp_path / "bad.npz", positions=mesh.positions)
    with pytest.raises(BakeMeshError, match="lacks"):
        load_bake_mesh(tmp_path / "bad.npz")


def _ramp(width: int, height: int) -> np.ndarray:
    """An image whose colour says where it is: R = column, G = row (pixel centres), B = 0.5."""
    cols, rows = np.meshgrid((np.arange(width) + 0.5) / width, (np.arange(height) + 0.5) / height)
    return np.dstack([cols, rows, np.full(cols.shape, 0.5)]).astype(np.float32)


@pytest.mark.parametrize("case", CAMERA_CASES)
def test_every_seen_texel_takes_the_colour_of_the_pixel_its_surface_point_projects_to(case):
    """A plane seen by a tilted camera: each baked texel holds the image at the texel's own world point
    (bilinear sampling reproduces a linear ramp exactly, so the check is to float precision)."""
    options = dict(case)
    cam = camera((0.8, -2.5, 3.0), 80, 60, kind=options.pop("kind", "PERSP"), **options)
    mesh = plane(size=2.0, divisions=3)
    image = _ramp(160, 120)  # not the camera's resolution: the image spans the frame
    result = bake(mesh, [BakeView(cam, image, sphere_depth(cam, [], [(0.0, 1.0)]))],
                  BakeSettings(size=64, padding=0, fill_unseen=False))
    rows, cols = np.nonzero(result.seen)
    u, v = (cols + 0.5) / 64, 1.0 - (rows + 0.5) / 64
    points = np.stack([(u - 0.5) * 2.0, (v - 0.5) * 2.0, np.zeros_like(u)])
    proj = project(cam, points)
    inner = (np.minimum(proj.fx, 1 - proj.fx) > 0.02) & (np.minimum(proj.fy, 1 - proj.fy) > 0.02)
    got = result.texture[rows, cols, :3][inner]
    assert inner.sum() > 500
    error = np.maximum(np.abs(got[:, 0] - proj.fx[inner]), np.abs(got[:, 1] - proj.fy[inner]))
    # Bilinear (OpenCV samples at 1/32 pixel) everywhere but at the plane's silhouette, where the bilinear
    # footprint would reach the background and the nearest pixel is read instead (half a pixel at most).
    assert np.mean(error < 2e-4) > 0.9
    assert error.max() < 0.5 / 120 + 2e-4
    assert np.allclose(result.texture[rows, cols, 3], 1.0)
    assert result.view_texels == [len(rows)]


def _two_objects():
    """A sphere hovering over a plane, seen from above: the sphere hides part of the plane."""
    sphere = uv_sphere(radius=0.5, centre=(0.0, 0.0, 0.8), name="ball")
    floor = plane(size=3.0, divisions=6, name="floor")
    top = camera((0.0, -0.3, 6.0), 96, 96)
    depth = sphere_depth(top, [((0.0, 0.0, 0.8), 0.5)], [(0.0, 1.5)])
    sphere_pixels = depth < sphere_depth(top, [], [(0.0, 1.5)]) - 1e-3
    image = np.where(sphere_pixels[..., None], np.float32([1, 0, 0]), np.float32([0, 1, 0])).astype(np.float32)
    return sphere, floor, top, depth, image


def test_occluded_texels_are_not_painted_and_no_colour_crosses_objects():
    sphere, floor, top, depth, image = _two_objects()
    settings = BakeSettings(size=128, padding=0, fill_unseen=False)
    floor_result = bake(floor, [BakeView(top, image, depth)], settings)
    seen = floor_result.seen
    assert 0.5 < seen.sum() / floor_result.island.sum() < 0.99  # the sphere's shadow in view is unseen
    assert floor_result.texture[seen, 0].max() == 0.0  # no red from the sphere on the floor
    assert np.all(floor_result.texture[~seen, 3] == 0)
    ball_result = bake(sphere, [BakeView(top, image, depth)], settings)
    assert ball_result.texture[ball_result.seen, 1].max() == 0.0  # no green from the floor on the sphere
    # Without the depth pass the floor under the ball is painted red: the depth pass is what prevents it.
    unguarded = bake(floor, [BakeView(top, image, None)], settings)
    assert unguarded.texture[unguarded.seen, 0].max() == 1.0


def test_views_blend_by_angle_to_the_power_of_the_exponent():
    """Two views of a plane, at 0 and 60 degrees from its normal: weights 1 and 0.5 ** exponent."""
    floor = plane(size=1.0, divisions=2)
    straight = camera((0.0, 0.0, 4.0), 64, 64, kind="ORTHO", ortho_scale=3.0)
    slanted = camera((0.0, -4.0 * np.sin(np.pi / 3), 4.0 * np.cos(np.pi / 3)), 64, 64, kind="ORTHO", ortho_scale=3.0)
    red, blue = np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.float32)
    red[..., 0], blue[..., 2] = 1.0, 1.0
    for exponent in (0.0, 1.0, 4.0):
        result = bake(floor, [BakeView(straight, red), BakeView(slanted, blue)],
                      BakeSettings(size=32, blend_exponent=exponent, padding=0))
        inner = result.texture[8:24, 8:24]
        share = 0.5 ** exponent / (1.0 + 0.5 ** exponent)  # the slanted view's weight share
        assert np.allclose(inner[..., 2], share, atol=1e-4), exponent
        assert np.allclose(inner[..., 0], 1.0 - share, atol=1e-4), exponent


def test_unseen_island_texels_are_filled_and_islands_padded():
    sphere = uv_sphere(radius=1.0, segments=32, rings=16)
    front = camera((0.0, -5.0, 0.0), 64, 64)
    image = np.full((16, 16, 3), 0.25, np.float32)
    filled = bake(sphere, [BakeView(front, image)], BakeSettings(size=64, padding=4))
    assert 0.3 < filled.seen_fraction < 0.6  # the back half is unseen ...
    assert np.allclose(filled.texture[filled.island, :3], 0.25, atol=1e-5)  # ... and filled from the front
    assert np.all(filled.texture[filled.island, 3] == 1.0)
    holes = bake(sphere, [BakeView(front, image)], BakeSettings(size=64, padding=4, fill_unseen=False))
    assert np.all(holes.texture[filled.island & ~holes.seen, 3] == 0.0)


def test_pad_islands_copies_the_nearest_island_texel_up_to_the_padding():
    island = np.zeros((20, 20), bool)
    island[5:10, 5:10] = True
    colour = np.zeros((20, 20, 3), np.float32)
    colour[5:10, 5:10] = np.arange(25, dtype=np.float32).reshape(5, 5, 1)
    out, covered = pad_islands(colour.copy(), island, 3)
    assert covered[2, 7] and covered[7, 12] and not covered[7, 13] and not covered[1, 7]
    assert out[2, 7, 0] == colour[5, 7, 0] and out[7, 12, 0] == colour[7, 9, 0]  # straight out from the edge
    assert out[2, 2, 0] == colour[5, 5, 0]  # diagonal from the corner
    assert np.array_equal(out[island], colour[island])


def test_fill_holes_is_smooth_and_leaves_known_texels_alone():
    colour = np.zeros((32, 32, 3), np.float32)
    known = np.ones((32, 32), bool)
    known[10:20, 10:20] = False
    colour[known] = 0.7
    out = fill_holes(colour.copy(), known, np.ones((32, 32), bool))
    assert np.allclose(out, 0.7, atol=1e-5)


def test_render_into_view_reproduces_the_baked_view_and_marks_what_is_known():
    sphere = uv_sphere(radius=1.0, segments=64, rings=32)
    first = camera((0.0, -5.0, 0.0), 64, 64)
    second = camera((5.0, 0.0, 0.0), 64, 64)
    image = _ramp(64, 64)
    result = bake(sphere, [BakeView(first, image, sphere_depth(first, [((0, 0, 0), 1.0)]))],
                  BakeSettings(size=256, padding=2))
    again, known = render_into_view(sphere, result, BakeView(first, image, sphere_depth(first, [((0, 0, 0), 1.0)])),
                                    64, 64)
    disc = sphere_depth(first, [((0, 0, 0), 1.0)]) < 1e9
    inner = disc & np.roll(disc, 2, 0) & np.roll(disc, -2, 0) & np.roll(disc, 2, 1) & np.roll(disc, -2, 1)
    assert known[inner].all() and not known[~disc].any()
    assert np.abs(again[inner] - image[inner]).mean() < 0.01
    # From the side, only the half the first view saw is known.
    _, side_known = render_into_view(sphere, result, BakeView(second, image, sphere_depth(second, [((0, 0, 0), 1.0)])),
                                     64, 64)
    side_disc = sphere_depth(second, [((0, 0, 0), 1.0)]) < 1e9
    assert 0.3 < side_known.sum() / side_disc.sum() < 0.7


def test_a_view_that_sees_nothing_contributes_nothing():
    elsewhere = camera((30.0, 30.0, 0.0))  # looks at the origin from afar ...
    moved = uv_sphere(centre=(0.0, 0.0, 40.0))  # ... where this sphere is not
    result = bake(moved, [BakeView(elsewhere, np.ones((8, 8, 3), np.float32))], BakeSettings(size=32))
    assert result.view_texels == [0] and not result.seen.any()
    assert np.all(result.texture[..., 3][result.island] == 1.0)  # filled (with nothing seen: black) and kept


def _three_views():
    sphere = uv_sphere(radius=1.0, segments=48, rings=24)
    cams = [camera((5.0 * np.cos(a), 5.0 * np.sin(a), 1.0), 64, 64) for a in (0.0, 2.1, 4.2)]
    rng = np.random.default_rng(5)
    views = [BakeView(cam, rng.random((32, 32, 3), dtype=np.float32), sphere_depth(cam, [((0, 0, 0), 1.0)]))
             for cam in cams]
    return sphere, views


def test_a_cached_surface_bakes_exactly_like_a_fresh_one():
    """The surface (UV rasterization, texel positions and normals) is cached by mesh content and size:
    a second bake of the same mesh reuses it and gives the same texture, bit for bit."""
    sphere, views = _three_views()
    settings = BakeSettings(size=96, padding=3)
    clear_surface_cache()
    fresh = bake_surface(make_surface(sphere, 96), views, settings)
    first = bake(sphere, views, settings)
    again = bake(sphere, views, settings)
    assert again.surface is first.surface  # from the cache
    for result in (first, again):
        assert np.array_equal(result.texture, fresh.texture)
        assert np.array_equal(result.seen, fresh.seen) and np.array_equal(result.island, fresh.island)
        assert result.view_texels == fresh.view_texels
    assert not first.surface.positions.flags.writeable  # shared: read-only
    moved = BakeMesh(sphere.positions + 0.01, sphere.triangles, sphere.uvs, sphere.normals, "moved")
    assert bake(moved, views, settings).surface is not first.surface  # other content: its own surface
    assert surface(sphere, 64) is not first.surface  # other size too
    assert surface(sphere, 96) is first.surface
    wider = BakeSettings(size=96, padding=6)  # the cached surface keeps one padding plan per padding
    assert np.array_equal(bake(sphere, views, wider).texture,
                          bake_surface(make_surface(sphere, 96), views, wider).texture)


def test_pad_islands_with_a_target_mask_pads_only_there():
    island = np.zeros((16, 16), bool)
    island[4:8, 4:8] = True
    colour = np.zeros((16, 16, 4), np.float32)
    colour[island] = 1.0
    into = np.zeros((16, 16), bool)
    into[:, :6] = True
    out, covered = pad_islands(colour.copy(), island, 2, into=into)
    assert np.array_equal(covered, island | (into & (_distance(island) <= 2)))
    assert np.all(out[covered] == 1.0) and np.all(out[~covered] == 0.0)


def _distance(island):
    import cv2

    return cv2.distanceTransform((~island).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_5)


def test_texture_is_zero_outside_the_covered_texels_and_opaque_views_equal_rgb_ones():
    full, views = _three_views()
    sphere = BakeMesh(full.positions, full.triangles, full.uvs * 0.7 + 0.1, full.normals)  # a margin around it
    settings = BakeSettings(size=80, padding=2)
    result = bake(sphere, views, settings)
    outside = result.texture[..., 3] == 0
    assert outside.any() and np.all(result.texture[outside] == 0.0)
    opaque = [BakeView(v.camera, np.dstack([v.image, np.ones(v.image.shape[:2], np.float32)]), v.depth)
              for v in views]
    assert np.array_equal(bake(sphere, opaque, settings).texture, result.texture)
    unfilled = bake(sphere, views[:1], BakeSettings(size=80, padding=2, fill_unseen=False))
    assert np.all(unfilled.texture[unfilled.texture[..., 3] == 0] == 0.0)


@pytest.mark.parametrize("shape", [(64, 64), (37, 50), (5, 3), (1, 2)])
def test_upsampling_at_the_holes_equals_cv2_resize(shape):
    import cv2

    rng = np.random.default_rng(1)
    small = rng.random(((shape[0] + 1) // 2, (shape[1] + 1) // 2, 4), dtype=np.float32)
    full = cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR).reshape(shape + (4,))
    rows, cols = np.nonzero(np.ones(shape, bool))
    assert np.abs(upsampled_at(small, rows, cols, shape) - full[rows, cols]).max() < 1e-6


def test_hole_only_fill_equals_the_whole_texture_fill_inside_the_islands(monkeypatch):
    """Few holes are filled texel by texel, many through one full-size resize: the same colours."""
    from backend.projection import fill

    rng = np.random.default_rng(2)
    colour = rng.random((70, 90, 3), dtype=np.float32)
    region = np.zeros((70, 90), bool)
    region[5:60, 10:80] = True
    known = region & (rng.random((70, 90)) > 0.03)
    known[20:26, 30:41] = False  # one larger hole besides the scattered ones
    colour[~known] = 0.0
    monkeypatch.setattr(fill, "FEW_HOLES", 10 ** 9)
    few = fill_holes(colour.copy(), known, region, unknown_are_zero=True)
    monkeypatch.setattr(fill, "FEW_HOLES", 1)
    whole = fill_holes(colour.copy(), known, region)
    assert np.abs(few - whole).max() < 1e-6
    assert np.array_equal(few[known], colour[known]) and np.array_equal(few[~region], colour[~region])


def test_surface_interpolation_does_not_rely_on_the_texel_order(monkeypatch):
    """make_surface repeats each triangle's corners over its run of texels; a raster in another order
    (not what rasterize_uv makes) takes the general path and gives the same texels."""
    from backend.projection import surface as surface_module
    from backend.projection.uv_raster import UVRaster

    sphere = uv_sphere(radius=1.0, segments=24, rings=12)
    ordered = make_surface(sphere, 64)
    order = np.random.default_rng(4).permutation(len(ordered.raster.texels))
    raster = ordered.raster
    shuffled = UVRaster(64, raster.texels[order], raster.triangles[order], raster.bary[:, order])
    monkeypatch.setattr(surface_module, "rasterize_uv", lambda uvs, size: shuffled)
    other = make_surface(sphere, 64)
    assert np.array_equal(other.positions, ordered.positions[:, order])
    assert np.array_equal(other.normals, ordered.normals[:, order])


def test_releasing_the_backend_frees_the_cached_surfaces():
    """A Release (or the idle release) frees the bake's cached surfaces with the models: both are memory."""
    import threading

    from backend.models.cache import PipelineCache
    from backend.projection import surface as surface_module
    from backend.runner import Engine
    from backend.scheduler import Scheduler

    clear_surface_cache()
    surface(uv_sphere(radius=1.0, segments=12, rings=6), 32)
    assert surface_module._SURFACES
    scheduler = Scheduler()
    # No registry needed: nothing is loaded, only released.
    scheduler.engine = Engine(registry=None, models=PipelineCache("cpu", None), device="cpu", dtype="fp32",
                              versions={})
    scheduler.connected("local")
    scheduler.start()
    answered = threading.Event()
    scheduler.request_release("local", lambda message: answered.set())
    try:
        assert answered.wait(30)
    finally:
        scheduler.stop()
    assert not surface_module._SURFACES
