"""Diffusion helpers every task shares: the device, step callbacks and previews, seamless tiling."""
