"""hands: HKC and HKV, the hand measures of CyberHost (Lin et al. 2024, arXiv 2409.01876) that OmniHuman
and InterActHuman (Table 1) report for generated talking humans.

The papers define them in one sentence each and publish no code: HKC, the hand keypoint confidence,
"evaluates the quality of hand representation" (higher: better-formed hands); HKV, the hand keypoint
variance, "serves as an indicator of the richness of hand movement". What is computed here, on every
`frame_stride`-th frame of a generated video:

1. People. YOLOX finds person boxes; boxes covering less than `min_box_area_fraction` of the frame are
   dropped; the rest are linked across frames by the people stage's `link_tracks` (greedy one-to-one
   matching on overlap, centre shift and size change). That suffices here: the videos hold one to three
   people who move little relative to their size, so consecutive boxes of one person overlap far more
   than boxes of two. A track is a person when it is seen in at least `min_presence` of the frames.
2. Keypoints. A DWPose / RTMPose whole-body SimCC model (COCO-WholeBody order, 133 keypoints: 0-16 body,
   17-22 feet, 23-90 face, 91-111 left hand, 112-132 right hand) on each person box; a keypoint the model
   places outside the picture gets score 0, as in the people stage.
3. HKC: the mean score of the 21 keypoints of every hand in view, pooled over people and frames. A hand
   is in view when its body wrist (keypoint 9 left, 10 right) scores at least `keypoint_threshold`: a
   hand below the frame edge (usual in clips framed at the chest) says nothing about how well hands are
   drawn, so it is left out rather than counted as a zero.
4. HKV: for each person and hand keypoint, the population variance over time of its position,
   var(x) + var(y), over the frames where it scores at least `keypoint_threshold` (0.3, DWPose's own
   visibility threshold); keypoints confident in fewer than `min_frames` frames are left out; HKV is the
   mean over the remaining (person, keypoint) pairs. Positions are in pixels of the frame scaled to
   `reference_height` px high, so that a video and its resized copy get the same HKV. The papers'
   resolution and normalisation are not published: compare HKV between models scored here, not with
   the papers' numbers.

Per video: hkc, hkv (NaN without a person or a hand in view), hands_in_view (fraction of the person x
frame x hand slots with the hand in view) and people (how many were tracked). The models run on ONNX
Runtime's CPU provider, `num_threads` threads each.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from stages.models.rtmpose import RTMPose, box_to_centre_scale, decode_simcc, normalise, warp_to_input
from stages.models.yolox import YoloxPersonDetector
from stages.people import PeopleParams, link_tracks
from training.data import ClipSample
from training.evaluation.common import GeneratedVideo, MeanOfScores, MetricSettings, MetricUnavailable, require_path

METRIC = "hands"
N_WHOLEBODY_KEYPOINTS = 133
HANDS = (slice(91, 112), slice(112, 133))  # left, right: 21 keypoints each, wrist first
WRISTS = [9, 10]  # the body's left and right wrist, in the order of HANDS


class HandSettings(MetricSettings):
    """The section's model paths and tunables."""

    wholebody_pose_path: str | None = None
    person_detector_path: str | None = None
    frame_stride: int = Field(1, ge=1)  # analyse every n-th frame; 1: all frames
    keypoint_threshold: float = 0.3  # a keypoint (or wrist) counts as visible at or above this score
    # a hand keypoint enters HKV when confident in at least this many frames (one frame has variance 0
    # whatever the motion: it would only pull HKV down)
    min_frames: int = Field(3, ge=2)
    reference_height: float = 512.0  # HKV positions are pixels of the frame scaled to this height
    detector_score_threshold: float = 0.3  # minimum YOLOX person score, as in the people stage
    min_box_area_fraction: float = 0.03  # smaller person boxes (background people, false hits) are dropped
    min_presence: float = 0.3  # fraction of the analysed frames a track must be seen in to be a person
    box_expand: float = 1.25  # person box enlargement for the pose crop (RTMPose's padding)
    num_threads: int = 1


