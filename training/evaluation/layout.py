"""Layout: IoU of the model's predicted masks against the test clip's masks, per denoising step and per
predictor layer (the paper's Tables 9-10), from the sampler's mask traces (<key>.masks.npz).

The trace holds, per sliding window, per step, the masks of every predictor layer and the final
(averaged) masks on the token grid, one per latent frame. The reference for latent frame f is the test
clip's mask of each identity averaged over the video frames f covers (at the same times), resized to
the token grid by area and binarised at 0.5; frames whose mask confidence is under 0.5 are left out, as
in training. Identities are in the same order (training.sample --testset keeps the sample's order).

This measures the layout the model predicts against the layout of the real clip: meaningful when the
generated video keeps the real clip's layout (a reconstruction from its references and audio), as in
the paper's evaluation; a generation free to place people elsewhere scores low without being wrong.
"""
from __future__ import annotations

import cv2
import numpy as np

from training.data import ClipSample
from training.evaluation.common import GeneratedVideo, MetricSettings

CONFIDENT = 0.5


class LayoutMetric:
    def __init__(self):
        self.by_step: list[np.ndarray] = []  # per video [steps] IoU of the final masks
        self.by_step_layer: list[np.ndarray] = []  # per video [steps, layers]

    def score(self, generated: GeneratedVideo, sample: ClipSample) -> dict[str, float]:
        if generated.trace is None or sample.masks is None:
            return {}
        by_step, by_step_layer = trace_iou(generated.trace, sample, len(generated.frames), generated.fps)
        if by_step is None:
            return {}
        self.by_step.append(by_step)
        self.by_step_layer.append(by_step_layer)
        return {"layout_iou": float(by_step[-1])}

    def summary(self) -> dict[str, float]:
        if not self.by_step:
            return {}
        by_step = np.nanmean(np.stack(self.by_step), axis=0)
        return {"layout_iou": float(by_step[-1])}

    def curves(self) -> dict[str, list]:
        """For the report: mean IoU per step (final masks) and per step and layer."""
        if not self.by_step:
            return {}
        return {"iou_by_step": np.nanmean(np.stack(self.by_step), axis=0).tolist(),
                "iou_by_step_and_layer": np.nanmean(np.stack(self.by_step_layer), axis=0).tolist()}


def trace_iou(trace: dict[str, np.ndarray], sample: ClipSample, n_frames: int,
              fps: float) -> tuple[np.ndarray | None, np.ndarray | None]:
    """IoU averaged over windows, identities and confident latent frames: [steps] for the final masks
    and [steps, layers] for each predictor layer."""
    starts = trace["window_starts"]
    windows = range(len(starts))
    total_latent = int(starts[-1] + trace[f"final_masks_{len(starts) - 1}"].shape[2])
    finals, layers = [], []
    for w in windows:
        final, per_layer = trace[f"final_masks_{w}"], trace[f"layer_masks_{w}"]  # [S, N, T, h, w], [S, L, N, T, h, w]
        truth, valid = reference_masks(sample, int(starts[w]), final.shape[2], total_latent, final.shape[3:], n_frames, fps)
        if truth.shape[0] != final.shape[1] or not valid.any():
            continue
        finals.append(_iou(final > 127, truth, valid))
        layers.append(_iou(per_layer > 127, truth, valid))
    if not finals:
        return None, None
    return np.mean(finals, axis=0), np.mean(layers, axis=0)


def reference_masks(sample: ClipSample, first_latent: int, count: int, total_latent: int, grid: tuple[int, int],
                    n_frames: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(bool [N, count, h, w] masks, bool [N, count] confident) of latent frames first..first+count."""
    frames_per_latent = n_frames / total_latent
    truth = np.zeros((len(sample.masks), count, *grid), bool)
    valid = np.zeros((len(sample.masks), count), bool)
    for k in range(count):
        latent = first_latent + k
        times = (np.arange(int(latent * frames_per_latent), max(int((latent + 1) * frames_per_latent), int(latent * frames_per_latent) + 1))) / fps
        clip_frames = np.minimum(np.round(times * sample.fps).astype(int), sample.masks.shape[1] - 1)
        for i in range(len(sample.masks)):
            mean = sample.masks[i, clip_frames].astype(np.float32).mean(axis=0)
            truth[i, k] = cv2.resize(mean, (grid[1], grid[0]), interpolation=cv2.INTER_AREA) > 0.5
            valid[i, k] = sample.conf is None or sample.conf[i, clip_frames].min() >= CONFIDENT
    return truth, valid


def _iou(predicted: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """predicted [..., N, T, h, w] bool against truth [N, T, h, w] over valid [N, T] -> mean IoU [...]."""
    keep = valid[..., None, None]
    intersection = (predicted & truth & keep).sum(axis=(-1, -2, -3))
    union = ((predicted | truth) & keep).sum(axis=(-1, -2, -3))
    return (intersection / np.maximum(union, 1)).mean(axis=-1)


class LayoutSettings(MetricSettings):
    """No keys: the layout needs only the sampler's mask traces."""


def build(settings: LayoutSettings, device: str) -> LayoutMetric:
    return LayoutMetric()
