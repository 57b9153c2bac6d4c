"""Scene Diffusion backend: runs in its own Python with torch and diffusers.

Importing this package imports nothing heavy: the add-on imports ``backend.protocol`` and
``backend.jobfolder`` from Blender's Python.
"""

__version__ = "0.1.0"
