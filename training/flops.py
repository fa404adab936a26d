"""Training FLOPs of one InterActDiT step, counted analytically for MFU.

Dense layers cost 6 x (weights) x (tokens they see) (forward 2, backward 4); attention costs
3 x 4 Lq Lk d (QK^T and AV, forward and backward). Recomputation under gradient checkpointing is not
counted, nor are norms, activations, RoPE and the optimizer: MFU measures useful work.
"""
from __future__ import annotations

from dataclasses import dataclass

from training.config import ModelConfig

TRAIN_MULTIPLIER = 3  # backward = 2 x forward


@dataclass(frozen=True)
class StepShape:
    batch: int
    latent_frames: int
    latent_height: int
    latent_width: int
    refs: int
    ref_height: int  # latent pixels
    ref_width: int
    text_tokens: int  # as the DiT sees them (text_len)
    audio_per_frame: int  # audio tokens per latent frame (the VAE's temporal stride)

    def video_tokens(self, patch) -> int:
        return self.latent_frames * (self.latent_height // patch[1]) * (self.latent_width // patch[2])

    def ref_tokens(self, patch) -> int:
        """Per reference."""
        return (self.ref_height // patch[1]) * (self.ref_width // patch[2])


def forward_flops(config: ModelConfig, shape: StepShape) -> dict[str, float]:
    """Forward FLOPs per sample, by part."""
    d, f, patch = config.dim, config.ffn_dim, config.patch_size
    video, ref = shape.video_tokens(patch), shape.ref_tokens(patch)
    tokens = video + shape.refs * ref
    text = shape.text_tokens
    window = (2 * config.audio_window + 1) * shape.audio_per_frame
    audio_tokens = shape.latent_frames * shape.audio_per_frame
    streams = shape.refs + 1  # each identity and the muted track
    m = config.mask_dim
    patch_volume = patch[0] * patch[1] * patch[2]
    per_block = {
        "dit_dense": 2 * tokens * (4 * d * d + 2 * d * d + 2 * d * f) + 2 * text * 2 * d * d,
        "dit_attention": 4 * tokens * tokens * d + 4 * tokens * text * d,
        "audio_dense": 2 * video * 2 * d * d + 2 * streams * audio_tokens * 2 * d * d,
        "audio_attention": streams * 4 * video * window * d,
    }
    mask_block = {
        "mask_dense": 2 * (video * d * m + shape.refs * ref * 2 * d * m + shape.refs * video * (m * m + m)),
        "mask_attention": shape.refs * 4 * video * ref * m,
    }
    flops = {name: value * config.num_layers for name, value in per_block.items()}
    flops.update({name: value * len(config.mask_layer_ids()) for name, value in mask_block.items()})
    flops["embeddings"] = 2 * (tokens * config.in_dim * patch_volume * d + text * (config.text_dim * d + d * d)
                               + video * d * patch_volume * config.out_dim + shape.refs * audio_tokens * (config.audio_dim * d + d * d)
                               + audio_tokens * (config.audio_dim * d + d * d))
    return flops


def training_flops(config: ModelConfig, shape: StepShape) -> float:
    return TRAIN_MULTIPLIER * shape.batch * sum(forward_flops(config, shape).values())
