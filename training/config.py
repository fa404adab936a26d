"""Training configuration: one YAML file with the sections model, vae, text, audio, data, train, sample.

Every section is a dataclass; unknown keys are errors so that a typo never silently falls back to a
default. `--set section.key=value` overrides (values parsed as YAML) work on every CLI.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class ModelConfig:
    """The DiT (Wan2.1 layout) plus the audio and mask-predictor additions."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    in_dim: int = 16
    out_dim: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    audio_dim: int = 768  # width of one audio feature frame (wav2vec2-base: 768)
    audio_window: int = 5  # each latent frame sees audio of latent frames within +-audio_window
    mask_layers: list[int] | None = None  # blocks with a mask predictor; None: every block
    mask_avg_last: int = 3  # the final mask averages the last this-many predictor layers
    mask_dim: int = 256
    mask_heads: int = 4
    mask_rope: bool = True  # 3D RoPE on the mask predictor's queries and keys (the paper's); false: an ablation
    checkpoint: str | None = None  # Wan2.1 DiT weights (safetensors file or folder), original or diffusers keys

    def mask_layer_ids(self) -> list[int]:
        return list(range(self.num_layers)) if self.mask_layers is None else sorted(self.mask_layers)


@dataclass
class VAEConfig:
    kind: str = "wan"  # "wan": Wan2.1 3D causal VAE; "patch": lossless pixel space-to-depth (tests, synthetic)
    checkpoint: str | None = None  # Wan2.1_VAE.pth (or .safetensors) for kind "wan"
    temporal_stride: int = 4
    spatial_stride: int = 8
    wan_base_dim: int = 96  # 96 is the released VAE; smaller only for tests


@dataclass
class TextConfig:
    kind: str = "umt5"  # "umt5": HF UMT5EncoderModel + tokenizer folder; "zero": cached zero embedding
    checkpoint: str | None = None


@dataclass
class AudioConfig:
    encoder: str = "wav2vec2"  # "wav2vec2" (local HF folder) or "logmel" (no weights; tests, synthetic)
    checkpoint: str | None = None
    n_mels: int = 32  # logmel only
    cache_dir: str | None = None  # per-sample feature cache; None keeps no cache


@dataclass
class DataConfig:
    shards: str = ""  # a glob or brace pattern of .tar shards
    fps: float = 25.0
    resolutions: list[tuple[int, int]] = field(default_factory=lambda: [(480, 832), (832, 480), (624, 624)])
    frame_counts: list[int] = field(default_factory=lambda: [81, 49, 33])
    ref_size: tuple[int, int] = (256, 256)
    ref_probs: dict[str, float] = field(default_factory=lambda: {"face": 0.7, "body": 0.15, "clothing": 0.15})
    batch_size: int = 1
    num_workers: int = 4
    shuffle_buffer: int = 256

    def __post_init__(self):
        kinds = {"face", "body", "clothing"}
        if not self.ref_probs or set(self.ref_probs) - kinds or not all(
                isinstance(p, (int, float)) and p >= 0 for p in self.ref_probs.values()) or not sum(self.ref_probs.values()):
            raise ValueError(f"data.ref_probs must map some of {sorted(kinds)} to non-negative numbers with a positive "
                             f"sum (YAML: {{face: 0.7, body: 0.3}}), got {self.ref_probs!r}")


@dataclass
class TrainConfig:
    out_dir: str = "runs/train"
    steps: int = 10000
    max_minutes: float | None = None  # also stop (and save) after this much training time
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    precision: str = "bf16"  # "bf16" (autocast) or "fp32"
    grad_checkpointing: bool = True
    checkpoint_blocks: int | None = None  # with grad_checkpointing: only the first this many blocks (null: all)
    checkpoint_policy: str = "block"  # with grad_checkpointing: block (recompute all) or a selective policy of training.dit.CHECKPOINT_POLICIES
    compile: bool = False
    activation_memory_budget: float | None = None  # with compile: share of activations torch.compile keeps (it recomputes the cheapest rest)
    attention_backend: str = "auto"  # scaled_dot_product_attention kernel: auto, cudnn, flash, efficient or math
    save_every: int = 1000
    log_every: int = 10
    resume: bool = True  # continue from the newest checkpoint in out_dir when there is one
    seed: int = 0
    shift: float = 5.0  # timestep shift of the flow-matching schedule
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    mask_loss_weight: float = 1.0
    cond_dropout: float = 0.1  # share of samples trained unconditionally (zero text, muted audio) for CFG
    train_base: bool = True  # False freezes the Wan2.1 weights and trains audio + mask modules only


@dataclass
class SampleConfig:
    steps: int = 50
    cfg_scale: float = 6.5
    shift: float = 5.0
    gate_start_step: int = 10  # mask gating is off before this step
    gate_mode: str = "cache"  # "cache" (Algorithm 1), "current" (same-pass masks), "global" (no gating)
    window_frames: int = 21  # latent frames per window
    overlap_frames: int = 5  # latent frames of window w reused as the head of window w+1


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextConfig = field(default_factory=TextConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


def _build(cls, values: dict[str, Any]):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown keys for {cls.__name__}: {sorted(unknown)}")
    kwargs = {}
    for name, value in values.items():
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            value = _build(type(default), value or {})
        elif isinstance(default, tuple):
            value = tuple(value)
        elif isinstance(value, str) and "float" in str(known[name].type):
            value = float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        kwargs[name] = value
    return cls(**kwargs)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings (value parsed as YAML) to a raw config dict."""
    for item in overrides:
        path, _, value = item.partition("=")
        *parents, leaf = path.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    return config_from_dict(apply_overrides(raw, overrides or []))


def config_from_dict(raw: dict[str, Any]) -> Config:
    return _build(Config, raw)


def config_to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)
