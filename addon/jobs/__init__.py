"""The backend seen from Blender: its process or connection, the jobs it runs, the timer that supervises
them, and the environment it runs in."""
