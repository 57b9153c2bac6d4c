"""EXR files written by backend.imaging.exr, opened by Blender's own image loader (real bpy).

What bpy 4.2-5.0 offer, found by these tests:
- a plain EXR (un-prefixed R, G, B(, A) or Y) loads as an ordinary float image whose pixels
  Python reads with ``Image.pixels.foreach_get`` (rows from the bottom, always RGBA; Y becomes grey);
- a multilayer EXR (one part or several) loads as type 'MULTILAYER', but ``Image.pixels`` is empty
  for it and ``ImageUser.multilayer_layer`` / ``multilayer_pass`` are read-only from Python. Its passes
  are listed as the output sockets of a compositor Image node (for a multi-part file: every part's
  from 4.5, the first part's only in 4.2), and a compositor-only render (5.0: a compositor node group;
  4.x: the scene's own tree and its Composite node) writes any one of them to a plain file, whose
  pixels are then compared here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import bpy
import numpy as np
import pytest

from backend.imaging.exr import read_exr, write_exr
from backend.imaging.pbr import PbrFilterSettings, derive_maps

H, W = 24, 40  # not square, so a transposed or flipped read shows
# Blender 4.2 opens only the first part of a multi-part EXR; 4.5 and 5.0 list the passes of every part
# (4.3 and 4.4 are not tested). The add-on never loads a multi-part file itself: import_maps hands it to the backend.
READS_EVERY_PART = bpy.app.version >= (4, 5, 0)


def _maps() -> dict[str, np.ndarray]:
    """Real derived maps of a smooth colour image; height stretched beyond [0, 1] so half rounding shows."""
    rng = np.random.default_rng(4)
    small = rng.random((6, 10, 3)).astype(np.float32)
    colour = np.kron(small, np.ones((4, 4, 1), np.float32)) * 0.8 + rng.random((H, W, 3), dtype=np.float32) * 0.2
    layers = derive_maps(colour, PbrFilterSettings(detail_radius=4.0, ao_radius=3.0)).as_layers()
    layers["height"] = layers["height"] * 7.3 - 2.1
    return layers


def _as_half(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float16).astype(np.float32)


def _rgba(layer: np.ndarray) -> np.ndarray:
    """What Blender's float buffer holds for a layer: RGBA, one channel spread to grey, alpha 1."""
    if layer.ndim == 2:
        layer = np.repeat(layer[:, :, None], 3, axis=2)
    if layer.shape[2] == 3:
        layer = np.concatenate([layer, np.ones(layer.shape[:2] + (1,), np.float32)], axis=2)
    return layer


