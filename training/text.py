"""Text conditioning: umT5 (Wan2.1's encoder) from a local transformers folder, or a zero embedding.

umT5: a folder with a transformers `UMT5EncoderModel` and its tokenizer (the diffusers Wan2.1 release
keeps them in `text_encoder/` and `tokenizer/`; pass the parent folder or put both in one). As in
Wan2.1, the prompt is encoded to at most text_len tokens, positions past the prompt are zero, and the
DiT zero-pads to text_len. Wan's own `models_t5_umt5-xxl-enc-bf16.pth` layout is not read.

zero: every prompt maps to zeros [1, text_dim]; for tests and the synthetic corpus, whose captions carry
no information the model needs.
"""
from __future__ import annotations

from pathlib import Path

import torch

from training.config import ModelConfig, TextConfig


class ZeroTextEncoder:
    def __init__(self, text_dim: int):
        self.text_dim = text_dim

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        return torch.zeros(len(prompts), 1, self.text_dim)


class UMT5TextEncoder:
    def __init__(self, path: str, text_len: int, device: torch.device, dtype: torch.dtype = torch.bfloat16):
        from transformers import AutoTokenizer, UMT5EncoderModel

        root = Path(path)
        model_dir = root / "text_encoder" if (root / "text_encoder").is_dir() else root
        tokenizer_dir = root / "tokenizer" if (root / "tokenizer").is_dir() else root
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        self.model = UMT5EncoderModel.from_pretrained(model_dir, local_files_only=True, dtype=dtype).to(device).eval()
        self.text_len = text_len
        self.device = device

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """-> [B, text_len, text_dim] float32 on the encoder's device."""
        tokens = self.tokenizer(prompts, padding="max_length", truncation=True, max_length=self.text_len, return_tensors="pt").to(self.device)
        hidden = self.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).last_hidden_state
        return (hidden * tokens.attention_mask[..., None]).float()  # zero past the prompt, as Wan2.1 does


def build_text_encoder(config: TextConfig, model: ModelConfig, device: torch.device):
    if config.kind == "zero":
        return ZeroTextEncoder(model.text_dim)
    if config.kind == "umt5":
        if not config.checkpoint:
            raise ValueError("text.kind umt5 needs text.checkpoint (a local folder)")
        return UMT5TextEncoder(config.checkpoint, model.text_len, device)
    raise ValueError(f"unknown text encoder kind {config.kind!r}")
