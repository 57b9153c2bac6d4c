"""Pass conversions (backend.imaging.passes) against analytic scenes built in numpy: a tilted plane and a
sphere seen by known cameras, with Blender's Z (planar depth) and world normals computed exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backend.imaging.control import (
    NORMAL_BACKGROUND_COLOR,
    canny_edges,
    conditioning_rgb,
    depth_to_control,
    normals_to_camera,
    normals_to_control,
)
from backend.imaging.exr import ExrImage, read_exr, write_exr
from backend.imaging.passes import (
    BACKGROUND_DEPTH,
    PassError,
    ScenePasses,
    background_mask,
    find_passes,
    require_passes,
)
from backend.projection.camera import camera_rays
from contract.formats import FormatError
from contract.formats.camera import CameraInfo

# --- analytic scenes -----------------------------------------------------------------------------------------------


def _rot_x(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)


def _rot_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def _look_at(location, target) -> np.ndarray:
    """Camera-to-world rotation of a camera at ``location`` looking at ``target`` (-Z forward, +Y up-ish)."""
    back = np.asarray(location, float) - np.asarray(target, float)
    back /= np.linalg.norm(back)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    return np.column_stack([right, np.cross(back, right), back])


def _matrix(rotation: np.ndarray, location: tuple[float, float, float], scale: float = 1.0) -> list[list[float]]:
    m = np.eye(4)
    m[:3, :3] = rotation * scale
    m[:3, 3] = location
    return m.tolist()


def _camera(kind: str = "PERSP", *, rotation: np.ndarray | None = None, location=(0.0, 0.0, 0.0), width: int = 64,
            height: int = 48, lens: float = 50.0, shift=(0.0, 0.0), ortho_scale: float = 4.0,
            sensor_fit: str = "AUTO", scale: float = 1.0) -> CameraInfo:
    return CameraInfo(
        matrix_world=_matrix(np.eye(3) if rotation is None else rotation, location, scale), type=kind, lens=lens,
        sensor_width=36.0, sensor_height=24.0, sensor_fit=sensor_fit, shift_x=shift[0], shift_y=shift[1],
        ortho_scale=ortho_scale, clip_start=0.1, clip_end=100.0, resolution_x=width, resolution_y=height)


def _render(camera: CameraInfo, planes=(), spheres=()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast planes (point, normal[, radius of the disc]) and spheres (centre, radius): Blender Z (planar,
    BACKGROUND_DEPTH where nothing is hit), world normals facing the camera (0 on background), and the id of
    what was hit (-1 for none)."""
    origins, directions = camera_rays(camera)
    h, w = origins.shape[:2]
    depth = np.full((h, w), np.inf)
    normal = np.zeros((h, w, 3))
    hit_id = np.full((h, w), -1)
    for index, (point, n, *extent) in enumerate(planes):
        n = np.asarray(n, float) / np.linalg.norm(n)
        denom = directions @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((np.asarray(point, float) - origins) @ n) / denom
            inside = np.linalg.norm(origins + t[..., None] * directions - point, axis=-1) < (extent or [np.inf])[0]
        hit = (t > 0) & (t < depth) & inside
        depth[hit] = t[hit]
        normal[hit] = np.where((denom[hit] < 0)[:, None], n, -n)  # turned toward the viewer, as Cycles does
        hit_id[hit] = index
    for index, (centre, radius) in enumerate(spheres, start=len(planes)):
        oc = origins - np.asarray(centre, float)
        a = np.einsum("...i,...i", directions, directions)
        b = 2 * np.einsum("...i,...i", directions, oc)
        c = np.einsum("...i,...i", oc, oc) - radius**2
        disc = b * b - 4 * a * c
        with np.errstate(invalid="ignore"):
            t = (-b - np.sqrt(disc)) / (2 * a)
        hit = (disc >= 0) & (t > 0) & (t < depth)
        depth[hit] = t[hit]
        points = origins[hit] + t[hit][:, None] * directions[hit]
        normal[hit] = (points - np.asarray(centre, float)) / radius
        hit_id[hit] = index
    depth[~np.isfinite(depth)] = BACKGROUND_DEPTH
    return depth.astype(np.float32), normal.astype(np.float32), hit_id


# --- camera --------------------------------------------------------------------------------------------------------


