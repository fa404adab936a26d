"""LAION improved aesthetic predictor: CLIP ViT-L/14 image embedding -> linear MLP head -> score.

Follows christophschuhmann/improved-aesthetic-predictor (simple_inference.py): the image embedding
(CLIP's projected `image_embeds`) is L2-normalised and fed to an MLP 768-1024-128-64-16-1 with
dropouts between the first layers and no activations. CLIP's image preprocessing is done here with
PIL and numpy from the checkpoint's preprocessor_config.json (no torchvision): shorter side resized
with PIL bicubic to `size`, centre crop, scale to [0, 1], normalise with the config's mean and std.

Q-Align (q-future/one-align) is wrapped as an alternative scorer; it runs the checkpoint's own
remote code and its `score(..., task_="aesthetics")`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from curation.stage import on_cuda

EMBED_DIM = 768  # CLIP ViT-L/14 projection width, the head's input


class AestheticHead(nn.Module):
    """The predictor's MLP; module indices match the checkpoint keys layers.{0,2,4,6,7}."""

    def __init__(self, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(embed_dim, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, normalised_embeds: torch.Tensor) -> torch.Tensor:
        return self.layers(normalised_embeds).squeeze(-1)


def load_aesthetic_head(path: str | Path) -> AestheticHead:
    """The head with every weight from `path`; any missing, extra or misshapen key is an error."""
    head = AestheticHead()
    head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return head.eval()


@dataclass(frozen=True)
class ClipPreprocess:
    """CLIPImageProcessor's steps, read from a preprocessor_config.json."""

    shortest_edge: int
    crop_height: int
    crop_width: int
    rescale_factor: float
    mean: np.ndarray
    std: np.ndarray
    resample: int

    @classmethod
    def from_file(cls, path: str | Path) -> ClipPreprocess:
        config = json.loads(Path(path).read_text())
        size, crop = config["size"], config["crop_size"]
        return cls(
            shortest_edge=size if isinstance(size, int) else size["shortest_edge"],
            crop_height=crop if isinstance(crop, int) else crop["height"],
            crop_width=crop if isinstance(crop, int) else crop["width"],
            rescale_factor=float(config.get("rescale_factor", 1 / 255)),
            mean=np.asarray(config["image_mean"], dtype=np.float32),
            std=np.asarray(config["image_std"], dtype=np.float32),
            resample=int(config.get("resample", Image.Resampling.BICUBIC)),
        )

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """[H, W, 3] uint8 RGB -> [3, crop_h, crop_w] float32 pixel values."""
        resized = np.asarray(Image.fromarray(rgb).resize(self._resized_size(rgb.shape[:2]), resample=self.resample))
        height, width = resized.shape[:2]
        top, left = (height - self.crop_height) // 2, (width - self.crop_width) // 2
        cropped = resized[top:top + self.crop_height, left:left + self.crop_width]
        pixels = (cropped.astype(np.float32) * self.rescale_factor - self.mean) / self.std
        return pixels.transpose(2, 0, 1).astype(np.float32)

    def _resized_size(self, shape: tuple[int, int]) -> tuple[int, int]:
        """(width, height) with the shorter side at shortest_edge; the longer side truncated, as
        transformers' get_resize_output_image_size does."""
        height, width = shape
        if width <= height:
            return self.shortest_edge, int(self.shortest_edge * height / width)
        return int(self.shortest_edge * width / height), self.shortest_edge


class ClipImageEmbedder:
    """CLIP vision tower with projection from a local transformers checkpoint: frames -> unit vectors."""

    def __init__(self, folder: str | Path, device: str):
        from transformers import CLIPVisionModelWithProjection

        folder = Path(folder)
        self.preprocess = ClipPreprocess.from_file(folder / "preprocessor_config.json")
        self.model = CLIPVisionModelWithProjection.from_pretrained(folder).eval().to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, frames: list[np.ndarray]) -> torch.Tensor:
        pixels = torch.from_numpy(np.stack([self.preprocess(frame) for frame in frames])).to(self.device)
        embeds = self.model(pixel_values=pixels.to(self.model.dtype)).image_embeds.float()
        return torch.nn.functional.normalize(embeds, dim=-1)


class LaionAestheticScorer:
    """Frames -> LAION aesthetic scores (about 1-10)."""

    def __init__(self, clip_folder: str | Path, head_path: str | Path, device: str):
        self.embed = ClipImageEmbedder(clip_folder, device)
        self.head = load_aesthetic_head(head_path).to(device)

    @torch.no_grad()
    def __call__(self, frames: list[np.ndarray]) -> np.ndarray:
        return self.head(self.embed(frames)).cpu().numpy()


class QAlignAestheticScorer:
    """Frames -> Q-Align aesthetic scores (1-5), through the checkpoint's remote code."""

    def __init__(self, folder: str | Path, device: str):
        from transformers import AutoModelForCausalLM

        dtype = torch.float16 if on_cuda(device) else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=dtype).eval().to(device)

    @torch.no_grad()
    def __call__(self, frames: list[np.ndarray]) -> np.ndarray:
        scores = self.model.score([Image.fromarray(frame) for frame in frames], task_="aesthetics", input_="image")
        return torch.as_tensor(scores).float().cpu().numpy().reshape(-1)
