"""Job folder -> scene: images, materials, meshes and projected textures, applied on the main thread."""