def test_camera_round_trips_through_its_dict_and_rejects_bad_values():
    camera = _camera("ORTHO", rotation=_rot_z(20), location=(1, 2, 3), shift=(0.1, -0.2))
    assert CameraInfo.from_dict(camera.to_dict()) == camera
    d = camera.to_dict()
    del d["lens"], d["clip_end"]
    with pytest.raises(FormatError, match="'lens', 'clip_end'"):
        CameraInfo.from_dict(d)
    for key, value, words in (("type", "PANO", "PERSP, ORTHO"), ("sensor_fit", "FIT", "AUTO"),
                              ("lens", 0.0, "greater than 0"), ("resolution_x", 12.5, "whole number"),
                              ("matrix_world", [[1, 0], [0, 1]], "4 rows"), ("clip_end", 0.05, "beyond")):
        with pytest.raises(FormatError, match=words):
            CameraInfo.from_dict({**camera.to_dict(), key: value})


def test_perspective_rays_follow_the_lens_sensor_and_shift():
    camera = _camera(width=64, height=48, lens=50.0)
    origins, directions = camera_rays(camera)
    assert np.allclose(directions[..., 2], -1.0)  # unit length along the view axis: Z is planar
    assert np.allclose(origins, 0.0)
    # The sensor (36 mm) spans the width at 1 mm / 50 mm per unit of depth; pixel centres at (j + 0.5) / 64.
    j, i = 5, 40
    assert directions[i, j, 0] == pytest.approx((j + 0.5 - 32) / 64 * 36 / 50)
    assert directions[i, j, 1] == pytest.approx((24 - i - 0.5) / 64 * 36 / 50)  # square pixels, row 0 at the top
    # AUTO fit on a portrait image: sensor_width spans the HEIGHT (Blender's rule).
    portrait = camera_rays(_camera(width=32, height=64))[1]
    assert portrait[0, 0, 1] == pytest.approx((32 - 0.5) / 64 * 36 / 50)
    vertical = camera_rays(_camera(width=64, height=32, sensor_fit="VERTICAL"))[1]
    assert vertical[0, 0, 1] == pytest.approx((16 - 0.5) / 32 * 24 / 50)
    # A shift of 0.25 moves the image a quarter of its (fitted) width.
    shifted = camera_rays(_camera(width=64, height=48, shift=(0.25, 0.0)))[1]
    assert np.allclose(shifted[:, :48], directions[:, 16:])


def test_orthographic_rays_start_on_the_camera_plane():
    camera = _camera("ORTHO", rotation=_rot_x(90), location=(0.0, -10.0, 1.0), ortho_scale=4.0, width=40, height=20)
    origins, directions = camera_rays(camera)
    assert np.allclose(directions, [0.0, 1.0, 0.0])  # the camera looks down its -Z: world +Y after 90 deg about X
    assert np.allclose(origins[..., 1], -10.0)
    assert origins[0, 0, 0] == pytest.approx(-2.0 + 0.05) and origins[0, -1, 0] == pytest.approx(2.0 - 0.05)
    assert origins[0, 0, 2] == pytest.approx(1.0 + 1.0 - 0.05)  # 4 units span the width, so 2 the height


# --- depth ---------------------------------------------------------------------------------------------------------


def _depth_scene(kind: str):
    camera = _camera(kind, rotation=_rot_x(10), location=(0.3, -1.0, 2.0), width=80, height=60,
                     shift=(0.08, -0.05), ortho_scale=6.0)
    plane = ((0.0, 0.5, -6.0), _rot_x(30) @ [0.0, 0.0, 1.0], 3.0)  # a disc of radius 3
    sphere = ((0.5, 0.0, -3.0), 1.0)
    return camera, *_render(camera, planes=[plane], spheres=[sphere])


@pytest.mark.parametrize("kind", ["PERSP", "ORTHO"])
def test_depth_control_is_inverse_depth_near_bright_background_black(kind):
    camera, depth, _, hit = _depth_scene(kind)
    assert (hit == -1).any() and (hit == 0).any() and (hit == 1).any()
    control = depth_to_control(depth)
    assert control.dtype == np.float32 and control.shape == depth.shape
    assert np.all(control[hit == -1] == 0.0)
    assert control[hit == 1].mean() > control[hit == 0].mean() + 0.3  # the sphere is nearer than the plane
    # Monotonic: farther never brighter.
    visible = hit >= 0
    order = np.argsort(depth[visible], kind="stable")
    assert np.all(np.diff(control[visible][order]) <= 1e-6)
    # The exact formula.
    z = depth[visible].astype(np.float64)
    near, far = np.percentile(z, 1.0), np.percentile(z, 99.0)
    expected = np.clip((1 / z - 1 / far) / (1 / near - 1 / far), 0, 1)
    assert np.allclose(control[visible], expected, atol=1e-5)
    full = depth_to_control(depth, near_percentile=0.0, far_percentile=100.0)
    assert full[visible].max() == pytest.approx(1.0) and full[visible].min() == pytest.approx(0.0, abs=1e-6)
    assert full[np.unravel_index(np.argmin(np.where(visible, depth, np.inf)), depth.shape)] == pytest.approx(1.0)


