"""visual_quality: image quality and aesthetics of generated videos, through the curation stages' scorers.

On `frames` frames spread evenly over each generated video:
- always (no weights): the quality stage's measures (stages/quality.py clip_quality, medians over the
  frames): sharpness, mean_luma, clipped_dark, clipped_bright and colourfulness on frames whose longer
  side is brought down to `analysis_side` (as the stage's colour frames are), noise_sigma and blockiness
  on native-size luma. Luma is BT.601 from the decoded RGB frames, where the stage reads the codec's
  luma plane, so values are comparable between videos scored here, close to but not equal to the
  curation index's;
- laion_aesthetic, when `clip_path` and `aesthetic_head_path` are set: the aesthetics stage's LAION
  predictor (CLIP ViT-L/14 + MLP head, about 1-10), mean over the frames;
- qalign_aesthetic and qalign_quality, when `qalign_path` is set: Q-Align's aesthetic and quality
  scores (1-5), mean over the frames, the AES and IQA that InterActHuman reports.
A scorer whose paths are not set is skipped; `skipped` maps each one to the reason, for the report.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image

from stages.models.aesthetic_head import LaionAestheticScorer, QAlignAestheticScorer
from stages.quality import QualityParams, clip_quality
from training.data import ClipSample
from training.evaluation.common import (GeneratedVideo, MeanOfScores, MetricSettings, MetricUnavailable, require_path,
                                        sample_frame_indices)

METRIC = "visual_quality"
_STAGE_DEFAULTS = QualityParams()


class QualitySettings(MetricSettings):
    """The section's model paths (each optional, see the module's docstring) and tunables."""

    clip_path: str | None = None
    aesthetic_head_path: str | None = None
    qalign_path: str | None = None
    frames: int = 8  # frames scored per video, spread evenly over it
    analysis_side: int = _STAGE_DEFAULTS.analysis_side
    clip_dark_luma: int = _STAGE_DEFAULTS.clip_dark_luma
    clip_bright_luma: int = _STAGE_DEFAULTS.clip_bright_luma


class QAlignScores:
    """Q-Align's aesthetic and quality scores of frames, from the aesthetics stage's loaded checkpoint."""

    def __init__(self, folder: str, device: str):
        self.aesthetic = QAlignAestheticScorer(folder, device)

    @torch.no_grad()
    def __call__(self, frames: list[np.ndarray]) -> dict[str, float]:
        images = [Image.fromarray(frame) for frame in frames]
        quality = self.aesthetic.model.score(images, task_="quality", input_="image")
        return {"qalign_aesthetic": float(self.aesthetic(frames).mean()),
                "qalign_quality": float(torch.as_tensor(quality).float().mean())}


class VisualQualityMetric:
    """Per-video quality measures and model scores; the summary is each one's mean over the videos."""

    def __init__(self, settings: QualitySettings, laion: LaionAestheticScorer | None, qalign: QAlignScores | None,
                 skipped: dict[str, str]):
        self.settings = settings
        self.laion = laion
        self.qalign = qalign
        self.skipped = skipped
        self.means = MeanOfScores()

    def score(self, generated: GeneratedVideo, sample: ClipSample) -> dict[str, float]:
        return self.means.add(self.measure(generated.frames))

    def summary(self) -> dict[str, float]:
        return self.means.means()

    def measure(self, frames: np.ndarray) -> dict[str, float]:
        """The values of one video, frames uint8 [T, H, W, 3] RGB."""
        chosen = frames[sample_frame_indices(len(frames), self.settings.frames)]
        colour = np.stack([fit_longer_side(frame, self.settings.analysis_side) for frame in chosen])
        luma_native = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in chosen])
        scores = clip_quality(colour, luma_native, self.settings.clip_dark_luma, self.settings.clip_bright_luma)
        if self.laion is not None:
            scores["laion_aesthetic"] = float(self.laion(list(chosen)).mean())
        if self.qalign is not None:
            scores.update(self.qalign(list(chosen)))
        return scores


def fit_longer_side(frame: np.ndarray, max_side: int) -> np.ndarray:
    """The frame shrunk (area interpolation) so that its longer side is at most max_side, as the frame
    decoder serves a FrameSpec(max_side=...)."""
    height, width = frame.shape[:2]
    if max(height, width) <= max_side:
        return frame
    scale = max_side / max(height, width)
    size = (max(2, round(width * scale)), max(2, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def build(settings: QualitySettings, device: str) -> VisualQualityMetric:
    """The metric from its settings; always available, its model scores only where configured."""
    skipped: dict[str, str] = {}
    laion = qalign = None
    try:
        laion = LaionAestheticScorer(require_path(settings, "clip_path", METRIC),
                                     require_path(settings, "aesthetic_head_path", METRIC), device)
    except MetricUnavailable as reason:
        skipped["laion_aesthetic"] = str(reason)
    try:
        qalign = QAlignScores(require_path(settings, "qalign_path", METRIC), device)
    except MetricUnavailable as reason:
        skipped["qalign"] = str(reason)
    return VisualQualityMetric(settings, laion, qalign, skipped)
