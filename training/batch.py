"""From a collated data batch (uint8 pixels, audio features, token masks) to DiT inputs on a device."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from training.geometry import TokenGeometry


@dataclass
class ModelInputs:
    latents: torch.Tensor  # [B, C, T_lat, h, w] clean video latents
    ref_latents: torch.Tensor  # [B, N, C, 1, hr, wr]
    text: torch.Tensor  # [B, L, text_dim]
    audio: torch.Tensor  # [B, N, T_lat, G, C_audio]
    audio_muted: torch.Tensor  # [B, T_lat, G, C_audio]
    masks: torch.Tensor  # [B, N, Lv] ground truth in [0, 1]
    conf: torch.Tensor  # [B, N, T_lat]

    @property
    def num_video_tokens(self) -> int:
        return self.masks.shape[-1]


def pixels_to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float [..., 3, H, W] in [-1, 1]."""
    return frames.float().movedim(-1, -3) / 127.5 - 1.0


def group_audio(features: torch.Tensor, geometry: TokenGeometry) -> torch.Tensor:
    """[..., T, C] per video frame -> [..., T_lat, G, C] audio tokens per latent frame."""
    groups = torch.as_tensor(geometry.frame_groups(features.shape[-2]), device=features.device)
    return features[..., groups, :]


@torch.no_grad()
def encode_videos(vae, video: torch.Tensor) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> latents [B, C, T_lat, h, w]."""
    return vae.encode(pixels_to_unit(video).transpose(1, 2)).float()


@torch.no_grad()
def encode_references(vae, refs: torch.Tensor) -> torch.Tensor:
    """uint8 [B, N, H, W, 3] -> [B, N, C, 1, h, w]."""
    batch, count = refs.shape[:2]
    latents = vae.encode_image(pixels_to_unit(refs.flatten(0, 1))).float()
    return latents.unflatten(0, (batch, count))


def prepare_inputs(batch: dict, vae, text_encoder, geometry: TokenGeometry, device: torch.device) -> ModelInputs:
    video = batch["video"].to(device, non_blocking=True)
    return ModelInputs(
        latents=encode_videos(vae, video),
        ref_latents=encode_references(vae, batch["refs"].to(device, non_blocking=True)),
        text=text_encoder(batch["caption"]).to(device),
        audio=group_audio(batch["audio"].to(device), geometry),
        audio_muted=group_audio(batch["audio_muted"].to(device), geometry),
        masks=batch["token_masks"].to(device).flatten(2),
        conf=batch["token_conf"].to(device),
    )
