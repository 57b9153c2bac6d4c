"""What the add-on and the backend share: the messages, every task's typed parameters and outputs,
the job folder, and each file format that crosses between the two processes.

Standard library and numpy only, relative imports only: Blender's Python imports this package as part
of the extension (``bl_ext.<repo>.scene_diffusion.contract``), the backend as the top-level package
``contract`` (the extension root is on its path).
"""
