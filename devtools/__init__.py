"""Developer tools for Scene Diffusion. Not shipped in the extension zip."""
