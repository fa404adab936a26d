"""Small layers shared by the DiT, the audio layers and the mask predictor."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

ATTENTION_BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                      "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}


class RMSNorm(nn.Module):
    """RMS norm over the last dim, computed in float32 (Wan2.1's QK norm; the key is `weight`)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


class FloatLayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (bf16 statistics drift)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[..., L, heads * d] -> [..., heads, L, d]."""
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[..., heads, L, d] -> [..., L, heads * d]."""
    return x.transpose(-3, -2).flatten(-2)


def attention_backend(name: str) -> AbstractContextManager:
    """A context preferring one scaled_dot_product_attention kernel ("auto": PyTorch's choice). The
    others stay allowed in order, for the calls the preferred kernel does not support (masked attention
    on some kernels, CPU tensors). The backward pass uses the kernel its forward used."""
    if name == "auto":
        return nullcontext()
    if name not in ATTENTION_BACKENDS:
        raise ValueError(f"attention_backend must be auto or one of {sorted(ATTENTION_BACKENDS)}, got {name!r}")
    preferred = ATTENTION_BACKENDS[name]
    others = [backend for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                                      SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH) if backend != preferred]
    return sdpa_kernel([preferred, *others], set_priority=True)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scaled dot-product attention in the dtype of v (flash attention on GPU when there is no mask)."""
    return F.scaled_dot_product_attention(q.to(v.dtype), k.to(v.dtype), v, attn_mask=mask)
