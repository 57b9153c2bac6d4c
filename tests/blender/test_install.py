"""The extension builds, validates, installs, enables, disables and re-enables like a user's."""

from __future__ import annotations

import zipfile
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import bpy

from devtools import extension

SHIPPED = ("blender_manifest.toml", "__init__.py", "contract/messages.py", "contract/tasks/__init__.py",
           "backend/cli/__init__.py", "backend/requirements.txt")
NOT_SHIPPED_DIRS = (
    "tests/", "bench/", ".ci/", "devtools/", "examples/", "docs/", "demo/", "dist/", ".cache/", ".venv",
)
NOT_SHIPPED_FILES = ("Makefile", "pyproject.toml", "requirements-dev.txt", "requirements-lint.txt")


def test_zip_builds_and_validates(extension_zip: Path) -> None:
    manifest = extension.read_manifest()
    assert extension_zip.name == f"{manifest.id}-{manifest.version}.zip"
    extension.validate(extension_zip)  # raises with the validator's output on failure


def test_zip_holds_the_add_on_and_nothing_else(extension_zip: Path) -> None:
    with zipfile.ZipFile(extension_zip) as zf:
        names = zf.namelist()
    for name in SHIPPED:
        assert name in names
    leaked = [n for n in names if n.startswith(NOT_SHIPPED_DIRS) or n in NOT_SHIPPED_FILES
              or "__pycache__/" in n or n.endswith(".pyc") or "/." in f"/{n}"]
    assert leaked == []


def test_installed_under_the_temporary_user_dir(addon: ModuleType, blender_user_dir: Path) -> None:
    extensions_dir = Path(bpy.utils.user_resource("EXTENSIONS")).resolve()
    assert extensions_dir.is_relative_to(blender_user_dir)

    installed = Path(addon.__file__ or "").resolve().parent
    assert installed == extensions_dir / "user_default" / "scene_diffusion"
    assert installed.is_relative_to(blender_user_dir)
    assert not installed.is_relative_to(extension.ROOT)
    assert not installed.is_relative_to(Path.home() / ".config" / "blender")


def test_enabled_with_its_operators(addon: ModuleType) -> None:
    assert addon.__name__ == "bl_ext.user_default.scene_diffusion"
    assert addon.__name__ in bpy.context.preferences.addons
    assert "generate_texture" in dir(bpy.ops.scene_diffusion)


class _Registered(NamedTuple):
    classes: frozenset[str]
    operators: frozenset[str]
    properties: frozenset[tuple[str, str]]
    handlers: frozenset[tuple[str, str]]


def _registered(module_name: str) -> _Registered:
    """What the add-on has put into Blender: classes, operators, ID properties, handlers."""
    classes = set()
    properties = set()
    for type_name in dir(bpy.types):
        cls = getattr(bpy.types, type_name, None)
        if getattr(cls, "__module__", "").startswith(module_name):
            classes.add(type_name)
        if isinstance(cls, type) and issubclass(cls, bpy.types.ID) and cls is not bpy.types.ID:
            properties.update((type_name, p) for p in cls.bl_rna.properties.keys() if p.startswith("scene_diffusion"))
    handlers = set()
    for list_name in dir(bpy.app.handlers):
        handler_list = getattr(bpy.app.handlers, list_name)
        if isinstance(handler_list, list):
            handlers.update((list_name, getattr(fn, "__qualname__", repr(fn))) for fn in handler_list
                            if getattr(fn, "__module__", "").startswith(module_name))
    return _Registered(frozenset(classes), frozenset(dir(bpy.ops.scene_diffusion)),
                       frozenset(properties), frozenset(handlers))


def test_disable_then_enable_leaves_nothing_behind(addon: ModuleType) -> None:
    name = addon.__name__
    enabled = _registered(name)
    assert enabled.classes and enabled.operators

    for _ in range(2):
        bpy.ops.preferences.addon_disable(module=name)
        assert name not in bpy.context.preferences.addons
        assert _registered(name) == _Registered(frozenset(), frozenset(), frozenset(), frozenset())

        bpy.ops.preferences.addon_enable(module=name)
        assert name in bpy.context.preferences.addons
        assert _registered(name) == enabled
    assert "generate_texture" in dir(bpy.ops.scene_diffusion)


def test_clean_scene_keeps_the_add_on(clean_scene: bpy.types.Scene, addon: ModuleType) -> None:
    assert len(bpy.data.objects) == 0
    assert clean_scene == bpy.context.scene
    assert addon.__name__ in bpy.context.preferences.addons
    assert "generate_texture" in dir(bpy.ops.scene_diffusion)
