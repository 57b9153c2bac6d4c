"""Projection baking: the camera model, the UV rasterizer, the bake, fill and seam padding, and the
views and objects the projection tasks read and write. Pure numpy and OpenCV."""