def test_sphere_depth_matches_its_analytic_distance():
    camera = _camera(width=64, height=64)
    depth, _, hit = _render(camera, spheres=[((0.0, 0.0, -5.0), 1.0)])
    assert depth[32, 32] == pytest.approx(4.0, abs=2e-3)  # planar Z of the point nearest the camera
    control = depth_to_control(depth, near_percentile=0.0, far_percentile=100.0)
    assert control[31:33, 31:33].min() > 0.99  # the nearest point is the brightest
    edge = depth[hit == 0].max()
    assert edge < 5.0  # a sphere seen in perspective shows less than its front half


def test_depth_control_edge_cases_and_masks():
    flat = np.full((4, 5), 3.0, np.float32)
    assert np.all(depth_to_control(flat) == 1.0)  # one depth everywhere: all near
    assert np.all(depth_to_control(np.full((3, 3), BACKGROUND_DEPTH, np.float32)) == 0.0)
    depth = np.array([[1.0, 2.0], [4.0, 8.0]], np.float32)
    mask = np.array([[False, False], [False, True]])
    control = depth_to_control(depth, mask=mask, near_percentile=0, far_percentile=100)
    assert control[1, 1] == 0.0 and control[0, 0] == 1.0 and control[1, 0] == 0.0
    assert control[0, 1] == pytest.approx((1 / 2 - 1 / 4) / (1 - 1 / 4))
    for near, far in ((50, 50), (-1, 90), (10, 101)):
        with pytest.raises(PassError, match="percentiles"):
            depth_to_control(depth, near_percentile=near, far_percentile=far)
    with pytest.raises(PassError, match="mask shape"):
        depth_to_control(depth, mask=np.zeros((3, 3), bool))


def test_background_mask_knows_cycles_and_eevee_backgrounds():
    depth = np.array([[5.0, 1e10, np.inf, np.nan, 0.0, -1.0, 99.95, 1000.07, 999.0]], np.float32)
    assert background_mask(depth).tolist() == [[False, True, True, True, True, True, False, False, False]]
    eevee = background_mask(depth, clip_end=1000.0)
    assert eevee.tolist() == [[False, True, True, True, True, True, False, True, True]]
    with pytest.raises(PassError, match="clip_end"):
        background_mask(depth, clip_end=-1.0)


# --- normals -------------------------------------------------------------------------------------------------------


def test_normals_to_camera_rotates_a_tilted_plane_into_camera_space():
    # A plane tilted 30 degrees about X, a camera rotated 45 degrees about Z (still looking down -Z).
    world = _rot_x(30) @ [0.0, 0.0, 1.0]  # (0, -sin 30, cos 30)
    camera = _camera(rotation=_rot_z(45), location=(0.0, 0.0, 10.0), scale=2.5)  # scale is ignored
    expected = np.array([-0.5 * math.sqrt(0.5), -0.5 * math.sqrt(0.5), math.sqrt(3) / 2])
    got = normals_to_camera(np.tile(world.astype(np.float32), (2, 3, 1)), camera)
    assert got.shape == (2, 3, 3)
    assert np.abs(got - expected).max() < 1e-4
    # The same plane rendered: every pixel that sees it gives that camera-space normal.
    _, normal, hit = _render(camera, planes=[((0.0, 0.0, 0.0), world)])
    assert (hit == 0).all()
    assert np.abs(normals_to_camera(normal, camera) - expected).max() < 1e-4


def test_sphere_normals_in_camera_space_point_from_its_centre():
    centre = np.array([0.2, 0.0, 0.5])
    camera = _camera(rotation=_look_at((3.0, -8.0, 3.0), centre + [0.3, 0.0, 0.2]), location=(3.0, -8.0, 3.0),
                     width=48, height=48)
    depth, normal, hit = _render(camera, spheres=[(centre, 1.2)])
    origins, directions = camera_rays(camera)
    points = origins + depth[..., None] * directions
    rotation = camera.rotation()
    expected = (points - centre) @ rotation / 1.2  # the point's offset from the centre, in camera axes
    got = normals_to_camera(normal, camera)
    assert np.abs(got[hit == 0] - expected[hit == 0]).max() < 1e-4
    assert (got[hit == 0][:, 2] > -0.3).all()  # seen surfaces face the viewer (+Z), grazing ones may dip


