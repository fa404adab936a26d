"""From per-frame measurements to a source's segments: shots, and the spans between them that belong
to no clip (blank frames, fades, dissolves, title cards).

Inputs, one value per decoded frame:
- picture statistics inside the picture area (letterbox and pillarbox bars excluded): luma std and
  the share of flat and of high-contrast ("ink") pixels; a frame with no picture content is blank
  (black, white, a flat colour) whatever its brightness, and a dim frame with content is not;
- transition scores: the cut probability and the gradual-transition probability of TransNetV2, and
  the cuts PySceneDetect reports, when those detectors ran.

Rules (paper E.1: "identify and trim shot transitions and fades"):
- blank frames and title cards (a flat ground with sharp text) are their own segments;
- a fade is the run next to a blank run over which the picture's contrast falls (or rises) frame by
  frame; a gradual transition TransNetV2 marks over several frames is a dissolve (or joins a fade);
- a cut splits content wherever a detector places one; shots are the content runs between all of
  these, however short (the clips stage rejects short ones, with a reason, rather than merging them).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONTENT, BLANK, TITLE_CARD, FADE, DISSOLVE = "shot", "blank", "title_card", "fade", "dissolve"


@dataclass(frozen=True)
class SegmentRules:
    blank_std: float  # picture luma std below this: no content
    card_flat_fraction: float  # at least this share of flat pixels ...
    card_ink_fraction: float  # ... and at least this share of sharp-contrast pixels: a title card
    fade_step: float  # a fade's contrast changes by at least this fraction per frame
    cut_threshold: float  # TransNetV2 cut probability
    gradual_threshold: float  # TransNetV2 gradual-transition probability
    min_gradual_frames: int  # shorter gradual runs are cuts, not dissolves
    min_cut_gap_frames: int  # cuts closer than this to a stronger one are the same cut


@dataclass(frozen=True)
class FrameStats:
    """Per-frame picture statistics [T] each."""

    std: np.ndarray
    flat: np.ndarray
    ink: np.ndarray


@dataclass(frozen=True)
class Segment:
    first: int
    end: int
    kind: str


def segment_frames(stats: FrameStats, rules: SegmentRules, cut_probability: np.ndarray | None = None,
                   gradual_probability: np.ndarray | None = None, detector_cuts: list[int] = ()) -> list[Segment]:
    """The source's segments in order, covering every frame once."""
    labels = _picture_labels(stats, rules)
    _mark_fades(labels, stats.std, rules.fade_step)
    if gradual_probability is not None:
        _mark_gradual(labels, gradual_probability, rules)
    cuts = set(detector_cuts)
    if cut_probability is not None:
        cuts |= set(peak_frames(cut_probability, rules.cut_threshold, rules.min_cut_gap_frames))
    return _runs(labels, _away_from_transitions(cuts, labels, rules.min_cut_gap_frames))


def _away_from_transitions(cuts: set[int], labels: np.ndarray, min_gap: int) -> set[int]:
    """The cuts not within min_gap frames of a blank, fade, dissolve or card: a histogram detector
    fires where a fade ends, which is already a boundary, not a new shot."""
    outside = labels != CONTENT
    return {frame for frame in cuts
            if not outside[max(frame - min_gap, 0):min(frame + min_gap, len(labels))].any()}


def _picture_labels(stats: FrameStats, rules: SegmentRules) -> np.ndarray:
    labels = np.full(len(stats.std), CONTENT, dtype=object)
    card = (stats.flat >= rules.card_flat_fraction) & (stats.ink >= rules.card_ink_fraction)
    labels[card] = TITLE_CARD
    labels[stats.std < rules.blank_std] = BLANK
    return labels


def _mark_fades(labels: np.ndarray, std: np.ndarray, step: float) -> None:
    """Grow each blank run outwards over the frames whose contrast keeps rising away from it."""
    for first, end in _label_runs(labels, BLANK):
        i = first
        while i > 0 and labels[i - 1] == CONTENT and std[i - 1] * (1 - step) > std[i]:
            i -= 1
            labels[i] = FADE
        j = end
        while j < len(labels) and labels[j] == CONTENT and std[j] * (1 - step) > std[j - 1]:
            labels[j] = FADE
            j += 1


def _mark_gradual(labels: np.ndarray, probability: np.ndarray, rules: SegmentRules) -> None:
    """A run of gradual-transition frames becomes a dissolve, or part of the fade it touches."""
    gradual = probability >= rules.gradual_threshold
    for first, end in _true_runs(gradual):
        if end - first < rules.min_gradual_frames:
            continue
        touches_fade = any(labels[max(first - 1, 0):min(end + 1, len(labels))] != CONTENT)
        content = labels[first:end] == CONTENT
        labels[first:end][content] = FADE if touches_fade else DISSOLVE


def peak_frames(probability: np.ndarray, threshold: float, min_gap: int) -> list[int]:
    """Frames where a cut starts: local maxima at or above the threshold, the strongest first, no two
    closer than min_gap. TransNetV2 scores the last frame before a cut; the new shot starts after it."""
    order = np.argsort(-probability)
    chosen: list[int] = []
    for frame in order:
        if probability[frame] < threshold:
            break
        if all(abs(frame - other) >= min_gap for other in chosen):
            chosen.append(int(frame))
    return sorted(frame + 1 for frame in chosen)


def _runs(labels: np.ndarray, cuts: set[int]) -> list[Segment]:
    segments: list[Segment] = []
    first = 0
    for frame in range(1, len(labels) + 1):
        if frame == len(labels) or labels[frame] != labels[first] or (labels[frame] == CONTENT and frame in cuts):
            segments.append(Segment(first, frame, str(labels[first])))
            first = frame
    return segments


def _label_runs(labels: np.ndarray, label: str) -> list[tuple[int, int]]:
    return _true_runs(labels == label)


def _true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[first, end) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))
