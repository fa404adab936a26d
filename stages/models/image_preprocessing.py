"""Image preprocessing of Grounding-DINO and SAM2 in plain torch, on the model's device.

transformers' own fast processors for both models need torchvision, which cannot be installed here,
and its PIL processors run on the CPU one image at a time. These functions reproduce what those
processors do (resize with antialiased bilinear filtering on uint8 pixels, then rescale by 1/255 and
normalise by the checkpoint's mean and std) on a batch of frames:

* Grounding-DINO (GroundingDinoImageProcessor): shortest edge to `shortest_edge` (800), longest at
  most `longest_edge` (1333), aspect ratio kept, with transformers' own rounding of the target size.
* SAM2 video (Sam2VideoVideoProcessor): every frame to `image_size` x `image_size` (1024), aspect
  ratio not kept.

On the CPU the uint8 resize is torch's native antialiased bilinear kernel, which matches PIL's
BILINEAR filter (what the slow processors run) to within one grey level on a fraction of a percent
of the pixels; on CUDA, where torch has no uint8 antialiased kernel, the resize runs in float32 and
is rounded back to uint8 (torchvision's own path there), again within one grey level.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_transforms import get_size_with_aspect_ratio

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREPROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json")


@dataclass(frozen=True)
class Normalisation:
    """Per-channel mean and std of the model's input, on the 0-1 scale."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def of_checkpoint(cls, folder: str | Path) -> Normalisation:
        config = read_preprocessor_config(folder)
        return cls(tuple(config.get("image_mean", IMAGENET_MEAN)), tuple(config.get("image_std", IMAGENET_STD)))


def read_preprocessor_config(folder: str | Path) -> dict:
    """The checkpoint's preprocessor config (the first of PREPROCESSOR_FILES found), or {}."""
    for name in PREPROCESSOR_FILES:
        path = Path(folder) / name
        if path.is_file():
            return json.loads(path.read_text())
    return {}


def to_device_uint8(frames: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """RGB frames [B, H, W, 3] uint8 (numpy) -> [B, 3, H, W] uint8 on `device`."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2)


def resize_uint8(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of uint8 images [B, 3, H, W] to size (height, width), as uint8."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    if images.device.type == "cpu":
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
    resized = F.interpolate(images.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def normalise(images: torch.Tensor, norm: Normalisation, dtype: torch.dtype) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> (x / 255 - mean) / std in `dtype` (computed in float32)."""
    mean = torch.tensor(norm.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(norm.std, device=images.device).view(1, 3, 1, 1)
    return ((images.float() / 255.0 - mean) / std).to(dtype)


def grounding_dino_size(height: int, width: int, shortest_edge: int = 800, longest_edge: int = 1333) -> tuple[int, int]:
    """Grounding-DINO's input (height, width) for a frame: transformers' get_size_with_aspect_ratio."""
    return get_size_with_aspect_ratio((height, width), shortest_edge, longest_edge)


def grounding_dino_pixels(frames: np.ndarray, shortest_edge: int, longest_edge: int, norm: Normalisation,
                          device: str | torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Grounding-DINO pixel_values [B, 3, h, w] for same-sized RGB frames [B, H, W, 3] uint8."""
    images = to_device_uint8(frames, device)
    size = grounding_dino_size(images.shape[2], images.shape[3], shortest_edge, longest_edge)
    return normalise(resize_uint8(images, size), norm, dtype)


def sam2_pixels(frames: np.ndarray, image_size: int, norm: Normalisation, device: str | torch.device,
                dtype: torch.dtype) -> torch.Tensor:
    """SAM2 pixel_values [B, 3, S, S] for RGB frames [B, H, W, 3] uint8 (S = the model's image_size)."""
    return normalise(resize_uint8(to_device_uint8(frames, device), (image_size, image_size)), norm, dtype)
