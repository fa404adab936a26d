"""Training configuration: one YAML file with the sections model, vae, text, audio, data, train, sample.

Every section is a pydantic model. load_config checks the whole file before anything is built: an
unknown key, a value of the wrong type or one outside a key's choices is an error naming the file and
the section.key, so that a typo never silently falls back to a default. `--set section.key=value`
overrides (values parsed as YAML) work on every CLI.
"""
from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from training.activation_checkpointing import CheckpointPolicyName
from training.layers import ATTENTION_BACKENDS

# How the sampler gates audio with masks: "cache" (Algorithm 1: the masks of the previous step),
# "current" (the masks of the same forward pass), "global" (no gating).
GateMode = Literal["cache", "current", "global"]
GATE_MODES: tuple[GateMode, ...] = get_args(GateMode)
ReferenceKind = Literal["face", "body", "clothing"]


class Section(BaseModel):
    """A config section: unknown keys are errors, values are checked (numbers written as strings, such
    as YAML 1.1's 1e-4, are read as numbers) and a made section does not change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Section):
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


class VAEConfig(Section):
    kind: Literal["wan", "patch"] = "wan"  # "wan": Wan2.1 3D causal VAE; "patch": lossless pixel space-to-depth (tests, synthetic)
    checkpoint: str | None = None  # Wan2.1_VAE.pth (or .safetensors) for kind "wan"
    temporal_stride: int = 4
    spatial_stride: int = 8
    wan_base_dim: int = 96  # 96 is the released VAE; smaller only for tests


class TextConfig(Section):
    kind: Literal["umt5", "zero"] = "umt5"  # "umt5": HF UMT5EncoderModel + tokenizer folder; "zero": cached zero embedding
    checkpoint: str | None = None


class AudioConfig(Section):
    encoder: Literal["wav2vec2", "logmel"] = "wav2vec2"  # "wav2vec2" (local HF folder) or "logmel" (no weights; tests, synthetic)
    checkpoint: str | None = None
    n_mels: int = 32  # logmel only
    cache_dir: str | None = None  # per-sample feature cache; None keeps no cache


class DataConfig(Section):
    shards: str = ""  # a glob or brace pattern of .tar shards
    fps: float = 25.0
    resolutions: list[tuple[int, int]] = [(480, 832), (832, 480), (624, 624)]
    frame_counts: list[int] = [81, 49, 33]
    ref_size: tuple[int, int] = (256, 256)
    ref_probs: dict[ReferenceKind, float] = {"face": 0.7, "body": 0.15, "clothing": 0.15}
    batch_size: int = 1
    num_workers: int = 4
    shuffle_buffer: int = 256

    @field_validator("ref_probs")
    @classmethod
    def _probabilities(cls, ref_probs: dict[str, float]) -> dict[str, float]:
        if not all(p >= 0 for p in ref_probs.values()) or not sum(ref_probs.values()):
            raise ValueError(f"must map some of {list(get_args(ReferenceKind))} to non-negative numbers with a positive sum "
                             f"(YAML: {{face: 0.7, body: 0.3}})")
        return ref_probs


class TrainConfig(Section):
    out_dir: str = "runs/train"
    steps: int = 10000
    max_minutes: float | None = None  # also stop (and save) after this much training time
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_clip: float = 1.0
    precision: Literal["bf16", "fp32"] = "bf16"  # "bf16": autocast on GPUs (a CPU trains in fp32)
    grad_checkpointing: bool = True  # see training/activation_checkpointing.py
    checkpoint_blocks: int | None = Field(None, ge=0)  # with grad_checkpointing: only the first this many blocks (null: all)
    checkpoint_policy: CheckpointPolicyName = "block"  # with grad_checkpointing: what a checkpointed block keeps
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

    @field_validator("attention_backend")
    @classmethod
    def _known_backend(cls, name: str) -> str:
        if name != "auto" and name not in ATTENTION_BACKENDS:
            raise ValueError(f"must be auto or one of {sorted(ATTENTION_BACKENDS)}")
        return name

    @field_validator("activation_memory_budget")
    @classmethod
    def _budget_needs_compile(cls, budget: float | None, info: ValidationInfo) -> float | None:
        if budget is not None and not info.data.get("compile"):
            raise ValueError("needs train.compile: true")
        return budget


class SampleConfig(Section):
    steps: int = 50
    cfg_scale: float = 6.5
    shift: float = 5.0
    gate_start_step: int = 10  # mask gating is off before this step
    gate_mode: GateMode = "cache"
    window_frames: int = 21  # latent frames per window
    overlap_frames: int = 5  # latent frames of window w reused as the head of window w+1


class Config(Section):
    model: ModelConfig = ModelConfig()
    vae: VAEConfig = VAEConfig()
    text: TextConfig = TextConfig()
    audio: AudioConfig = AudioConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    sample: SampleConfig = SampleConfig()


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """The checked training config of a YAML file with `section.key=value` overrides."""
    return validated(Config, read_yaml(path, overrides or []), str(path))


def read_yaml(path: str | Path, overrides: list[str]) -> dict[str, Any]:
    """A YAML file as a dict, with `section.key=value` overrides (each value parsed as YAML) applied."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    for item in overrides:
        dotted, _, value = item.partition("=")
        *parents, leaf = dotted.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return raw


class ConfigError(ValueError):
    """A config file that does not check out; the message names the file and every bad key."""


def validated(model_class: type[BaseModel], raw: dict[str, Any], source: str):
    """model_class made from raw, or ConfigError naming source and, per problem, the section.key."""
    try:
        return model_class.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{source}: " + "\n  ".join(_problems(error, model_class))) from None


def _problems(error: ValidationError, model_class: type[BaseModel]) -> list[str]:
    unknown: dict[tuple, list[str]] = {}
    problems = []
    for item in error.errors():
        *parent, name = item["loc"]
        if item["type"] == "extra_forbidden":
            unknown.setdefault(tuple(parent), []).append(_dotted((*parent, name)))
            continue
        got = "" if isinstance(item["input"], dict) else f" (got {reprlib.repr(item['input'])})"  # a section: too long
        problems.append(f"{_dotted(item['loc'])}: {item['msg'].removeprefix('Value error, ')}{got}")
    for parent, names in unknown.items():
        known = ", ".join(_section_class(model_class, parent).model_fields)
        if parent:
            problems.insert(0, f"unknown keys {sorted(names)} (known in {_dotted(parent)}: {known})")
        else:
            problems.insert(0, f"unknown sections {sorted(names)} (known: {known})")
    return problems


def _section_class(model_class: type[BaseModel], path: tuple) -> type[BaseModel]:
    for name in path:
        model_class = model_class.model_fields[name].annotation
    return model_class


def _dotted(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)
