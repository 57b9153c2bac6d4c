"""Geometry for image-to-3D: mesh arrays (mesh_data), mesh files (mesh_files, obj_ply), the subject of a
picture (subject). No torch, no bpy."""
