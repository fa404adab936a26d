"""The two modules InterActHuman adds to every DiT block: audio cross-attention and the mask predictor."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.layers import FloatLayerNorm, RMSNorm, attention, merge_heads, split_heads
from training.rope import Rope3D, apply_rope

MASK_PRIOR = 0.1


class AudioCrossAttention(nn.Module):
    """Video tokens attend to audio tokens; latent frame f only sees audio of latent frames f +- window.

    Audio arrives as [B, T_lat, G, dim] (G audio tokens, one per video frame, per latent frame). Keys are
    rotated (the temporal part of the 3D RoPE) by their offset in video frames from the query's latent
    frame, so attention knows which audio is "now" without new parameters. Queries are computed once
    per block and reused for every identity's stream and for the muted stream.
    """

    def __init__(self, dim: int, num_heads: int, window: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.norm = FloatLayerNorm(dim, eps=eps)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)
        self.rope = Rope3D(dim // num_heads)

    def queries(self, video: torch.Tensor, frames: int) -> torch.Tensor:
        """[B, T*HW, dim] -> [B*T, heads, HW, d]."""
        q = self.norm_q(self.q(self.norm(video)))
        return split_heads(q.unflatten(1, (frames, -1)).flatten(0, 1), self.num_heads)

    def attend(self, queries: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """queries [B*T, heads, HW, d], audio [B, T, G, dim] -> attention output before the output
        projection, [B, T*HW, dim]."""
        batch, frames, group = audio.shape[:3]
        keys = apply_rope(split_heads(self._windows(self.norm_k(self.k(audio))), self.num_heads), self._offset_angles(group, audio.device))
        values = split_heads(self._windows(self.v(audio)), self.num_heads)
        mask = self._window_mask(frames, group, audio.device).repeat(batch, 1)[:, None, None, :]
        out = attention(queries, keys, values, mask)
        return merge_heads(out).unflatten(0, (batch, frames)).flatten(1, 2)

    def project(self, mixed: torch.Tensor, identities: int) -> torch.Tensor:
        """Output projection of a gated sum of attention outputs in which each of `identities`
        identities contributes weights summing to one per token. o is affine, so projecting the sum
        once equals summing the per-stream projections: one projection instead of N + 1."""
        return F.linear(mixed, self.o.weight) + identities * self.o.bias

    def _windows(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, T, G, dim] -> [B*T, (2w+1)*G, dim]: the tokens of latent frames f-w..f+w, zero past the ends."""
        w = self.window
        padded = nn.functional.pad(tokens, (0, 0, 0, 0, w, w))
        windows = padded.unfold(1, 2 * w + 1, 1)  # [B, T, G, dim, 2w+1]
        return windows.permute(0, 1, 4, 2, 3).flatten(2, 3).flatten(0, 1)

    def _offset_angles(self, group: int, device) -> torch.Tensor:
        """[(2w+1)*G, d/2] angles for each window slot's offset (video frames) from the query frame's centre."""
        slots = torch.arange((2 * self.window + 1) * group, device=device, dtype=torch.float64)
        offsets = slots - self.window * group - (group - 1) / 2
        positions = torch.stack([offsets, torch.zeros_like(offsets), torch.zeros_like(offsets)], dim=-1)
        return self.rope.angles(positions)

    def _window_mask(self, frames: int, group: int, device) -> torch.Tensor:
        """[T, (2w+1)*G] True where the window position is a real latent frame."""
        offsets = torch.arange(-self.window, self.window + 1, device=device)
        source = torch.arange(frames, device=device)[:, None] + offsets
        valid = (source >= 0) & (source < frames)
        return valid.repeat_interleave(group, dim=1)


class MaskPredictor(nn.Module):
    """Per-token mask of each reference: video tokens attend to one reference's tokens at a time.

    One set of weights serves every reference (references are a batch dimension), so the module has the
    same parameters whatever the number of identities.
    """

    def __init__(self, dim: int, mask_dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, mask_dim)
        self.k = nn.Linear(dim, mask_dim)
        self.v = nn.Linear(dim, mask_dim)
        self.norm_q = FloatLayerNorm(mask_dim, eps=eps)
        self.norm_k = FloatLayerNorm(mask_dim, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(mask_dim, mask_dim), nn.GELU(approximate="tanh"), nn.Linear(mask_dim, 1))
        self.init_prior()

    def init_prior(self) -> None:
        """Start at the prior that a token shows a given person, as RetinaNet does under focal loss,
        so early steps are not spent unlearning a 50 % guess on the background."""
        nn.init.constant_(self.mlp[-1].bias, math.log(MASK_PRIOR / (1 - MASK_PRIOR)))

    def forward(
        self, video: torch.Tensor, refs: torch.Tensor, video_angles: torch.Tensor, ref_angles: torch.Tensor
    ) -> torch.Tensor:
        """video [B, Lv, dim], refs [B, N, Lr, dim], angles [Lv, d/2] and [N, Lr, d/2] -> logits [B, N, Lv]."""
        batch, num_refs = refs.shape[:2]
        queries = self.norm_q(self.q(video))  # [B, Lv, mask_dim]
        q = apply_rope(split_heads(queries, self.num_heads), video_angles)
        k = apply_rope(split_heads(self.norm_k(self.k(refs)), self.num_heads), ref_angles[:, None])
        v = split_heads(self.v(refs), self.num_heads)
        q = q[:, None].expand(-1, num_refs, -1, -1, -1).flatten(0, 1)
        retrieved = merge_heads(attention(q, k.flatten(0, 1), v.flatten(0, 1))).unflatten(0, (batch, num_refs))
        # Residual, as in any cross-attention layer: the MLP compares the token with what it found in
        # the reference; the retrieved part alone cannot tell a match from a diffuse average.
        return self.mlp(queries[:, None] + retrieved).squeeze(-1)
