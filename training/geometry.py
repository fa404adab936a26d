"""How video frames and pixels map to latent frames and DiT tokens.

The Wan2.1 VAE is causal: the first video frame becomes latent frame 0 on its own, every following 4
frames one latent frame (T = 1 + 4 (T_lat - 1)). The pixel patch VAE groups plain blocks of 4 frames
(T = 4 T_lat). Audio tokens, ground-truth masks and sliding windows all go through this one mapping.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenGeometry:
    temporal_stride: int
    spatial_stride: int  # VAE spatial stride
    causal_first_frame: bool
    patch_size: tuple[int, int, int] = (1, 2, 2)

    @property
    def token_stride(self) -> int:
        """Pixels per token side."""
        return self.spatial_stride * self.patch_size[1]

    def latent_frames(self, video_frames: int) -> int:
        if self.causal_first_frame:
            if (video_frames - 1) % self.temporal_stride:
                raise ValueError(f"causal VAE needs 1 + {self.temporal_stride}k frames, got {video_frames}")
            return 1 + (video_frames - 1) // self.temporal_stride
        if video_frames % self.temporal_stride:
            raise ValueError(f"patch VAE needs a multiple of {self.temporal_stride} frames, got {video_frames}")
        return video_frames // self.temporal_stride

    def video_frames(self, latent_frames: int) -> int:
        if self.causal_first_frame:
            return 1 + (latent_frames - 1) * self.temporal_stride
        return latent_frames * self.temporal_stride

    def frame_groups(self, video_frames: int) -> np.ndarray:
        """[T_lat, temporal_stride] video frame indices behind each latent frame.

        The causal first latent frame has one video frame; it is repeated so every latent frame has the
        same number of audio tokens.
        """
        latent = self.latent_frames(video_frames)
        stride = self.temporal_stride
        if not self.causal_first_frame:
            return np.arange(latent * stride).reshape(latent, stride)
        rest = 1 + np.arange((latent - 1) * stride).reshape(latent - 1, stride)
        return np.concatenate([np.zeros((1, stride), dtype=rest.dtype), rest])

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        stride = self.token_stride
        if height % stride or width % stride:
            raise ValueError(f"{height}x{width} is not a multiple of the token stride {stride}")
        return height // stride, width // stride