def _facing(vector) -> np.ndarray:
    """One-pixel world normals for a camera with identity rotation (world axes = camera axes)."""
    return np.asarray(vector, np.float32).reshape(1, 1, 3)


@pytest.mark.parametrize(("encoding", "right", "up", "front"), [
    ("opengl", (1.0, 0.5, 0.5), (0.5, 1.0, 0.5), (0.5, 0.5, 1.0)),
    ("bae", (0.0, 0.5, 0.5), (0.5, 1.0, 0.5), (0.5, 0.5, 1.0)),
])
def test_normal_encodings(encoding, right, up, front):
    camera = _camera()
    for vector, colour in (((1, 0, 0), right), ((0, 1, 0), up), ((0, 0, 1), front)):
        got = normals_to_control(_facing(vector), camera, encoding=encoding)
        assert got.dtype == np.float32
        assert np.allclose(got[0, 0], colour, atol=1e-6), (vector, got[0, 0])
    diagonal = np.array([1.0, -2.0, 2.0]) / 3.0
    got = normals_to_control(_facing(diagonal * 7.0), camera, encoding=encoding)  # not unit: normalised first
    sign = np.array([-1.0, 1.0, 1.0]) if encoding == "bae" else np.ones(3)
    assert np.allclose(got[0, 0], (sign * diagonal + 1) / 2, atol=1e-6)


def test_normal_control_background_and_mask():
    camera = _camera(rotation=_rot_z(90))
    normals = np.zeros((2, 2, 3), np.float32)
    normals[0, 0] = (1, 0, 0)  # world +X is camera -Y (down) after 90 degrees about Z
    normals[0, 1] = (np.nan, 0, 0)
    normals[1, 0] = (0, 0, 1)
    mask = np.array([[False, False], [True, False]])
    got = normals_to_control(normals, camera, encoding="opengl", mask=mask)
    assert np.allclose(got[0, 0], (0.5, 0.0, 0.5))
    for i, j in ((0, 1), (1, 0), (1, 1)):
        assert tuple(got[i, j]) == NORMAL_BACKGROUND_COLOR
    with pytest.raises(PassError, match="bae, opengl"):
        normals_to_control(normals, camera, encoding="directx")


# --- Canny ---------------------------------------------------------------------------------------------------------


def test_canny_finds_the_sphere_silhouette():
    width, height, lens, distance, radius = 128, 96, 50.0, 6.0, 1.0
    camera = _camera(width=width, height=height, lens=lens)
    depth, normal, hit = _render(camera, spheres=[((0.0, 0.0, -distance), radius)])
    light = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
    shade = 0.25 + 0.5 * np.clip(normal @ light, 0, 1)
    combined = np.zeros((height, width, 4), np.float32)
    combined[..., :3] = np.where(hit[..., None] == 0, shade[..., None], 0.0)
    combined[..., 3] = 1.0
    edges = canny_edges(combined)
    assert edges.dtype == np.float32 and set(np.unique(edges)) <= {0.0, 1.0}
    # The silhouette of a sphere centred on the view axis is a circle of radius f * r / sqrt(d^2 - r^2).
    focal = lens / 36.0 * width
    circle = focal * radius / math.sqrt(distance**2 - radius**2)
    rows, cols = np.nonzero(edges)
    offsets = np.hypot(cols + 0.5 - width / 2, rows + 0.5 - height / 2)
    assert rows.size > 0 and np.abs(offsets - circle).max() <= 1.5
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    for x, y in zip(width / 2 + circle * np.cos(angles), height / 2 + circle * np.sin(angles), strict=True):
        assert np.hypot(cols + 0.5 - x, rows + 0.5 - y).min() <= 1.5  # the whole circle is found


def test_canny_rejects_bad_thresholds():
    image = np.zeros((8, 8, 4), np.float32)
    for low, high in ((-1, 100), (200, 100), (100, 100), (10, 1001), (math.nan, 100)):
        with pytest.raises(PassError, match="(0 <= low < high <= 1000|must be a number)"):
            canny_edges(image, low, high)
    with pytest.raises(PassError, match="H x W x 3"):
        canny_edges(np.zeros((8, 8), np.float32))
    assert canny_edges(image[..., :3], 0, 1000).sum() == 0


