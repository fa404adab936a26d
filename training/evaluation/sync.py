"""Lip sync: the paper's Sync-C / Sync-D, and a per-identity score that works with several speakers.

Everything runs on a 25 fps timeline (SyncNet and Light-ASD both take 25 fps faces and 16 kHz audio).

Faces per identity: YuNet face tracks, each assigned to the identity whose test-set mask holds the
face's centre on most frames (Hungarian; without masks, tracks left to right, the masks stage's order
of identities). An identity without a face track falls back to the head box of its mask (the top
square of the mask's bounding box), so figures no face detector knows (the synthetic corpus) are
still scored.

Sync-C / Sync-D (paper, Table 1): SyncNet over each identity's face track and the video's mixed
audio, syncnet_python's formulas (stages/models/syncnet.py), averaged over identities.

Per-identity sync (beyond the paper, whose appendix calls multi-speaker lip-sync evaluation open):
a pluggable audio-visual scorer gives a per-frame score of a face against an audio track: Light-ASD's
speaking logit, or SyncNet's zero-offset confidence (median distance over offsets minus the
zero-offset distance, averaged over the 5-frame windows covering the frame).
- speaker: each identity's face scored against its own audio track, on the frames where it speaks;
- listener: each identity's face scored against the mixed audio, on the frames where someone else
  speaks and it does not (a listener whose mouth follows another's speech scores high);
- margin = speaker - listener (higher is better).
Plain sync over the mixed audio ("mixed_audio_sync", each face against the mix on all frames) is
reported beside it: it cannot tell which face the audio was meant for.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment

from stages.models.audio_features import SAMPLES_PER_FRAME, VIDEO_FPS, track_mfcc
from stages.models.face_tracking import crop_track, gray_centre_112, track_faces
from stages.models.light_asd import load_light_asd, score_track
from stages.models.syncnet import DEFAULT_VSHIFT, FRAMES_PER_WINDOW, distance_table, embed_track, load_syncnet, sync_score
from stages.models.yunet import YuNetOnnx
from training.data import ClipSample, identity_audio, speaking_samples
from training.evaluation.common import GeneratedVideo, MeanOfScores, MetricSettings, require_path


class SyncSettings(MetricSettings):
    syncnet_path: str | None = None
    face_detector_path: str | None = None


class IdentitySyncSettings(MetricSettings):
    scorer: Literal["light_asd", "syncnet"] = "light_asd"  # each needs its own path below
    light_asd_path: str | None = None
    syncnet_path: str | None = None
    face_detector_path: str | None = None

FACE_SCORE = 0.6
TRACK_IOU, TRACK_MAX_GAP, TRACK_MIN_FRAMES = 0.3, 10, 10  # the faces stage's defaults


class FrameScorer(Protocol):
    def frame_scores(self, crops: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """crops uint8 [T, 224, 224, 3] of one face on consecutive 25 fps frames, samples int16 16 kHz
        audio starting at the first of them -> per-frame score float [T] (NaN where none)."""


class LightAsdScorer:
    def __init__(self, path: str, device: str = "cpu"):
        self.model = load_light_asd(path, device)

    def frame_scores(self, crops: np.ndarray, samples: np.ndarray) -> np.ndarray:
        gray = np.stack([gray_centre_112(crop) for crop in crops])
        scores = np.full(len(crops), np.nan, np.float32)
        logits = score_track(self.model, track_mfcc(samples, 0, len(crops)), gray)
        scores[: len(logits)] = logits
        return scores


class SyncNetScorer:
    def __init__(self, path: str, device: str = "cpu", vshift: int = DEFAULT_VSHIFT):
        self.model, self.vshift = load_syncnet(path, device), vshift

    def distances(self, crops: np.ndarray, samples: np.ndarray) -> np.ndarray:
        lips, sounds = embed_track(self.model, crops, track_mfcc(samples, 0, len(crops)))
        return distance_table(lips, sounds, self.vshift)

    def frame_scores(self, crops: np.ndarray, samples: np.ndarray) -> np.ndarray:
        table = self.distances(crops, samples)
        window_conf = np.median(table, axis=1) - table[:, self.vshift]
        total, count = np.zeros(len(crops)), np.zeros(len(crops))
        for start, conf in enumerate(window_conf):
            total[start : start + FRAMES_PER_WINDOW] += conf
            count[start : start + FRAMES_PER_WINDOW] += 1
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass
class Timeline:
    """A video and its audio tracks on the 25 fps timeline."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    tracks: np.ndarray  # float32 [N, S] each identity's own audio, 16 kHz
    speaking: np.ndarray  # bool [N, T]
    masks: np.ndarray | None  # uint8 [N, T, h, w] the test clip's identity masks, when it has them

    @property
    def mix(self) -> np.ndarray:
        return np.clip(self.tracks.sum(axis=0), -1, 1)


