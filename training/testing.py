"""Small CPU setups shared by the unit tests and the CPU smoke runs of the benches.

The model keeps configs/model_tiny.yaml's architecture; only the clip and reference sizes shrink (32x64
video, 16x16 references) so a forward pass costs milliseconds on two cores.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.config import Config, load_config
from training.synthetic import SyntheticSpec, write_corpus

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO_ROOT / "configs" / "model_tiny.yaml"

MICRO_DATA = [
    "data.resolutions=[[32, 64]]",
    "data.frame_counts=[8]",
    "data.ref_size=[16, 16]",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.shuffle_buffer=1",
    "train.precision=fp32",
    "train.warmup_steps=1",
    "train.log_every=1",
    "sample.steps=3",
    "sample.gate_start_step=1",
    "sample.window_frames=2",
    "sample.overlap_frames=1",
]


def micro_config(shards: str = "", out_dir: str | Path = "runs/micro", extra: list[str] | None = None) -> Config:
    overrides = [*MICRO_DATA, f"data.shards='{shards}'", f"train.out_dir='{out_dir}'", *(extra or [])]
    return load_config(TINY_CONFIG, overrides)


def write_micro_corpus(out_dir: str | Path, clips: int = 3, frames: int = 24, seed: int = 0) -> str:
    """A few short synthetic clips; returns the shard glob."""
    write_corpus(out_dir, clips, seed, SyntheticSpec(frames=frames), clips_per_shard=2)
    return str(Path(out_dir) / "shards" / "shard-*.tar")


@pytest.fixture(autouse=True, scope="module")
def single_torch_thread():
    """One intra-op thread for a test module: on a small, shared CPU, OpenMP threads spin-waiting for
    each other make tiny models 10-50x slower than one thread. Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
