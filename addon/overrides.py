"""Keyword arguments that override a capability's scene settings for one call, as Blender's own
``object.bake`` falls back to ``scene.render.bake``: ``bpy.ops.scene_diffusion.project_image(image="Photo",
texture_size=2048)`` from a script uses those values for that job and leaves ``scene.scene_diffusion`` as it was.

Each operator gets a copy of its settings group's properties, marked SKIP_SAVE so a click never inherits a
script's last values; a pointer to a datablock becomes the datablock's name (operators cannot hold ID
pointers). In ``execute`` the operator reads ``SettingsView(self, group)``: a view that answers with the
keyword's value where the call set one and with the scene's value everywhere else.
"""

from __future__ import annotations

import sys
from functools import cache
from typing import Any

import bpy
from bpy.props import PointerProperty, StringProperty

_ID_COLLECTIONS: dict[type, str] = {bpy.types.Image: "images", bpy.types.Object: "objects"}


class OverrideError(ValueError):
    """A keyword names a datablock that does not exist; the message says which."""


def _pointer_type(definition: Any) -> type | None:
    if getattr(definition, "function", None) is not PointerProperty:
        return None
    return definition.keywords.get("type")  # type: ignore[no-any-return]


@cache
def _definitions(group: type) -> dict[str, Any]:
    """The group's property definitions. Under ``from __future__ import annotations`` they are source text,
    which Blender itself evaluates in the class's module when it registers the class; so do we."""
    namespace = vars(sys.modules[group.__module__])
    return {name: eval(text, namespace) if isinstance(text, str) else text  # noqa: S307 - our own annotations
            for name, text in group.__annotations__.items()}


def operator_properties(group: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Annotations for an operator: every property of ``group`` (nested groups and ``skip`` left out)."""
    annotations: dict[str, Any] = {}
    for name, definition in _definitions(group).items():
        kind = _pointer_type(definition)
        if name in skip or not hasattr(definition, "keywords") or (kind is not None and kind not in _ID_COLLECTIONS):
            continue
        keywords = {k: v for k, v in definition.keywords.items() if k not in ("options", "update", "poll", "type")}
        keywords["options"] = {"SKIP_SAVE"}  # a click uses the panel, never a script's last keywords
        if kind is not None:
            label = keywords.get("name") or name.replace("_", " ").title()
            annotations[name] = StringProperty(name=label, description=f"{label} by name; empty: the scene's",
                                               options={"SKIP_SAVE"})
        else:
            annotations[name] = definition.function(**keywords)
    return annotations


def _id_collection(group: type, name: str) -> str | None:
    """"images" / "objects" for a property pointing at such datablocks, else None."""
    kind = _pointer_type(_definitions(group).get(name))
    return _ID_COLLECTIONS.get(kind) if kind is not None else None


class SettingsView:
    """The scene settings ``group`` as seen by one operator call: its keywords first. Built eagerly, so a
    keyword naming a missing datablock is an OverrideError before anything starts."""

    def __init__(self, op: bpy.types.Operator, group: Any) -> None:
        self._group = group
        self._given: dict[str, Any] = {}
        for name in op.properties.bl_rna.properties.keys():
            if name == "rna_type" or not op.properties.is_property_set(name) or not hasattr(group, name):
                continue
            value = getattr(op, name)
            collection = _id_collection(type(group), name)
            if collection is not None and value:
                found = getattr(bpy.data, collection).get(value)
                if found is None:
                    raise OverrideError(f"{name}={value!r}: there is no {collection[:-1]} named {value!r}")
                value = found
            elif collection is not None:
                value = None
            self._given[name] = value

    def __getattr__(self, name: str) -> Any:
        if name in self._given:
            return self._given[name]
        attribute = getattr(type(self._group), name, None)
        if callable(attribute) and not isinstance(attribute, type):
            return attribute.__get__(self)  # methods such as to_params read the overridden values too
        return getattr(self._group, name)


def with_overrides(group: type, skip: tuple[str, ...] = ()) -> Any:
    """Class decorator: the operator gets ``group``'s properties as keywords (before it is registered)."""

    def decorate(operator: type[bpy.types.Operator]) -> type[bpy.types.Operator]:
        own = dict(getattr(operator, "__annotations__", {}))
        operator.__annotations__ = {**operator_properties(group, skip), **own}
        return operator

    return decorate