def at_25fps(count: int, fps: float, duration_s: float) -> np.ndarray:
    """Indices into `count` frames at `fps` of each frame of a 25 fps timeline of duration_s."""
    return np.minimum(np.floor(np.arange(int(duration_s * VIDEO_FPS)) * fps / VIDEO_FPS + 1e-6).astype(int), count - 1)


def timeline_of(generated: GeneratedVideo, sample: ClipSample, order: list[int] | None = None) -> Timeline:
    """The generated video with the test clip's per-identity audio (identity i gets track order[i],
    its own by default: a different order builds a wrong assignment to compare against)."""
    duration = len(generated.frames) / generated.fps
    samples = int(round(duration * 16000))
    order = list(range(sample.num_identities)) if order is None else order
    tracks = np.stack([_fit(identity_audio(sample, j), samples) for j in order])
    speaking_audio = np.stack([_fit(speaking_samples(sample, j, len(sample.audio)).astype(np.float32), samples) > 0.5
                               for j in order])
    frame_starts = np.arange(int(duration * VIDEO_FPS)) * SAMPLES_PER_FRAME
    speaking = speaking_audio[:, np.minimum(frame_starts + SAMPLES_PER_FRAME // 2, samples - 1)]
    masks = None
    if sample.masks is not None:
        masks = sample.masks[:, at_25fps(sample.masks.shape[1], sample.fps, duration)]
    return Timeline(generated.frames[at_25fps(len(generated.frames), generated.fps, duration)], tracks, speaking, masks)


def _fit(values: np.ndarray, length: int) -> np.ndarray:
    return np.pad(values[:length], (0, max(0, length - len(values))))


def int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1, 1) * 32767).astype(np.int16)


class FaceLocator:
    """Face boxes per identity; one instance per detector file (face_locator), remembering the last
    video's boxes, so Sync-C/D and the per-identity score detect each video's faces once."""

    def __init__(self, detector_path: str):
        self.detector = YuNetOnnx(detector_path, FACE_SCORE, 0.3)
        self.last: tuple[str, np.ndarray] | None = None

    def boxes(self, key: str, timeline: Timeline) -> np.ndarray:
        """[N, T, 4] face box of each identity per frame of video `key` (x1 y1 x2 y2, frame pixels; NaN: none)."""
        if self.last is None or self.last[0] != key:
            self.last = (key, self._locate(timeline))
        return self.last[1]

    def _locate(self, timeline: Timeline) -> np.ndarray:
        n_ids, n_frames = timeline.speaking.shape
        found = [d for start in range(0, n_frames, 16) for d in self.detector.detect(timeline.frames[start : start + 16])]
        tracks = track_faces([d.boxes for d in found], [d.scores for d in found], TRACK_IOU, TRACK_MAX_GAP, TRACK_MIN_FRAMES)
        boxes = np.full((n_ids, n_frames, 4), np.nan, np.float32)
        for identity, track in assign_tracks(tracks, timeline.masks, n_ids, timeline.frames.shape[1:3]).items():
            boxes[identity, track.frames] = track.boxes
        if timeline.masks is not None:
            heads = head_boxes(timeline.masks, timeline.frames.shape[1:3])
            boxes = np.where(np.isnan(boxes), heads, boxes)
        return boxes


@lru_cache(maxsize=None)
def face_locator(detector_path: str) -> FaceLocator:
    return FaceLocator(detector_path)


def assign_tracks(tracks: list, masks: np.ndarray | None, n_ids: int, frame_size: tuple[int, int]) -> dict:
    """identity -> face track: by the masks holding the face centres, else left to right."""
    if not tracks:
        return {}
    if masks is None:
        longest = sorted(tracks, key=lambda t: -len(t.frames))[:n_ids]
        return dict(enumerate(sorted(longest, key=lambda t: float(np.mean(t.boxes[:, 0] + t.boxes[:, 2])))))
    height, width = frame_size
    inside = np.zeros((n_ids, len(tracks)))
    for k, track in enumerate(tracks):
        x = ((track.boxes[:, 0] + track.boxes[:, 2]) / 2 * masks.shape[3] / width).astype(int).clip(0, masks.shape[3] - 1)
        y = ((track.boxes[:, 1] + track.boxes[:, 3]) / 2 * masks.shape[2] / height).astype(int).clip(0, masks.shape[2] - 1)
        inside[:, k] = masks[:, track.frames, y, x].astype(bool).sum(axis=1)
    rows, cols = linear_sum_assignment(-inside)
    return {int(i): tracks[k] for i, k in zip(rows, cols) if inside[i, k] > 0}


