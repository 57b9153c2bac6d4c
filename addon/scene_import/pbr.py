"""PBR maps as Blender images and a Principled BSDF material wired to them, and the way back:
finding the maps a material uses (ours or an artist's own) for export.

Colour spaces: albedo is colour (scene-linear when it comes from EXR, sRGB for 8-bit files);
every other map is data and loads as Non-Color.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from ...contract.jobfolder import atomic_copy
from .materials import NAME_LIMIT, PROVENANCE_KEY, assign

MAP_ORDER = ("albedo", "ao", "roughness", "metallic", "normal", "height")
HEIGHT_MODES = ("BUMP", "DISPLACEMENT")


def socket(sockets: Iterable[Any], identifier: str) -> Any:
    """By identifier: the Mix node has A/B sockets of every data type under the same name."""
    return next(s for s in sockets if s.identifier == identifier)


@dataclass(frozen=True)
class PbrApplied:
    material: str
    images: dict[str, str]
    objects: list[str]
    source: str = ""  # import_maps: the file the maps came from
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.source:
            return f"Material '{self.material}' from {self.source}"
        return f"PBR material '{self.material}' with {len(self.images)} maps"


def load_map_images(job_dir: Path, outputs: dict[str, str], base: str,
                    provenance: dict[str, str] | None = None) -> dict[str, bpy.types.Image]:
    """Load maps/<name>.exr outputs, packed (old job folders may be pruned)."""
    images: dict[str, bpy.types.Image] = {}
    for name in MAP_ORDER:
        if name not in outputs:
            continue
        image = bpy.data.images.load(str(job_dir / outputs[name]), check_existing=False)
        image.name = f"{base[:NAME_LIMIT - 10]} {name}"
        image.colorspace_settings.name = "Linear Rec.709" if name == "albedo" else "Non-Color"
        image.pack()
        if provenance:
            image[PROVENANCE_KEY] = dict(provenance)
        images[name] = image
    return images


def build_material(name: str, images: dict[str, bpy.types.Image], height_mode: str = "BUMP",
                   bump_strength: float = 0.3, displacement_scale: float = 0.05) -> bpy.types.Material:
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender 4.x
        material.use_nodes = True
    tree: Any = material.node_tree  # node sockets are dynamically typed; the stubs cannot follow them
    nodes, links = tree.nodes, tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    output = next(n for n in nodes if n.type == "OUTPUT_MATERIAL")
    x, y = bsdf.location.x - 700, bsdf.location.y + 300

    def texture(map_name: str) -> Any:
        nonlocal y
        node = nodes.new("ShaderNodeTexImage")
        node.image = images[map_name]
        node.label = map_name.capitalize()
        node.location = (x, y)
        y -= 280
        return node

    if "albedo" in images:
        colour = texture("albedo").outputs["Color"]
        if "ao" in images:  # Principled has no AO input: darken the base colour by it
            mix = nodes.new("ShaderNodeMix")
            mix.data_type, mix.blend_type, mix.label = "RGBA", "MULTIPLY", "Ambient Occlusion"
            socket(mix.inputs, "Factor_Float").default_value = 1.0
            mix.location = (x + 350, bsdf.location.y + 250)
            links.new(colour, socket(mix.inputs, "A_Color"))
            links.new(texture("ao").outputs["Color"], socket(mix.inputs, "B_Color"))
            colour = socket(mix.outputs, "Result_Color")
        links.new(colour, bsdf.inputs["Base Color"])
    for data_map, input_name in (("roughness", "Roughness"), ("metallic", "Metallic")):
        if data_map in images:
            links.new(texture(data_map).outputs["Color"], bsdf.inputs[input_name])
    normal_out = None
    if "normal" in images:
        normal_map = nodes.new("ShaderNodeNormalMap")
        normal_map.location = (x + 350, y + 280)
        links.new(texture("normal").outputs["Color"], normal_map.inputs["Color"])
        normal_out = normal_map.outputs["Normal"]
    if "height" in images:
        height = texture("height").outputs["Color"]
        if height_mode == "DISPLACEMENT":
            displacement = nodes.new("ShaderNodeDisplacement")
            displacement.location = (output.location.x - 200, output.location.y - 300)
            displacement.inputs["Midlevel"].default_value = 0.5
            displacement.inputs["Scale"].default_value = displacement_scale
            links.new(height, displacement.inputs["Height"])
            links.new(displacement.outputs["Displacement"], output.inputs["Displacement"])
            material.displacement_method = "BOTH"
        else:
            bump = nodes.new("ShaderNodeBump")
            bump.location = (x + 600, y + 280)
            bump.inputs["Strength"].default_value = bump_strength
            links.new(height, bump.inputs["Height"])
            if normal_out is not None:
                links.new(normal_out, bump.inputs["Normal"])
            normal_out = bump.outputs["Normal"]
    if normal_out is not None:
        links.new(normal_out, bsdf.inputs["Normal"])
    return material


def apply_maps(job_dir: Path, outputs: dict[str, str], base: str, object_names: Iterable[str],
               height_mode: str = "BUMP", provenance: dict[str, str] | None = None) -> PbrApplied:
    images = load_map_images(job_dir, outputs, base, provenance)
    material = build_material(f"{base[:NAME_LIMIT - 4]} PBR", images, height_mode)
    objects = [bpy.data.objects[n] for n in object_names
               if n in bpy.data.objects and bpy.data.objects[n].type == "MESH"]
    for obj in objects:
        assign(material, obj)
    return PbrApplied(material.name, {k: v.name for k, v in images.items()}, [o.name for o in objects])


@dataclass(frozen=True)
class ExportedMaps:
    files: list[str]
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"Exported {', '.join(self.files)}"


def move_exported(job_dir: Path, files: Iterable[str], folder: Path) -> ExportedMaps:
    """Copy the exported files (outputs/export/<name>) into the artist's ``folder``, each appearing whole."""
    folder.mkdir(parents=True, exist_ok=True)
    return ExportedMaps([str(atomic_copy(job_dir / rel, folder / Path(rel).name)) for rel in files])


