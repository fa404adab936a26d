"""Shared pieces for loading transformers checkpoints: dtype names as stage parameters take them."""
from __future__ import annotations

from typing import Literal

import torch

DtypeName = Literal["bfloat16", "float16", "float32"]


def torch_dtype(name: DtypeName) -> torch.dtype:
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]
