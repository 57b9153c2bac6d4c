"""The latents of a denoising step as a (batch, channels, rows, columns) grid, whatever the family packs them as.

SD 1.5, SDXL, SD 3.5 and Z-Image step on plain (B, C, h, w) latents. FLUX.1, FLUX.2 klein and Qwen-Image step on
*packed* latents: 2 x 2 patches of the VAE's latents flattened into one token each, tokens in row-major order,
(B, rows * columns, C * 4). Seamless rolling and step previews need the grid; these functions turn one into the
other without copying more than a view.
"""

from __future__ import annotations

import torch

PATCH = 2  # the packed families' patch side, in VAE latents


def grid_shape(height: int, width: int, size_multiple: int) -> tuple[int, int]:
    """Token rows and columns of a packed family's ``height`` x ``width`` image (its VAE stride x patch)."""
    return height // size_multiple, width // size_multiple


def unpack(latents: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """(B, rows * columns, C * 4) packed tokens -> (B, C, rows * 2, columns * 2) latents."""
    batch, tokens, features = latents.shape
    if tokens != rows * columns or features % (PATCH * PATCH):
        raise ValueError(f"packed latents {tuple(latents.shape)} do not fit a {rows} x {columns} token grid")
    channels = features // (PATCH * PATCH)
    grid = latents.view(batch, rows, columns, channels, PATCH, PATCH).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(batch, channels, rows * PATCH, columns * PATCH)


def roll(latents: torch.Tensor, dy: int, dx: int, grid: tuple[int, int] | None) -> torch.Tensor:
    """``latents`` shifted by (dy, dx) on the torus: in latent pixels for plain latents, in tokens (whole patches)
    for packed ones (``grid``: their rows and columns), so that a packed token is never split."""
    if latents.ndim == 4:
        return torch.roll(latents, shifts=(dy, dx), dims=(2, 3))
    if grid is None:
        raise ValueError("packed latents need their token grid to roll")
    batch, tokens, features = latents.shape
    rows, columns = grid
    if tokens != rows * columns:
        raise ValueError(f"packed latents {tuple(latents.shape)} do not fit a {rows} x {columns} token grid")
    tiles = latents.view(batch, rows, columns, features)
    return torch.roll(tiles, shifts=(dy, dx), dims=(1, 2)).reshape(batch, tokens, features)
