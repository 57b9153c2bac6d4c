"""Pure numpy geometry for image-to-3D: mesh files and arrays (mesh_io), the subject of a picture
(subject). No torch, no bpy."""
