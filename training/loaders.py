"""Loading released weights from local paths: the Wan2.1 DiT and VAE.

DiT: the original Wan2.1 layout (`diffusion_pytorch_model*.safetensors` in Wan-AI/Wan2.1-T2V-1.3B) or the
diffusers `WanTransformer3DModel` layout; every base weight must be present and nothing unknown may be
left over. The InterActHuman additions (audio and mask modules) are not in those files and keep their
initialisation. VAE: `Wan2.1_VAE.pth` (a torch state dict) or the same keys in safetensors, loaded
strictly. (wav2vec2 and umT5 load through transformers, in training/audio.py and training/text.py.)
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

# (diffusers pattern, original replacement); the original layout has no norm2 weights (no affine), so
# diffusers' norm2 (the cross-attention norm) is unambiguously the original norm3.
DIFFUSERS_TO_ORIGINAL = [
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
    (r"\.attn1\.to_out\.0\.", ".self_attn.o."),
    (r"\.attn1\.to_([qkv])\.", r".self_attn.\1."),
    (r"\.attn1\.norm_", ".self_attn.norm_"),
    (r"\.attn2\.to_out\.0\.", ".cross_attn.o."),
    (r"\.attn2\.to_([qkv])\.", r".cross_attn.\1."),
    (r"\.attn2\.norm_", ".cross_attn.norm_"),
    (r"\.norm2\.", ".norm3."),
    (r"\.ffn\.net\.0\.proj\.", ".ffn.0."),
    (r"\.ffn\.net\.2\.", ".ffn.2."),
    (r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation"),
]

ORIGINAL_TO_DIFFUSERS = [
    (r"^time_embedding\.0\.", "condition_embedder.time_embedder.linear_1."),
    (r"^time_embedding\.2\.", "condition_embedder.time_embedder.linear_2."),
    (r"^text_embedding\.0\.", "condition_embedder.text_embedder.linear_1."),
    (r"^text_embedding\.2\.", "condition_embedder.text_embedder.linear_2."),
    (r"^time_projection\.1\.", "condition_embedder.time_proj."),
    (r"^head\.modulation$", "scale_shift_table"),
    (r"^head\.head\.", "proj_out."),
    (r"\.self_attn\.o\.", ".attn1.to_out.0."),
    (r"\.self_attn\.([qkv])\.", r".attn1.to_\1."),
    (r"\.self_attn\.norm_", ".attn1.norm_"),
    (r"\.cross_attn\.o\.", ".attn2.to_out.0."),
    (r"\.cross_attn\.([qkv])\.", r".attn2.to_\1."),
    (r"\.cross_attn\.norm_", ".attn2.norm_"),
    (r"\.norm3\.", ".norm2."),
    (r"\.ffn\.0\.", ".ffn.net.0.proj."),
    (r"\.ffn\.2\.", ".ffn.net.2."),
    (r"^(blocks\.\d+)\.modulation$", r"\1.scale_shift_table"),
]


def rename_keys(state: dict[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return renamed


def is_diffusers_layout(keys) -> bool:
    return any(key.startswith("condition_embedder.") or ".attn1." in key for key in keys)


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """One .safetensors file, or every *.safetensors file of a folder (sharded checkpoints)."""
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no .safetensors under {path}")
    state = {}
    for file in files:
        state.update(load_file(str(file)))
    return state


def load_wan_dit(model: nn.Module, path: str | Path) -> None:
    """Load Wan2.1 T2V DiT weights into InterActDiT; raise on any missing base or unexpected key."""
    state = read_safetensors(path)
    if is_diffusers_layout(state):
        state = rename_keys(state, DIFFUSERS_TO_ORIGINAL)
    base = set(model.base_parameter_names())
    missing, unexpected = sorted(base - set(state)), sorted(set(state) - base)
    if missing or unexpected:
        raise KeyError(f"DiT checkpoint {path}: missing {missing[:8]} ({len(missing)}), unexpected {unexpected[:8]} ({len(unexpected)})")
    model.load_state_dict(state, strict=False)


def read_torch_or_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    if str(path).endswith(".safetensors"):
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_wan_vae(vae: nn.Module, path: str | Path) -> None:
    vae.load_state_dict(read_torch_or_safetensors(path), strict=True)