# -- the way back: which images a material uses for which map ---------------------------


def _image_behind(start: Any, through: dict[str, str]) -> bpy.types.Image | None:
    """The image feeding ``start``, following links through the nodes in ``through``
    (node type -> identifier of the input socket to follow)."""
    current = start
    for _ in range(8):  # a bound, in case of a strange hand-made tree
        if not current.is_linked:
            return None
        node = current.links[0].from_node
        if node.type == "TEX_IMAGE":
            return node.image  # type: ignore[no-any-return]
        follow = through.get(node.type)
        if follow is None:
            return None
        current = socket(node.inputs, follow)
    return None


def find_maps(material: bpy.types.Material) -> dict[str, bpy.types.Image]:
    """Maps of a Principled BSDF material: ours, or any wired the usual way."""
    tree: Any = material.node_tree
    if tree is None:
        return {}
    bsdf = next((n for n in tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if bsdf is None:
        return {}
    found: dict[str, bpy.types.Image | None] = {
        "albedo": _image_behind(bsdf.inputs["Base Color"], {"MIX": "A_Color", "MIX_RGB": "Color1"}),
        "roughness": _image_behind(bsdf.inputs["Roughness"], {}),
        "metallic": _image_behind(bsdf.inputs["Metallic"], {}),
        "normal": _image_behind(bsdf.inputs["Normal"], {"BUMP": "Normal", "NORMAL_MAP": "Color"}),
        "height": _image_behind(bsdf.inputs["Normal"], {"BUMP": "Height"}),
    }
    mix = bsdf.inputs["Base Color"].links[0].from_node if bsdf.inputs["Base Color"].is_linked else None
    if mix is not None and mix.type in ("MIX", "MIX_RGB"):
        found["ao"] = _image_behind(socket(mix.inputs, "B_Color" if mix.type == "MIX" else "Color2"), {})
    output = next((n for n in tree.nodes if n.type == "OUTPUT_MATERIAL" and n.is_active_output), None)
    if output is not None and found["height"] is None:
        found["height"] = _image_behind(output.inputs["Displacement"], {"DISPLACEMENT": "Height"})
    return {name: image for name, image in found.items() if image is not None}


def base_color_image(material: bpy.types.Material | None) -> bpy.types.Image | None:
    return find_maps(material).get("albedo") if material is not None else None
