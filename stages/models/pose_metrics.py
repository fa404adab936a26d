"""Measures of a person from COCO-17 keypoints: human size (framing) and motion amplitude.

Keypoints are [..., 17, 3] arrays of (x, y, score) in COCO order: 0 nose, 1-2 eyes, 3-4 ears,
5-6 shoulders, 7-8 elbows, 9-10 wrists, 11-12 hips, 13-14 knees, 15-16 ankles.
"""
from __future__ import annotations

import numpy as np

LEFT_SHOULDER, RIGHT_SHOULDER = 5, 6

# framings, tightest first; the index is the size's rank
HUMAN_SIZES = ("portrait", "chest", "waist", "knees", "full_body")
# the keypoint pair whose visibility (either side) proves each size, from the widest framing down
_SIZE_EVIDENCE = ((4, (15, 16)), (3, (13, 14)), (2, (11, 12)), (1, (7, 8)))

# upper bounds of the motion amplitude classes; above the last is "extreme"
AMPLITUDE_CLASSES = ((0.1, "slight"), (0.2, "moderate"), (0.3, "significant"))


def human_size_ranks(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Per-pose size rank (index into HUMAN_SIZES) from keypoint scores [..., 17]: an ankle visible
    -> full body; else a knee -> knees; else a hip -> waist; else an elbow -> chest; else portrait
    (only head and shoulders)."""
    ranks = np.zeros(scores.shape[:-1], dtype=np.int64)
    for rank, joints in reversed(_SIZE_EVIDENCE):
        visible = scores[..., list(joints)].max(axis=-1) >= threshold
        ranks = np.where(visible, rank, ranks)
    return ranks


def track_human_size(scores: np.ndarray, threshold: float) -> str:
    """Size of one person from its poses' keypoint scores [T, 17]: the (lower) median of the
    per-pose ranks, so that a few poses with a missed or hallucinated joint do not decide it."""
    ranks = np.sort(human_size_ranks(scores, threshold))
    return HUMAN_SIZES[int(ranks[(len(ranks) - 1) // 2])]


def motion_amplitude(keypoints: np.ndarray, threshold: float) -> float | None:
    """Largest displacement of the chest point (midpoint of the shoulders) from its median position,
    over the poses [T, 17, 3] where both shoulders are visible, relative to the shoulder width.

    The median position (not the first) is the reference so that one early outlier pose does not
    inflate every displacement. The shoulder width is the 90th percentile over the poses, the
    nearly frontal ones, so that turning sideways does not inflate the ratio. None when fewer than
    two poses show both shoulders.
    """
    shoulders = keypoints[:, [LEFT_SHOULDER, RIGHT_SHOULDER]]
    both_visible = (shoulders[..., 2] >= threshold).all(axis=1) & np.isfinite(shoulders[..., :2]).all(axis=(1, 2))
    if both_visible.sum() < 2:
        return None
    points = shoulders[both_visible, :, :2].astype(np.float64)
    width = np.percentile(np.linalg.norm(points[:, 0] - points[:, 1], axis=1), 90)
    if width <= 0:
        return None
    chest = points.mean(axis=1)
    return float(np.linalg.norm(chest - np.median(chest, axis=0), axis=1).max() / width)


def amplitude_class(amplitude: float | None) -> str | None:
    """slight < 0.1 <= moderate < 0.2 <= significant < 0.3 <= extreme."""
    if amplitude is None:
        return None
    for upper, name in AMPLITUDE_CLASSES:
        if amplitude < upper:
            return name
    return "extreme"
