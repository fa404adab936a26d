"""Face tracks from per-frame detections, and the face crops the speaker models read.

Tracking follows the idea of syncnet_python's / TalkNet's / Light-ASD's `track_shot` (link a detection
to a track when its IoU with the track's last detection is high enough, bridge short gaps, drop short
tracks, fill the gaps by linear interpolation) but assigns all tracks at once, greedily by highest IoU
and one-to-one, instead of growing one track at a time: a face can then no longer be taken by the
wrong track because that track happened to be built first.

The crop is Light-ASD's `crop_video` (Columbia_test.py): centre and half size median-filtered over the
track, a window 2.8 half-sizes wide and tall around the face with a margin for the chin, padded with
grey 110 outside the frame, resized to 224.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.signal import medfilt

from stages.models.boxes import box_iou

PAD_VALUE = 110  # Light-ASD pads the frame with this grey before cropping
MEDIAN_KERNEL = 13  # frames; Light-ASD's smoothing of the crop centre and size


@dataclass
class FaceTrack:
    """One face over consecutive frames: frames [T] int, boxes [T, 4] x1 y1 x2 y2 (interpolated where
    the face was not detected), scores [T] detection score (NaN where interpolated)."""

    frames: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    @property
    def mean_score(self) -> float:
        return float(np.nanmean(self.scores))


@dataclass
class _OpenTrack:
    frames: list[int]
    boxes: list[np.ndarray]
    scores: list[float]


def track_faces(boxes_per_frame: list[np.ndarray], scores_per_frame: list[np.ndarray],
                iou_threshold: float, max_gap: int, min_detections: int) -> list[FaceTrack]:
    """Link per-frame detections (frame f: boxes [N, 4], scores [N]) into tracks.

    A detection joins the open track whose last detection overlaps it most (IoU > iou_threshold),
    each track taking at most one detection per frame; a track closes after more than max_gap frames
    without one. Tracks with fewer than min_detections detections are dropped; the rest have their
    gaps filled by linear interpolation. Tracks are returned by first frame, then left to right.
    """
    open_tracks: list[_OpenTrack] = []
    closed: list[_OpenTrack] = []
    for frame, (boxes, scores) in enumerate(zip(boxes_per_frame, scores_per_frame)):
        still_open = [track for track in open_tracks if frame - track.frames[-1] <= max_gap + 1]
        closed += [track for track in open_tracks if frame - track.frames[-1] > max_gap + 1]
        open_tracks = still_open
        matched = _match(open_tracks, boxes, iou_threshold)
        for detection in range(len(boxes)):
            if detection in matched:
                track = open_tracks[matched[detection]]
            else:
                track = _OpenTrack([], [], [])
                open_tracks.append(track)
            track.frames.append(frame)
            track.boxes.append(boxes[detection])
            track.scores.append(float(scores[detection]))
    kept = [track for track in closed + open_tracks if len(track.frames) >= min_detections]
    return sorted((_filled(track) for track in kept), key=lambda track: (track.frames[0], track.boxes[0, 0]))


def _match(tracks: list[_OpenTrack], boxes: np.ndarray, iou_threshold: float) -> dict[int, int]:
    """Greedy one-to-one assignment, highest IoU first: {detection index: track index}."""
    if not tracks or len(boxes) == 0:
        return {}
    iou = box_iou(np.stack([track.boxes[-1] for track in tracks]), boxes)
    matched: dict[int, int] = {}
    used_tracks: set[int] = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        track, detection = divmod(int(flat), len(boxes))
        if iou[track, detection] <= iou_threshold:
            break
        if track not in used_tracks and detection not in matched:
            matched[detection] = track
            used_tracks.add(track)
    return matched


def _filled(track: _OpenTrack) -> FaceTrack:
    detected = np.asarray(track.frames)
    frames = np.arange(detected[0], detected[-1] + 1)
    boxes = np.asarray(track.boxes, dtype=np.float64)
    filled = np.stack([np.interp(frames, detected, boxes[:, k]) for k in range(4)], axis=1)
    scores = np.full(len(frames), np.nan, dtype=np.float32)
    scores[detected - detected[0]] = track.scores
    return FaceTrack(frames, filled, scores)


def crop_parameters(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Light-ASD's smoothed crop centre x, centre y and half size s = max(w, h) / 2 per frame of a
    track (boxes [T, 4]), each median-filtered over the track with a kernel of 13 frames."""
    half_size = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    with warnings.catch_warnings():
        # tracks shorter than the kernel are zero-padded, as in the original; scipy warns about it
        warnings.simplefilter("ignore", UserWarning)
        return tuple(medfilt(values, kernel_size=MEDIAN_KERNEL) for values in (centre_x, centre_y, half_size))


