"""What every metric of the evaluator sees, and how it says it cannot run.

A metric's section of the evaluation config (configs/eval.yaml) is a MetricSettings model, checked when
the config is loaded. The metric is built from it by a function `build(settings, device: str) -> Metric`,
which raises MetricUnavailable naming the parameter to set when its model is not configured or not
found: the report then lists the metric as skipped with that reason, never as zero. A built metric
scores one generated video at a time against its test sample (`score`, returning per-video values) and
ends with corpus-level values (`summary`), e.g. means of the per-video values or a distribution
distance such as FVD.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from training.config import Section
from training.data import ClipSample


class MetricUnavailable(Exception):
    """The metric cannot run here; the message is the reason the report shows."""


@dataclass
class GeneratedVideo:
    """One generated video, decoded: the sampler's <key>.mp4 (and its mask trace when present)."""

    key: str
    frames: np.ndarray  # uint8 [T, H, W, 3] RGB
    fps: float
    audio: np.ndarray | None  # float32 [S] at 16 kHz, the track muxed into the mp4
    trace: dict[str, np.ndarray] | None  # the sampler's <key>.masks.npz arrays, if written


class Metric(Protocol):
    def score(self, generated: GeneratedVideo, sample: ClipSample) -> dict[str, float]:
        """Per-video values (NaN where a value does not apply to this video, e.g. no face found)."""

    def summary(self) -> dict[str, float]:
        """Corpus-level values after every video was scored."""


class MetricSettings(Section):
    """A metric's config section: its model paths (keys ending in _path; null: not configured) and
    tunables; unknown keys, wrong types and values out of range are errors, as in training configs."""

    def with_paths_under(self, folder: Path) -> MetricSettings:
        """These settings with relative model paths taken as relative to `folder`."""
        relative = {key: str((folder / value).resolve()) for key, value in self if key.endswith("_path")
                    and isinstance(value, str) and not Path(value).is_absolute()}
        return self.model_copy(update=relative)


def require_path(settings: MetricSettings, key: str, metric: str) -> str:
    """The configured local path `key` of a metric's settings, or MetricUnavailable naming it."""
    value = getattr(settings, key)
    if not value:
        raise MetricUnavailable(f"{metric}: set {key} (a local model path) in the evaluation config")
    if not Path(value).exists():
        raise MetricUnavailable(f"{metric}: {key}={value!r} does not exist")
    return str(value)


def sample_frame_indices(n_frames: int, count: int) -> np.ndarray:
    """`count` frame indices spread evenly over a video (all frames when it is shorter)."""
    if n_frames <= count:
        return np.arange(n_frames)
    return np.round(np.linspace(0, n_frames - 1, count)).astype(np.int64)


class MeanOfScores:
    """Keeps per-video values and summarises each key by its mean over the videos that have it."""

    def __init__(self):
        self.values: dict[str, list[float]] = {}

    def add(self, scores: dict[str, float]) -> dict[str, float]:
        for name, value in scores.items():
            if value == value:  # NaN: not applicable to this video
                self.values.setdefault(name, []).append(float(value))
        return scores

    def means(self) -> dict[str, float]:
        return {name: float(np.mean(values)) for name, values in self.values.items()}
