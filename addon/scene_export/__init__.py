"""Scene -> job folder: pass renders, evaluated meshes, cameras, views and pixels, with Blender's own
fast paths."""
