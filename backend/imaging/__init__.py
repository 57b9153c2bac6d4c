"""Pure numpy image work: conversions, projection, PBR, image and EXR I/O. No torch, no bpy."""
