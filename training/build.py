"""Building the model and its frozen companions (VAE, text and audio encoders) from a Config."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from training.audio import AudioFeaturizer
from training.config import Config
from training.dit import InterActDiT
from training.geometry import TokenGeometry
from training.loaders import load_wan_dit
from training.text import build_text_encoder
from training.vae import build_vae, latent_channels, vae_geometry


def build_model(config: Config) -> InterActDiT:
    """The DiT with random additions; Wan2.1 base weights when model.checkpoint is set."""
    channels = latent_channels(config.vae)
    if config.model.in_dim != channels or config.model.out_dim != channels:
        raise ValueError(f"model in_dim/out_dim must equal the VAE's {channels} latent channels")
    model = InterActDiT(config.model)
    if config.model.checkpoint:
        load_wan_dit(model, config.model.checkpoint)
    return model


@dataclass
class Companions:
    """Frozen parts around the DiT."""

    vae: torch.nn.Module
    text_encoder: object
    featurizer: AudioFeaturizer
    geometry: TokenGeometry


def build_companions(config: Config, device: torch.device, audio_device: str | torch.device = "cpu") -> Companions:
    vae = build_vae(config.vae).to(device)
    return Companions(
        vae=vae,
        text_encoder=build_text_encoder(config.text, config.model, device),
        featurizer=AudioFeaturizer(config.audio, audio_device),
        geometry=vae_geometry(config.vae, config.model.patch_size),
    )