def crop_face(image: np.ndarray, centre_x: float, centre_y: float, half_size: float, crop_scale: float,
              size: int = 224) -> np.ndarray:
    """Light-ASD's face crop from one frame [H, W, C], resized (bilinear) to size x size.

    The original pads the whole frame by bsi = int(s * (1 + 2 * cs)) with grey 110 and slices
    rows int(my - s) : int(my + s * (1 + 2 * cs)) and columns int(mx - s * (1 + cs)) : int(mx + s * (1 + cs)),
    with my, mx the centre in padded coordinates. Only the sliced window is built here, with the same
    integer bounds, so the pixels are identical without copying the whole padded frame.
    """
    pad = int(half_size * (1 + 2 * crop_scale))
    padded_y, padded_x = centre_y + pad, centre_x + pad
    rows = _slice_bounds(int(padded_y - half_size), int(padded_y + half_size * (1 + 2 * crop_scale)),
                         image.shape[0] + 2 * pad)
    cols = _slice_bounds(int(padded_x - half_size * (1 + crop_scale)),
                         int(padded_x + half_size * (1 + crop_scale)), image.shape[1] + 2 * pad)
    window = np.full((rows[1] - rows[0], cols[1] - cols[0]) + image.shape[2:], PAD_VALUE, image.dtype)
    src_rows = (max(rows[0] - pad, 0), min(rows[1] - pad, image.shape[0]))
    src_cols = (max(cols[0] - pad, 0), min(cols[1] - pad, image.shape[1]))
    if src_rows[1] > src_rows[0] and src_cols[1] > src_cols[0]:
        window[src_rows[0] + pad - rows[0]:src_rows[1] + pad - rows[0],
               src_cols[0] + pad - cols[0]:src_cols[1] + pad - cols[0]] = \
            image[src_rows[0]:src_rows[1], src_cols[0]:src_cols[1]]
    if window.size == 0:
        return np.full((size, size) + image.shape[2:], PAD_VALUE, image.dtype)
    return cv2.resize(window, (size, size), interpolation=cv2.INTER_LINEAR)


def _slice_bounds(start: int, stop: int, length: int) -> tuple[int, int]:
    # numpy slicing clips a stop past the end; a start below 0 (a centre outside the frame, which the
    # original would wrap around) is clipped to 0 here
    start, stop = min(max(start, 0), length), min(max(stop, 0), length)
    return start, max(start, stop)


def crop_track(frames: np.ndarray, boxes: np.ndarray, crop_scale: float = 0.4) -> np.ndarray:
    """Light-ASD's crop over a whole track: frames [T, H, W, 3] and their boxes [T, 4] in the same
    pixels -> [T, 224, 224, 3] crops."""
    centre_x, centre_y, half_size = crop_parameters(np.asarray(boxes, dtype=np.float64))
    return np.stack([crop_face(frame, x, y, s, crop_scale)
                     for frame, x, y, s in zip(frames, centre_x, centre_y, half_size)])


def gray_centre_112(face_rgb_224: np.ndarray) -> np.ndarray:
    """Light-ASD's visual input from a 224 RGB crop: grey, then the centre 112 x 112."""
    return cv2.cvtColor(face_rgb_224, cv2.COLOR_RGB2GRAY)[56:168, 56:168]
