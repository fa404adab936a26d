"""InterActHuman DiT: a Wan2.1 text-to-video DiT with reference tokens, per-identity audio and mask prediction.

Module names follow the released Wan2.1 checkpoint (`blocks.{i}.self_attn.q`, `head.modulation`, ...), so
its weights load as they are; the added modules live under `blocks.{i}.audio_attn`,
`blocks.{i}.mask_predictor` and `audio_proj`.

Reference images are VAE latents patchified by the DiT's own patch embedding and appended to the video
tokens: every block's self-attention, text cross-attention and FFN process them with the same weights
(no new parameters), modulated as clean inputs (timestep 0). Only video tokens reach the output head,
so references never receive the flow-matching loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn

from training.config import ModelConfig
from training.heads import AudioCrossAttention, MaskPredictor
from training.layers import FloatLayerNorm, RMSNorm, attention, merge_heads, split_heads
from training.rope import Rope3D, apply_rope, grid_positions, sinusoidal_embedding

AudioGateMode = Literal["masks", "global", "muted", "current"]


@dataclass
class AudioGate:
    """Which audio reaches which video token.

    masks: masks [B, N, Lv] in [0, 1]; token gets m * attn(audio_i) + (1 - m) * attn(muted) per identity.
    global: every identity's audio reaches every token (no gating).
    muted: only muted audio (the unconditional CFG branch).
    current: gate each block with the mask predicted in this same forward pass (binarised at 0.5);
        blocks before the first mask predictor use global audio.
    """

    mode: AudioGateMode
    masks: torch.Tensor | None = None

    def __post_init__(self):
        if self.mode not in get_args(AudioGateMode):
            raise ValueError(f"audio gate mode {self.mode!r} is not one of {get_args(AudioGateMode)}")
        if (self.mode == "masks") != (self.masks is not None):
            raise ValueError("masks are given exactly for gate mode 'masks'")


@dataclass
class DiTOutput:
    velocity: torch.Tensor  # [B, C, T, H, W]
    mask_logits: torch.Tensor  # [B, n_mask_layers, N, Lv]


@dataclass
class BlockContext:
    """Everything a block needs besides the hidden states; built once per forward pass."""

    num_video: int
    frames: int
    num_refs: int
    mod_video: torch.Tensor  # [B, 6, dim] time projection for the noisy video
    mod_ref: torch.Tensor  # [B, 6, dim] time projection at t = 0 for the clean references
    angles: torch.Tensor  # [Lv + N*Lr, head_dim/2]
    mask_video_angles: torch.Tensor
    mask_ref_angles: torch.Tensor
    text: torch.Tensor  # [B, text_len, dim]
    audio: torch.Tensor  # [B, N, T, G, dim]
    audio_muted: torch.Tensor  # [B, T, G, dim]


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        q = apply_rope(split_heads(self.norm_q(self.q(x)), self.num_heads), angles)
        k = apply_rope(split_heads(self.norm_k(self.k(x)), self.num_heads), angles)
        v = split_heads(self.v(x), self.num_heads)
        return self.o(merge_heads(attention(q, k, v)))


class TextCrossAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        q = split_heads(self.norm_q(self.q(x)), self.num_heads)
        k = split_heads(self.norm_k(self.k(text)), self.num_heads)
        v = split_heads(self.v(text), self.num_heads)
        return self.o(merge_heads(attention(q, k, v)))


class DiTBlock(nn.Module):
    """Wan2.1 block (adaLN self-attention, text cross-attention, FFN) followed by mask prediction and
    gated audio cross-attention on the video tokens."""

    def __init__(self, config: ModelConfig, with_mask_predictor: bool):
        super().__init__()
        dim, eps = config.dim, config.eps
        self.norm1 = FloatLayerNorm(dim, eps=eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, config.num_heads, eps)
        self.norm3 = FloatLayerNorm(dim, eps=eps, elementwise_affine=True)
        self.cross_attn = TextCrossAttention(dim, config.num_heads, eps)
        self.norm2 = FloatLayerNorm(dim, eps=eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, config.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(config.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)
        self.audio_attn = AudioCrossAttention(dim, config.num_heads, config.audio_window, eps)
        self.mask_predictor = (
            MaskPredictor(dim, config.mask_dim, config.mask_heads, eps) if with_mask_predictor else None
        )

    def forward(self, x: torch.Tensor, ctx: BlockContext, gate: AudioGate) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self._wan_block(x, ctx)
        video, refs = x[:, : ctx.num_video], x[:, ctx.num_video :]
        mask_logits = None
        if self.mask_predictor is not None and ctx.num_refs:
            mask_logits = self.mask_predictor(
                video, refs.unflatten(1, (ctx.num_refs, -1)), ctx.mask_video_angles, ctx.mask_ref_angles
            )
            if gate.mode == "current":
                gate = AudioGate("masks", (mask_logits.detach() > 0).to(video.dtype))
        video = video + self._audio(video, ctx, gate)
        return torch.cat([video, refs], dim=1), mask_logits

    def _wan_block(self, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        mod_video = (self.modulation + ctx.mod_video).chunk(6, dim=1)
        mod_ref = (self.modulation + ctx.mod_ref).chunk(6, dim=1)

        def per_segment(fn, tokens):
            head, tail = tokens[:, : ctx.num_video], tokens[:, ctx.num_video :]
            return torch.cat([fn(head, mod_video), fn(tail, mod_ref)], dim=1)

        h = per_segment(lambda t, m: t * (1 + m[1]) + m[0], self.norm1(x))
        x = x + per_segment(lambda t, m: t * m[2], self.self_attn(h, ctx.angles))
        x = x + self.cross_attn(self.norm3(x), ctx.text)
        h = per_segment(lambda t, m: t * (1 + m[4]) + m[3], self.norm2(x))
        return x + per_segment(lambda t, m: t * m[5], self.ffn(h))

    def _audio(self, video: torch.Tensor, ctx: BlockContext, gate: AudioGate) -> torch.Tensor:
        """Sum over identities of m * attn(audio_i) + (1 - m) * attn(muted audio)."""
        layer, identities = self.audio_attn, ctx.audio.shape[1]
        queries = layer.queries(video, ctx.frames)
        if gate.mode == "muted" or identities == 0:
            return layer.project(max(identities, 1) * layer.attend(queries, ctx.audio_muted), max(identities, 1))
        streams = [layer.attend(queries, ctx.audio[:, i]) for i in range(identities)]
        if gate.mode in ("global", "current"):  # "current" before the first mask predictor
            return layer.project(sum(streams), identities)
        masks = gate.masks.to(video.dtype)[..., None]  # [B, N, Lv, 1]
        gated = sum(masks[:, i] * stream for i, stream in enumerate(streams))
        muted = (1 - masks).sum(dim=1) * layer.attend(queries, ctx.audio_muted)
        return layer.project(gated + muted, identities)


class OutputHead(nn.Module):
    def __init__(self, dim: int, out_dim: int, patch_size: tuple[int, int, int], eps: float):
        super().__init__()
        self.norm = FloatLayerNorm(dim, eps=eps, elementwise_affine=False)
        self.head = nn.Linear(dim, math.prod(patch_size) * out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, time_embedding: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation + time_embedding[:, None]).chunk(2, dim=1)
        return self.head(self.norm(x) * (1 + scale) + shift)


class InterActDiT(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        dim = config.dim
        if dim % config.num_heads or (dim // config.num_heads) % 2:
            raise ValueError("dim must split into heads of even width")
        self.patch_embedding = nn.Conv3d(config.in_dim, dim, kernel_size=config.patch_size, stride=config.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(config.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        mask_layers = set(config.mask_layer_ids())
        self.blocks = nn.ModuleList(DiTBlock(config, i in mask_layers) for i in range(config.num_layers))
        self.head = OutputHead(dim, config.out_dim, config.patch_size, config.eps)
        self.audio_proj = nn.Sequential(nn.Linear(config.audio_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.rope = Rope3D(dim // config.num_heads)
        self.mask_rope = Rope3D(config.mask_dim // config.mask_heads)
        self._init_weights()

    def _init_weights(self):
        """Wan2.1's initialisation for training from scratch; a loaded checkpoint overwrites it."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        for module in [*self.text_embedding, *self.time_embedding]:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
        zero_outputs = [self.head.head] + [block.audio_attn.o for block in self.blocks]
        for linear in zero_outputs:  # the head (Wan2.1) and the audio outputs start silent
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)
        for block in self.blocks:
            if block.mask_predictor is not None:
                block.mask_predictor.init_prior()

    def base_parameter_names(self) -> list[str]:
        """Names that exist in a released Wan2.1 T2V checkpoint."""
        return [name for name in self.state_dict() if not _is_added(name)]

    def forward(
        self,
        latents: torch.Tensor,  # [B, C, T, H, W] noisy video latents
        timesteps: torch.Tensor,  # [B] in 0..1000
        text: torch.Tensor,  # [B, L_text <= text_len, text_dim]
        ref_latents: torch.Tensor,  # [B, N, C, 1, Hr, Wr]
        audio: torch.Tensor,  # [B, N, T, G, audio_dim] per-identity audio features
        audio_muted: torch.Tensor,  # [B, T, G, audio_dim] features of silence
        gate: AudioGate,
    ) -> DiTOutput:
        video_tokens, grid = self._patchify(latents)
        batch, num_refs = ref_latents.shape[:2]
        ref_tokens, ref_grid = self._patchify(ref_latents.flatten(0, 1)) if num_refs else (None, (1, 0, 0))
        x = video_tokens if ref_tokens is None else torch.cat([video_tokens, ref_tokens.reshape(batch, -1, self.config.dim)], 1)
        ctx, time_embedding = self._context(timesteps, text, grid, ref_grid, num_refs, audio, audio_muted, video_tokens.shape[1])
        mask_logits = []
        for block in self.blocks:
            x, logits = block(x, ctx, self._block_gate(gate, block, mask_logits))
            if logits is not None:
                mask_logits.append(logits)
        video = self.head(x[:, : ctx.num_video], time_embedding)
        stacked = torch.stack(mask_logits, dim=1) if mask_logits else video.new_zeros(batch, 0, num_refs, ctx.num_video)
        return DiTOutput(self._unpatchify(video, grid), stacked)

    def _mask_angles(self, positions: torch.Tensor) -> torch.Tensor:
        """The mask predictor's RoPE angles; all zero (no rotation) when model.mask_rope is off."""
        angles = self.mask_rope.angles(positions)
        return angles if self.config.mask_rope else torch.zeros_like(angles)

    @staticmethod
    def _block_gate(gate: AudioGate, block: nn.Module, mask_logits: list[torch.Tensor]) -> AudioGate:
        """In "current" mode a block without its own predictor uses the latest mask of this pass. (A
        checkpointed block's wrapper hands on its DiTBlock's mask_predictor.)"""
        if gate.mode != "current" or block.mask_predictor is not None or not mask_logits:
            return gate
        return AudioGate("masks", (mask_logits[-1].detach() > 0).float())

    def _patchify(self, latents: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        embedded = self.patch_embedding(latents.to(self.patch_embedding.weight.dtype))
        return embedded.flatten(2).transpose(1, 2), tuple(embedded.shape[2:])

    def _unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        pt, ph, pw = self.config.patch_size
        frames, height, width = grid
        x = tokens.reshape(tokens.shape[0], frames, height, width, pt, ph, pw, self.config.out_dim)
        x = torch.einsum("bfhwpqrc->bcfphqwr", x)
        return x.reshape(tokens.shape[0], self.config.out_dim, frames * pt, height * ph, width * pw)

    def _context(self, timesteps, text, grid, ref_grid, num_refs, audio, audio_muted, num_video):
        device = timesteps.device
        with torch.autocast(device.type, enabled=False):  # adaLN inputs stay float32, as in Wan2.1
            stacked_t = torch.cat([timesteps.float(), torch.zeros_like(timesteps, dtype=torch.float32)])
            embedded = self.time_embedding(sinusoidal_embedding(self.config.freq_dim, stacked_t).to(self.time_embedding[0].weight.dtype))
            modulation = self.time_projection(embedded).unflatten(1, (6, self.config.dim)).float()
        batch = timesteps.shape[0]
        text = nn.functional.pad(text, (0, 0, 0, self.config.text_len - text.shape[1]))
        positions = self._positions(grid, ref_grid, num_refs, device)
        ctx = BlockContext(
            num_video=num_video,
            frames=grid[0],
            num_refs=num_refs,
            mod_video=modulation[:batch],
            mod_ref=modulation[batch:],
            angles=self.rope.angles(positions),
            mask_video_angles=self._mask_angles(positions[:num_video]),
            mask_ref_angles=self._mask_angles(positions[num_video:]).reshape(num_refs, ref_grid[1] * ref_grid[2], -1),
            text=self.text_embedding(text.to(self.text_embedding[0].weight.dtype)),
            audio=self.audio_proj(audio.to(self.audio_proj[0].weight.dtype)),
            audio_muted=self.audio_proj(audio_muted.to(self.audio_proj[0].weight.dtype)),
        )
        return ctx, embedded[:batch].float()

    def _positions(self, grid, ref_grid, num_refs, device) -> torch.Tensor:
        """Video tokens at (frame, row, col); reference i at frame T + i on its own grid, so references
        are told apart from each other and from every video frame."""
        frames = grid[0]
        parts = [grid_positions(*grid, device=device)]
        parts += [grid_positions(1, ref_grid[1], ref_grid[2], frame_offset=frames + i, device=device) for i in range(num_refs)]
        return torch.cat(parts)


def final_mask(mask_logits: torch.Tensor, average_last: int) -> torch.Tensor:
    """[B, layers, N, Lv] logits -> [B, N, Lv] probability averaged over the last `average_last` layers."""
    return torch.sigmoid(mask_logits[:, -average_last:].float()).mean(dim=1)


_ADDED_PREFIXES = ("audio_proj.",)
_ADDED_PARTS = (".audio_attn.", ".mask_predictor.")


def _is_added(name: str) -> bool:
    return name.startswith(_ADDED_PREFIXES) or any(part in name for part in _ADDED_PARTS)
