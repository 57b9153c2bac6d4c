"""Blender-side services. May import bpy, never torch."""
