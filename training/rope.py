"""3D rotary position embedding and the sinusoidal timestep embedding, as Wan2.1 defines them.

A head of width d rotates d - 4 (d // 6) channels by the frame index and 2 (d // 6) channels each by
the row and the column. Channel pairs are adjacent (x[2j], x[2j + 1]), as in Wan2.1's complex view, so
a released checkpoint sees the same rotations it was trained with.
"""
from __future__ import annotations

import torch


class Rope3D:
    def __init__(self, head_dim: int, theta: float = 10000.0):
        if head_dim % 2:
            raise ValueError("rotary heads need an even width")
        spatial = 2 * (head_dim // 6)
        self.axis_dims = (head_dim - 2 * spatial, spatial, spatial)
        self.inv_freqs = [1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d) for d in self.axis_dims]

    def angles(self, positions: torch.Tensor) -> torch.Tensor:
        """positions [..., 3] (frame, row, column; fractional allowed) -> angles [..., head_dim / 2], float32."""
        parts = [positions[..., axis, None].double() * inv.to(positions.device) for axis, inv in enumerate(self.inv_freqs)]
        return torch.cat(parts, dim=-1).float()


def grid_positions(frames: int, height: int, width: int, frame_offset: int = 0, device=None) -> torch.Tensor:
    """[frames * height * width, 3] positions in token order (frame-major, then row, then column)."""
    f, h, w = torch.meshgrid(
        torch.arange(frames, device=device) + frame_offset,
        torch.arange(height, device=device),
        torch.arange(width, device=device),
        indexing="ij",
    )
    return torch.stack([f, h, w], dim=-1).reshape(-1, 3)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate x [..., L, head_dim] by angles [L, head_dim / 2] (broadcast over leading dims)."""
    pairs = x.float().unflatten(-1, (-1, 2))
    cos, sin = angles.cos(), angles.sin()
    first, second = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([first * cos - second * sin, first * sin + second * cos], dim=-1)
    return rotated.flatten(-2).type_as(x)


def sinusoidal_embedding(dim: int, timesteps: torch.Tensor) -> torch.Tensor:
    """[B] timesteps (0..1000) -> [B, dim] float32, cosines first (Wan2.1's order)."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timesteps.device) / half)
    args = torch.outer(timesteps.double(), freqs)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1).float()