def head_boxes(masks: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """[N, T, 4] the top square of each mask's bounding box, frame pixels (NaN where the mask is empty)."""
    n_ids, n_frames, mh, mw = masks.shape
    sy, sx = frame_size[0] / mh, frame_size[1] / mw
    boxes = np.full((n_ids, n_frames, 4), np.nan, np.float32)
    for i in range(n_ids):
        for t in range(n_frames):
            ys, xs = np.nonzero(masks[i, t])
            if len(ys):
                x1, x2, y1 = xs.min() * sx, (xs.max() + 1) * sx, ys.min() * sy
                boxes[i, t] = [x1, y1, x2, y1 + (x2 - x1)]
    return boxes


def face_runs(boxes: np.ndarray) -> list[slice]:
    """Runs of consecutive frames with a box, [T, 4] -> slices."""
    present = np.isfinite(boxes[:, 0]).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], present, [0]])))
    return [slice(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def scores_over(scorer: FrameScorer, frames: np.ndarray, boxes: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Per-frame score [T] of one identity's face against audio samples (float, 16 kHz, from frame 0);
    NaN where it has no face or the run is too short to score."""
    scores = np.full(len(frames), np.nan, np.float32)
    for run in face_runs(boxes):
        if run.stop - run.start < FRAMES_PER_WINDOW + 1:
            continue
        crops = crop_track(frames[run], boxes[run])
        audio = int16(samples[run.start * SAMPLES_PER_FRAME :])
        scores[run] = scorer.frame_scores(crops, audio)
    return scores


def identity_sync(scorer: FrameScorer, timeline: Timeline, boxes: np.ndarray) -> dict[str, float]:
    """speaker / listener / margin (module docstring) and the plain mixed-audio score."""
    speaker, listener, mixed = [], [], []
    mix = timeline.mix
    for i in range(len(boxes)):
        own = scores_over(scorer, timeline.frames, boxes[i], timeline.tracks[i])
        with_mix = scores_over(scorer, timeline.frames, boxes[i], mix)
        others = np.delete(timeline.speaking, i, axis=0).any(axis=0)
        speaker.append(own[timeline.speaking[i]])
        listener.append(with_mix[others & ~timeline.speaking[i]])
        mixed.append(with_mix)
    values = {"identity_sync_speaker": _nanmean(speaker), "identity_sync_listener": _nanmean(listener),
              "mixed_audio_sync": _nanmean(mixed)}
    values["identity_sync_margin"] = values["identity_sync_speaker"] - values["identity_sync_listener"]
    return values


def _nanmean(parts: list[np.ndarray]) -> float:
    values = np.concatenate(parts) if parts else np.zeros(0)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


class SyncMetric:
    """Sync-C / Sync-D (SyncNet, each identity's face against the mixed audio)."""

    def __init__(self, scorer: SyncNetScorer, faces: FaceLocator):
        self.scorer, self.faces, self.means = scorer, faces, MeanOfScores()

    def score(self, generated: GeneratedVideo, sample: ClipSample) -> dict[str, float]:
        timeline = timeline_of(generated, sample)
        boxes = self.faces.boxes(generated.key, timeline)
        tables = [self.scorer.distances(crop_track(timeline.frames[run], boxes[i][run]),
                                        int16(timeline.mix[run.start * SAMPLES_PER_FRAME :]))
                  for i in range(len(boxes)) for run in face_runs(boxes[i]) if run.stop - run.start > FRAMES_PER_WINDOW]
        scores = [s for s in (sync_score(t) for t in tables) if s is not None]
        return self.means.add({"sync_c": float(np.mean([s.sync_c for s in scores])) if scores else float("nan"),
                               "sync_d": float(np.mean([s.sync_d for s in scores])) if scores else float("nan")})

    def summary(self) -> dict[str, float]:
        return self.means.means()


class IdentitySyncMetric:
    def __init__(self, scorer: FrameScorer, faces: FaceLocator):
        self.scorer, self.faces, self.means = scorer, faces, MeanOfScores()

    def score(self, generated: GeneratedVideo, sample: ClipSample) -> dict[str, float]:
        if sample.audio is None or sample.num_identities == 0:
            return {}
        timeline = timeline_of(generated, sample)
        return self.means.add(identity_sync(self.scorer, timeline, self.faces.boxes(generated.key, timeline)))

    def summary(self) -> dict[str, float]:
        return self.means.means()


def build_sync(settings: SyncSettings, device: str) -> SyncMetric:
    path = require_path(settings, "syncnet_path", "sync")
    return SyncMetric(SyncNetScorer(path, device), face_locator(require_path(settings, "face_detector_path", "sync")))


def build_identity_sync(settings: IdentitySyncSettings, device: str) -> IdentitySyncMetric:
    if settings.scorer == "light_asd":
        scorer: FrameScorer = LightAsdScorer(require_path(settings, "light_asd_path", "identity_sync"), device)
    else:
        scorer = SyncNetScorer(require_path(settings, "syncnet_path", "identity_sync"), device)
    return IdentitySyncMetric(scorer, face_locator(require_path(settings, "face_detector_path", "identity_sync")))
