"""quality: technical image quality from classic signal measures; needs no downloaded weights.

Measured on frames sampled at `sample_fps`, each measure is the clip's median over those frames:
- sharpness: variance of the Laplacian of the luma, on frames resized to `analysis_side` so that
  clips of different resolutions are comparable;
- exposure: mean luma (BT.601, 0-255) and the fractions of pixels clipped dark / bright;
- noise: Immerkaer's fast estimate of the standard deviation of additive Gaussian noise
  (J. Immerkaer, "Fast Noise Variance Estimation", CVIU 1996), on native-size luma;
- blockiness: mean luma step across the codec's 8x8 block boundaries divided by the mean step inside
  blocks, on native-size luma (1.0 means no blocking);
- colourfulness: Hasler & Suesstrunk's metric (2003) on the RGB frames.
Each threshold rejects with its own reason; the defaults keep ordinary real footage.
"""
from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from curation.stage import FrameSpec, Item, Params, Resources, Stage

_BLOCK = 8
# Immerkaer's mask: the difference of two Laplacians, which cancels image structure to first order.
_NOISE_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


class QualityParams(Params):
    sample_fps: float = Field(1.0, gt=0, description="frames per second measured")
    analysis_side: int = Field(512, ge=64, description="longer side of the frames sharpness, exposure and colourfulness are measured on")
    min_sharpness: float = Field(15.0, ge=0, description="reject as too_blurry below this variance of the Laplacian")
    min_mean_luma: float = Field(25.0, ge=0, le=255, description="reject as bad_exposure when the mean luma is below this (too dark)")
    max_mean_luma: float = Field(235.0, ge=0, le=255, description="reject as bad_exposure when the mean luma is above this (too bright)")
    clip_dark_luma: int = Field(8, ge=0, le=255, description="luma at or below which a pixel counts as clipped dark")
    clip_bright_luma: int = Field(247, ge=0, le=255, description="luma at or above which a pixel counts as clipped bright")
    max_clipped_fraction: float = Field(0.5, ge=0, le=1, description="reject as bad_exposure when more of the frame than this is clipped dark or bright")
    max_noise_sigma: float = Field(8.0, ge=0, description="reject as too_noisy above this estimated noise standard deviation (luma levels)")
    max_blockiness: float = Field(1.8, ge=1, description="reject as blocky above this boundary/inner luma step ratio")
    min_colourfulness: float = Field(0.0, ge=0, description="reject as low_colourfulness below this Hasler-Suesstrunk score (0 keeps greyscale footage)")


class Quality(Stage):
    name = "quality"
    Params = QualityParams

    def resources(self) -> Resources:
        return Resources(cpus=1, memory_gb=1)

    def frame_specs(self) -> list[FrameSpec]:
        return [self._colour_spec(), self._native_luma_spec()]

    def _colour_spec(self) -> FrameSpec:
        return FrameSpec(fps=self.params.sample_fps, max_side=self.params.analysis_side)

    def _native_luma_spec(self) -> FrameSpec:
        # noise and codec blocking live at the coded resolution; resizing would hide both
        return FrameSpec(fps=self.params.sample_fps, gray=True)

    def process_item(self, item: Item) -> None:
        colour = item.frames[self._colour_spec()].images
        luma_native = item.frames[self._native_luma_spec()].images
        if len(colour) == 0 or len(luma_native) == 0:
            self.reject(item, "no_frames", "no frame was decoded for quality measurement")
            return
        scores = clip_quality(colour, luma_native, self.params.clip_dark_luma, self.params.clip_bright_luma)
        self.record(item, meta={"n_frames": len(colour)}, **scores)
        failure = self._failed_threshold(scores)
        if failure is not None:
            self.reject(item, *failure)

    def _failed_threshold(self, s: dict[str, float]) -> tuple[str, str] | None:
        p = self.params  # exposure first: a dark frame also measures as blurred
        if not p.min_mean_luma <= s["mean_luma"] <= p.max_mean_luma:
            return "bad_exposure", f"mean luma {s['mean_luma']:.1f} outside [{p.min_mean_luma}, {p.max_mean_luma}]"
        clipped = max(s["clipped_dark"], s["clipped_bright"])
        if clipped > p.max_clipped_fraction:
            return "bad_exposure", f"clipped fraction {clipped:.2f} > {p.max_clipped_fraction}"
        if s["sharpness"] < p.min_sharpness:
            return "too_blurry", f"sharpness {s['sharpness']:.1f} < {p.min_sharpness}"
        if s["noise_sigma"] > p.max_noise_sigma:
            return "too_noisy", f"noise sigma {s['noise_sigma']:.1f} > {p.max_noise_sigma}"
        if s["blockiness"] > p.max_blockiness:
            return "blocky", f"blockiness {s['blockiness']:.2f} > {p.max_blockiness}"
        if s["colourfulness"] < p.min_colourfulness:
            return "low_colourfulness", f"colourfulness {s['colourfulness']:.1f} < {p.min_colourfulness}"
        return None


def clip_quality(colour: np.ndarray, luma_native: np.ndarray, dark: int, bright: int) -> dict[str, float]:
    """Median over frames of each measure; colour [T, H, W, 3] RGB, luma_native [T, h, w]."""
    lumas = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in colour]
    per_frame = {
        "sharpness": [laplacian_variance(y) for y in lumas],
        "mean_luma": [float(y.mean()) for y in lumas],
        "clipped_dark": [float((y <= dark).mean()) for y in lumas],
        "clipped_bright": [float((y >= bright).mean()) for y in lumas],
        "colourfulness": [colourfulness(frame) for frame in colour],
        "noise_sigma": [immerkaer_noise_sigma(y) for y in luma_native],
        "blockiness": [blockiness(y) for y in luma_native],
    }
    return {name: float(np.median(values)) for name, values in per_frame.items()}


def laplacian_variance(luma: np.ndarray) -> float:
    return float(cv2.Laplacian(luma, cv2.CV_64F).var())


def immerkaer_noise_sigma(luma: np.ndarray) -> float:
    height, width = luma.shape
    if height < 3 or width < 3:
        return 0.0
    response = cv2.filter2D(luma.astype(np.float32), -1, _NOISE_MASK)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(response).sum() / (6.0 * (width - 2) * (height - 2)))


def blockiness(luma: np.ndarray) -> float:
    """Mean of the horizontal and vertical ratios of the luma step across 8x8 block boundaries to the
    step between neighbours inside blocks."""
    ratios = [r for r in (_boundary_step_ratio(luma), _boundary_step_ratio(luma.T)) if r is not None]
    return float(np.mean(ratios)) if ratios else 1.0


def _boundary_step_ratio(luma: np.ndarray) -> float | None:
    steps = np.abs(np.diff(luma.astype(np.float32), axis=1)).mean(axis=0)  # step between column x and x+1
    if steps.size < 2 * _BLOCK:
        return None
    at_boundary = (np.arange(steps.size) % _BLOCK) == _BLOCK - 1
    inner = steps[~at_boundary].mean()
    return float(steps[at_boundary].mean() / inner) if inner > 0 else 1.0


def colourfulness(rgb: np.ndarray) -> float:
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    rg = r - g
    yb = 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