def test_conditioning_rgb_shapes():
    grey = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert conditioning_rgb(grey).shape == (2, 3, 3) and np.all(conditioning_rgb(grey)[..., 2] == grey)
    assert conditioning_rgb(grey[..., None]).shape == (2, 3, 3)
    rgba = np.random.default_rng(0).random((2, 3, 4)).astype(np.float32)
    assert np.array_equal(conditioning_rgb(rgba), rgba[..., :3])
    with pytest.raises(PassError):
        conditioning_rgb(np.zeros((2, 3, 2)))


# --- finding passes ------------------------------------------------------------------------------------------------


def _pass_arrays(h: int = 6, w: int = 8):
    rng = np.random.default_rng(3)
    combined = rng.random((h, w, 4)).astype(np.float32)
    depth = (rng.random((h, w)) * 10 + 1).astype(np.float32)
    normal = rng.normal(size=(h, w, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=2, keepdims=True)
    normal[0, 0] = 0.0  # background
    return combined, depth, normal


def test_find_passes_reads_blenders_multilayer_names(tmp_path):
    combined, depth, normal = _pass_arrays()
    path = write_exr(tmp_path / "passes.exr", {
        "ViewLayer.Combined": combined, "ViewLayer.Depth": depth, "ViewLayer.Normal": normal,
    }, channel_names={"ViewLayer.Depth": ("Z",), "ViewLayer.Normal": ("X", "Y", "Z")})
    exr = read_exr(path)
    assert "ViewLayer.Depth.Z" in exr.channels
    passes = find_passes(exr)
    assert np.array_equal(passes.combined, combined) and np.array_equal(passes.depth, depth)
    assert np.allclose(passes.normal, normal, atol=1e-6)
    assert passes.present() == {"combined", "depth", "normal"}
    require_passes(passes, {"combined", "depth", "normal"}, str(path))


def test_find_passes_reads_plain_names(tmp_path):
    combined, depth, normal = _pass_arrays()
    path = write_exr(tmp_path / "plain.exr", {"": combined, "Depth": depth, "Normal": normal * 3.0})
    passes = find_passes(read_exr(path))
    assert np.array_equal(passes.combined, combined) and np.array_equal(passes.depth, depth)
    assert np.allclose(passes.normal, normal, atol=1e-6)  # renormalised; the background stays zero
    # "Z" as a layer, RGB without alpha.
    passes = find_passes(ExrImage(layers={"": combined[..., :3], "Z": depth}))
    assert np.all(passes.combined[..., 3] == 1.0) and np.array_equal(passes.depth, depth)
    assert passes.normal is None
    # A single-layer file: R, G, B, A and Z un-prefixed.
    single = ExrImage(layers={"": np.dstack([combined[..., :3], depth, combined[..., 3]])},
                      channels=["R", "G", "B", "Z", "A"])
    passes = find_passes(single)
    assert np.array_equal(passes.combined, combined) and np.array_equal(passes.depth, depth)


def test_find_passes_with_several_view_layers_needs_a_choice():
    combined, depth, normal = _pass_arrays()
    exr = ExrImage(layers={"A.Combined": combined, "A.Depth": depth, "B.Depth": depth * 2, "B.Normal": normal})
    with pytest.raises(PassError, match="several view layers \\('A', 'B'\\)"):
        find_passes(exr)
    passes = find_passes(exr, view_layer="B")
    assert np.array_equal(passes.depth, depth * 2) and passes.combined is None and passes.normal is not None
    with pytest.raises(PassError, match="view layer 'C'"):
        find_passes(exr, view_layer="C")
    with pytest.raises(PassError, match="differ in size"):
        find_passes(ExrImage(layers={"ViewLayer.Depth": depth, "ViewLayer.Normal": normal[:3]}))


def test_require_passes_names_what_is_missing():
    _, depth, _ = _pass_arrays()
    passes = ScenePasses(depth=depth)
    with pytest.raises(PassError) as info:
        require_passes(passes, {"depth", "normal", "combined"}, "jobs/1/inputs/passes.exr")
    message = str(info.value)
    assert "jobs/1/inputs/passes.exr" in message and "combined and normal passes" in message
    assert "passes present: depth" in message
    require_passes(passes, {"depth"}, "x.exr")
    with pytest.raises(PassError, match="unknown pass"):
        require_passes(passes, {"albedo"}, "x.exr")
