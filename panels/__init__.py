"""One module per capability. Draw only: no logic, no I/O."""
