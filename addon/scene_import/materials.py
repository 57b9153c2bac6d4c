"""What every result that lands shares: names that fit Blender's, packed images with provenance, materials."""

from __future__ import annotations

from pathlib import Path

import bpy

NAME_LIMIT = 60  # Blender names hold 63 bytes; leave room for ".001"
PROVENANCE_KEY = "scene_diffusion"  # custom property on images: prompt, seed, model, steps


def name_from_prompt(prompt: str) -> str:
    words = " ".join(prompt.split())
    return (words[:NAME_LIMIT].rstrip() or "Texture")


def load_image(path: Path, name: str) -> bpy.types.Image:
    """Load and pack the PNG, so the .blend keeps it when old job folders are pruned."""
    image = bpy.data.images.load(str(path), check_existing=False)
    image.name = name
    image.colorspace_settings.name = "sRGB"
    image.pack()
    return image


def texture_material(name: str, image: bpy.types.Image) -> bpy.types.Material:
    """Principled BSDF with the image on Base Color (the default new material already has
    the BSDF wired to the output)."""
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender 4.x; 5.x materials always have node trees
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    tex = nodes.new("ShaderNodeTexImage")
    tex.image = image
    tex.location = (bsdf.location.x - 400, bsdf.location.y)
    links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    nodes.active = tex  # what Solid view's Texture colour and Texture Paint show
    return material


def assign(material: bpy.types.Material, obj: bpy.types.Object) -> None:
    """Into the active slot, or a new slot when the object has none."""
    if obj.material_slots:
        obj.active_material = material
    else:
        obj.data.materials.append(material)