def _load_pixels(path: Path) -> tuple[np.ndarray, bpy.types.Image]:
    """Load with Blender as non-colour data; H x W x channels float32 with row 0 at the TOP."""
    image = bpy.data.images.load(str(path), check_existing=False)
    image.colorspace_settings.name = "Non-Color"  # data: no colour transform on load
    width, height = image.size
    pixels = np.empty(width * height * image.channels, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    return np.flipud(pixels.reshape(height, width, image.channels)), image  # Blender's rows start at the bottom


@pytest.fixture
def compositor() -> Iterator[tuple[bpy.types.Scene, bpy.types.NodeTree]]:
    """A scene of its own whose compositor sends one image to its output; render size set per test."""
    scene = bpy.data.scenes.new("exr_compositor_test")
    scene.render.engine = "CYCLES"
    scene.render.resolution_percentage = 100
    settings = scene.render.image_settings
    settings.file_format = "OPEN_EXR"
    settings.color_depth = "32"
    settings.color_mode = "RGBA"
    settings.exr_codec = "ZIP"
    if hasattr(scene, "compositing_node_group"):  # Blender 5.0+: the compositor is a node group
        tree = bpy.data.node_groups.new("exr_compositor_test", "CompositorNodeTree")
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        tree.nodes.new("NodeGroupOutput")
        scene.compositing_node_group = tree
    else:  # Blender 4.2-4.5: the scene owns its compositor tree, whose output is a Composite node
        scene.use_nodes = True
        tree = scene.node_tree
        tree.nodes.clear()
        tree.nodes.new("CompositorNodeComposite")
    try:
        yield scene, tree
    finally:
        embedded = tree.is_embedded_data  # the 4.x tree goes with its scene
        bpy.data.scenes.remove(scene)
        if not embedded:
            bpy.data.node_groups.remove(tree)


def _passes_through_compositor(scene, tree, image, out_dir: Path) -> dict[str, np.ndarray]:
    """Every pass Blender lists for a multilayer image, written by a compositor-only render to a
    plain float EXR and read back with Blender's loader."""
    node = tree.nodes.new("CompositorNodeImage")
    node.image = image
    output = next(n for n in tree.nodes if n.bl_idname in ("NodeGroupOutput", "CompositorNodeComposite"))
    scene.render.resolution_x, scene.render.resolution_y = W, H
    result = {}
    for socket in node.outputs:
        tree.links.new(socket, output.inputs[0])
        scene.render.filepath = str(out_dir / f"pass_{socket.name or 'unnamed'}.exr")
        assert bpy.ops.render.render(write_still=True, scene=scene.name) == {"FINISHED"}
        pixels, written = _load_pixels(Path(scene.render.filepath))
        bpy.data.images.remove(written)
        result[socket.name] = pixels
    tree.nodes.remove(node)
    return result


# --- plain files: one map each --------------------------------------------------------------------------------------


@pytest.mark.parametrize("half", [False, True], ids=["float", "half"])
@pytest.mark.parametrize("name", ["albedo", "normal", "roughness", "ao", "height", "metallic"])
def test_blender_loads_each_map_as_a_plain_exr(tmp_path, name, half):
    layer = _maps()[name]
    path = write_exr(tmp_path / f"{name}.exr", {"": layer}, half=half, attributes={"map": name})
    pixels, image = _load_pixels(path)
    try:
        assert image.type == "IMAGE" and image.file_format == "OPEN_EXR"
        assert image.is_float
        assert tuple(image.size) == (W, H)
        expected = _rgba(_as_half(layer) if half else layer)
        if half:  # within half precision of the float values, and exactly the half-rounded ones
            np.testing.assert_allclose(pixels, _rgba(layer), rtol=2**-11, atol=2**-24)
        np.testing.assert_array_equal(pixels, expected)
    finally:
        bpy.data.images.remove(image)


def test_blender_loads_rgba_with_straight_alpha(tmp_path):
    rgba = np.random.default_rng(1).random((H, W, 4), dtype=np.float32)
    pixels, image = _load_pixels(write_exr(tmp_path / "rgba.exr", {"": rgba}))
    try:
        np.testing.assert_array_equal(pixels, rgba)
    finally:
        bpy.data.images.remove(image)


# --- multilayer files -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("multipart", [False, True], ids=["one-part", "multi-part"])
def test_blender_opens_multilayer_files_and_its_compositor_reads_every_pass(tmp_path, compositor, multipart):
    scene, tree = compositor
    maps = _maps()
    half = {"albedo", "normal"}
    path = write_exr(tmp_path / "maps.exr", maps, half=half, multipart=multipart, attributes={"seed": "7"})
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        image.colorspace_settings.name = "Non-Color"
        assert len(image.pixels) == 0  # the first access loads the file ...
        assert image.type == "MULTILAYER"  # ... as a multilayer image,
        assert tuple(image.size) == (0, 0)  # whose pixels Python cannot read through Image.pixels

        passes = _passes_through_compositor(scene, tree, image, tmp_path)
        if multipart and not READS_EVERY_PART:
            assert list(passes) == [next(iter(maps))]  # only the first part
            maps = {name: maps[name] for name in passes}
        assert set(maps) <= set(passes), f"Blender lists passes {sorted(passes)}"
        for name, layer in maps.items():
            expected = _rgba(_as_half(layer) if name in half else layer)
            np.testing.assert_array_equal(passes[name], expected, err_msg=name)
    finally:
        bpy.data.images.remove(image)


def test_blender_lists_passes_by_layer_name(tmp_path, compositor):
    _, tree = compositor
    rgba = np.random.default_rng(2).random((H, W, 4), dtype=np.float32)
    one_part = write_exr(tmp_path / "one.exr", {"": rgba, "albedo": rgba[..., :3], "ao": rgba[..., 0]})
    parts = write_exr(tmp_path / "parts.exr", {"": rgba, "albedo": rgba[..., :3], "ao": rgba[..., 0]},
                      multipart=True)
    names = {}
    for path in (one_part, parts):
        image = bpy.data.images.load(str(path), check_existing=False)
        node = tree.nodes.new("CompositorNodeImage")
        node.image = image
        names[path.name] = [socket.name for socket in node.outputs]
        tree.nodes.remove(node)
        bpy.data.images.remove(image)
    # The un-prefixed RGBA of a one-part file is Blender's "Combined" (with its "Alpha"); in a
    # multi-part file it is the part named "rgba".
    assert names["one.exr"] == ["Combined", "Alpha", "albedo", "ao"]
    assert sorted(names["parts.exr"]) == (["albedo", "ao", "rgba"] if READS_EVERY_PART else ["rgba"])


def test_properties_that_select_a_pass_are_read_only_in_python():
    props = bpy.types.ImageUser.bl_rna.properties
    assert props["multilayer_layer"].is_readonly and props["multilayer_pass"].is_readonly


# --- the other way: a multilayer EXR written by Blender's renderer, read by the backend ------------------------------


def test_backend_reads_blenders_own_multilayer_render(tmp_path):
    scene = bpy.data.scenes.new("exr_render_test")
    try:
        scene.render.engine = "CYCLES"
        scene.cycles.samples = 1
        scene.cycles.device = "CPU"
        scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 16, 12, 100
        camera = bpy.data.objects.new("exr_test_camera", bpy.data.cameras.new("exr_test_camera"))
        scene.collection.objects.link(camera)
        scene.camera = camera
        layer = scene.view_layers[0]
        layer.use_pass_z = layer.use_pass_normal = True
        settings = scene.render.image_settings
        if hasattr(settings, "media_type"):  # Blender 5.0+; 4.x has only the file format
            settings.media_type = "MULTI_LAYER_IMAGE"
        settings.file_format = "OPEN_EXR_MULTILAYER"
        settings.color_depth = "32"
        scene.render.filepath = str(tmp_path / "passes.exr")
        assert bpy.ops.render.render(write_still=True, scene=scene.name) == {"FINISHED"}
        passes = read_exr(tmp_path / "passes.exr")
        view = layer.name
        passes.require(f"{view}.Combined", f"{view}.Depth", f"{view}.Normal")
        assert passes.layers[f"{view}.Combined"].shape == (12, 16, 4)
        assert passes.layers[f"{view}.Depth"].shape == (12, 16)
        assert passes.layers[f"{view}.Normal"].shape == (12, 16, 3)
        # Blender 5.0 names itself in "Software"; 4.2-4.5 write only their "BlenderMultiChannel" marker.
        written_by = passes.attributes.get("Software") or passes.attributes.get("BlenderMultiChannel", "")
        assert written_by.startswith("Blender")
        bpy.data.objects.remove(camera)
    finally:
        bpy.data.scenes.remove(scene)
