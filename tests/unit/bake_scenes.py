"""Analytic scenes for the projection-bake tests: UV spheres and planes, cameras aimed at them, and
their depth passes by ray casting (Blender's planar Z), all in numpy."""

from __future__ import annotations

import numpy as np

from backend.imaging.passes import BACKGROUND_DEPTH
from backend.projection.camera import camera_rays
from contract.formats.camera import CameraInfo
from contract.formats.surface import BakeMesh


def look_at(eye: tuple[float, float, float], target: tuple[float, float, float] = (0.0, 0.0, 0.0),
            up: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> list[list[float]]:
    """A camera matrix_world at ``eye`` looking at ``target`` (camera -Z forward, +Y up)."""
    eye_v, target_v, up_v = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    back = eye_v - target_v
    back /= np.linalg.norm(back)
    right = np.cross(up_v, back)
    if np.linalg.norm(right) < 1e-9:
        right = np.cross((0.0, 1.0, 0.0), back)
    right /= np.linalg.norm(right)
    upward = np.cross(back, right)
    matrix = np.eye(4)
    matrix[:3, 0], matrix[:3, 1], matrix[:3, 2], matrix[:3, 3] = right, upward, back, eye_v
    return matrix.tolist()


def camera(eye: tuple[float, float, float], width: int = 96, height: int = 72, kind: str = "PERSP",
           **changes: float | str) -> CameraInfo:
    values: dict[str, object] = dict(
        matrix_world=look_at(eye), type=kind, lens=50.0, sensor_width=36.0, sensor_height=24.0,
        sensor_fit="AUTO", shift_x=0.0, shift_y=0.0, ortho_scale=3.0, clip_start=0.1, clip_end=100.0,
        resolution_x=width, resolution_y=height)
    values.update(changes)
    return CameraInfo.from_dict(values)


def uv_sphere(radius: float = 1.0, segments: int = 48, rings: int = 24,
              centre: tuple[float, float, float] = (0.0, 0.0, 0.0), name: str = "sphere") -> BakeMesh:
    """A UV sphere with the equirectangular UV map (u = longitude, v = latitude), smooth normals."""
    lon = np.linspace(0.0, 2 * np.pi, segments + 1)
    lat = np.linspace(-np.pi / 2, np.pi / 2, rings + 1)
    lon_grid, lat_grid = np.meshgrid(lon, lat)  # (rings + 1) x (segments + 1); seam vertices duplicated
    normals = np.stack([np.cos(lat_grid) * np.cos(lon_grid), np.cos(lat_grid) * np.sin(lon_grid),
                        np.sin(lat_grid)], axis=-1).reshape(-1, 3)
    positions = normals * radius + np.asarray(centre)
    uv = np.stack([lon_grid / (2 * np.pi), (lat_grid + np.pi / 2) / np.pi], axis=-1).reshape(-1, 2)
    index = np.arange((rings + 1) * (segments + 1)).reshape(rings + 1, segments + 1)
    a, b = index[:-1, :-1].ravel(), index[:-1, 1:].ravel()
    c, d = index[1:, 1:].ravel(), index[1:, :-1].ravel()
    triangles = np.concatenate([np.stack([a, b, c], axis=1), np.stack([a, c, d], axis=1)])
    area = np.linalg.norm(np.cross(positions[triangles[:, 1]] - positions[triangles[:, 0]],
                                   positions[triangles[:, 2]] - positions[triangles[:, 0]]), axis=1)
    triangles = triangles[area > 1e-12]  # the poles' collapsed triangles
    return BakeMesh(positions, triangles, uv[triangles], normals[triangles], name)


def plane(size: float = 2.0, z: float = 0.0, divisions: int = 4, name: str = "plane") -> BakeMesh:
    """A square in the XY plane facing +Z, UV (0, 0) at (-size/2, -size/2)."""
    t = np.linspace(0.0, 1.0, divisions + 1)
    u, v = np.meshgrid(t, t)
    positions = np.stack([(u - 0.5) * size, (v - 0.5) * size, np.full(u.shape, z)], axis=-1).reshape(-1, 3)
    uv = np.stack([u, v], axis=-1).reshape(-1, 2)
    index = np.arange((divisions + 1) ** 2).reshape(divisions + 1, divisions + 1)
    a, b = index[:-1, :-1].ravel(), index[:-1, 1:].ravel()
    c, d = index[1:, 1:].ravel(), index[1:, :-1].ravel()
    triangles = np.concatenate([np.stack([a, b, c], axis=1), np.stack([a, c, d], axis=1)])
    normals = np.broadcast_to(np.array([0.0, 0.0, 1.0]), (len(triangles), 3, 3))
    return BakeMesh(positions, triangles, uv[triangles], normals, name)


def sphere_depth(cam: CameraInfo, spheres: list[tuple[tuple[float, float, float], float]],
                 planes_z: list[tuple[float, float]] = ()) -> np.ndarray:
    """Blender Z of spheres (centre, radius) and square planes (z, half size) facing the camera; 1e10 elsewhere."""
    origins, directions = camera_rays(cam)
    depth = np.full(origins.shape[:2], BACKGROUND_DEPTH)
    for centre, radius in spheres:
        oc = origins - np.asarray(centre)
        a = np.einsum("...i,...i", directions, directions)
        b = 2 * np.einsum("...i,...i", oc, directions)
        c = np.einsum("...i,...i", oc, oc) - radius * radius
        disc = b * b - 4 * a * c
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
        hit = (disc >= 0) & (t > 0)
        depth = np.where(hit, np.minimum(depth, t), depth)
    for z, half in planes_z:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (z - origins[..., 2]) / directions[..., 2]
        point = origins + t[..., None] * directions
        hit = (t > 0) & (np.abs(point[..., 0]) <= half) & (np.abs(point[..., 1]) <= half)
        depth = np.where(hit, np.minimum(depth, t), depth)
    return depth.astype(np.float32)