class WholeBodyPose:
    """A whole-body SimCC model: all 133 keypoints of each person box (RTMPose.estimate keeps the body's 17)."""

    def __init__(self, model: RTMPose):
        self.model = model

    @classmethod
    def from_onnx(cls, path: str, padding: float, num_threads: int) -> WholeBodyPose:
        model = RTMPose.from_onnx(path, padding, num_threads)
        width, height = model.input_size.astype(int)
        n_keypoints = model.run_model(np.zeros((1, 3, height, width), dtype=np.float32))[0].shape[1]
        if n_keypoints != N_WHOLEBODY_KEYPOINTS:
            raise MetricUnavailable(f"{METRIC}: wholebody_pose_path={path!r} gives {n_keypoints} keypoints; "
                                    f"HKC/HKV need a COCO-WholeBody model with {N_WHOLEBODY_KEYPOINTS} (DWPose)")
        return cls(model)

    def estimate(self, image_rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Keypoints [N, 133, 3] (x, y in image pixels, score) for each xyxy box [N, 4]."""
        keypoints = np.zeros((len(boxes), N_WHOLEBODY_KEYPOINTS, 3), dtype=np.float32)
        input_size = self.model.input_size
        for i, box in enumerate(boxes):
            centre, scale = box_to_centre_scale(box, self.model.padding, input_size)
            simcc_x, simcc_y = self.model.run_model(normalise(warp_to_input(image_rgb, centre, scale, input_size)))
            keypoints[i] = decode_simcc(simcc_x[0], simcc_y[0], centre, scale, input_size)
        return keypoints


class HandKeypointMetric:
    """HKC and HKV of each generated video; the summary is their mean over the videos."""

    def __init__(self, detector: YoloxPersonDetector, pose: WholeBodyPose, settings: HandSettings):
        self.detector = detector
        self.pose = pose
        self.settings = settings
        self.means = MeanOfScores()

    def score(self, generated: GeneratedVideo, sample: ClipSample) -> dict[str, float]:
        return self.means.add(self.measure(generated.frames, generated.fps))

    def summary(self) -> dict[str, float]:
        return self.means.means()

    def measure(self, frames: np.ndarray, fps: float) -> dict[str, float]:
        """hkc, hkv, hands_in_view and people of one video, frames uint8 [T, H, W, 3] RGB."""
        analysed = np.arange(0, len(frames), self.settings.frame_stride)
        observed = [self._observe(frames[t]) for t in analysed]
        people = self._people(observed, analysed / fps)
        if len(people) == 0:
            return {"hkc": float("nan"), "hkv": float("nan"), "hands_in_view": float("nan"), "people": 0.0}
        threshold = self.settings.keypoint_threshold
        hands = hands_of(people)
        in_view = hands_in_view(people, threshold)
        hands[..., :2] *= self.settings.reference_height / frames.shape[1]
        return {"hkc": hand_keypoint_confidence(hands, in_view),
                "hkv": hand_keypoint_variance(hands, threshold, self.settings.min_frames),
                "hands_in_view": float(in_view.mean()), "people": float(len(people))}

    def _observe(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes [N, 4] of the people large enough to matter in one frame and their keypoints [N, 133, 3]."""
        height, width = image.shape[:2]
        boxes = self.detector.detect(image).boxes
        areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
        boxes = boxes[areas >= self.settings.min_box_area_fraction * height * width]
        keypoints = self.pose.estimate(image, boxes)
        outside = ((keypoints[..., 0] < 0) | (keypoints[..., 0] >= width)
                   | (keypoints[..., 1] < 0) | (keypoints[..., 1] >= height))
        keypoints[..., 2][outside] = 0.0
        return boxes, keypoints

    def _people(self, observed: list[tuple[np.ndarray, np.ndarray]], times: np.ndarray) -> np.ndarray:
        """Keypoints [P, T, 133, 3] of the tracked people over the analysed frames (score 0 where absent)."""
        tracks = link_tracks([boxes for boxes, _ in observed], times, PeopleParams())
        needed = max(1.0, self.settings.min_presence * len(observed))
        people = [track for track in tracks if len(track) >= needed]
        keypoints = np.zeros((len(people), len(observed), N_WHOLEBODY_KEYPOINTS, 3), dtype=np.float32)
        for p, track in enumerate(people):
            for t, detection in track.items():
                keypoints[p, t] = observed[t][1][detection]
        return keypoints


def hands_of(people: np.ndarray) -> np.ndarray:
    """Whole-body keypoints [P, T, 133, 3] -> hand keypoints [P, T, 2, 21, 3] (left, right), a copy."""
    return np.stack([people[:, :, hand] for hand in HANDS], axis=2)


def hands_in_view(people: np.ndarray, threshold: float) -> np.ndarray:
    """[P, T, 2] whether each hand's wrist is visible, from whole-body keypoints [P, T, 133, 3]."""
    return people[:, :, WRISTS, 2] >= threshold


def hand_keypoint_confidence(hands: np.ndarray, in_view: np.ndarray) -> float:
    """HKC: mean score of the keypoints of the hands in view; hands [P, T, 2, 21, 3], in_view [P, T, 2]."""
    scores = hands[..., 2][in_view]
    return float(scores.mean()) if scores.size else float("nan")


def hand_keypoint_variance(hands: np.ndarray, threshold: float, min_frames: int) -> float:
    """HKV: mean over (person, hand keypoint) of var(x) + var(y) over the frames where the keypoint
    scores at least `threshold`, for keypoints confident in at least `min_frames` frames; hands
    [P, T, 2, 21, 3] with positions in the unit HKV is reported in."""
    confident = (hands[..., 2] >= threshold)[..., None]  # [P, T, 2, 21, 1]
    count = confident.sum(axis=1)  # [P, 2, 21, 1]
    mean = np.where(confident, hands[..., :2], 0.0).sum(axis=1) / np.maximum(count, 1)
    squared_deviation = np.where(confident, (hands[..., :2] - mean[:, None]) ** 2, 0.0)
    variance = (squared_deviation.sum(axis=1) / np.maximum(count, 1)).sum(axis=-1)  # [P, 2, 21]
    enough = count[..., 0] >= min_frames
    return float(variance[enough].mean()) if enough.any() else float("nan")


def build(settings: HandSettings, device: str) -> HandKeypointMetric:
    """The metric from its settings; `device` is unused (ONNX Runtime on CPU)."""
    pose_path = require_path(settings, "wholebody_pose_path", METRIC)
    detector_path = require_path(settings, "person_detector_path", METRIC)
    detector = YoloxPersonDetector(detector_path, settings.detector_score_threshold, num_threads=settings.num_threads)
    pose = WholeBodyPose.from_onnx(pose_path, settings.box_expand, settings.num_threads)
    return HandKeypointMetric(detector, pose, settings)
