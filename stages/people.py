"""people: salient humans, their tracks and COCO-17 poses, their framing and how much they move.

On frames sampled at `sample_fps`, YOLOX finds people and a top-down pose model (MoveNet or
RTMPose/DWPose) gives each one's keypoints; detections are linked across the samples into tracks
(greedy matching on IoU, centre shift and size change). A track is a salient person when, in enough of the
samples, its box is large and its pose clearly visible. Clips keep 1 to 3 salient people (the
InterActHuman rule); others are rejected with "no_people" or "too_many_people".

Writes `pose.npz`: kpts float16 [N_id, T_pose, 17, 3] (x, y in clip pixels, score; NaN x, y and
score 0 where the person is absent), frames int32 [T_pose] (clip frame indices sampled), boxes
float32 [N_id, T_pose, 4] (x1, y1, x2, y2 in clip pixels, NaN where absent). Identities are ordered
left to right by mean box centre. The same boxes and frames go to later stages as arrays
"people.boxes" and "people.frames".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from curation.stage import ClipFrames, FrameSpec, Item, Params, Resources, Stage, WeightFile, npz_bytes
from stages.models.boxes import box_iou
from stages.models.movenet import MoveNetPose
from stages.models.pose import PersonDetector, PoseBackend, PoseEstimator
from stages.models.pose_metrics import amplitude_class, motion_amplitude, track_human_size
from stages.models.rtmpose import RTMPose
from stages.models.yolox import YoloxPersonDetector

N_KEYPOINTS = 17
_UNMATCHABLE = 1e6

# pose_backend name -> how that backend builds itself (stages/models/pose.py). The parameter's allowed
# values are these keys: a new pose model is its module plus one line here.
POSE_BACKENDS: dict[str, PoseBackend] = {
    "movenet": MoveNetPose.from_params,
    "rtmpose": RTMPose.from_params,
}
PoseBackendName = Literal[tuple(POSE_BACKENDS)]


class PeopleParams(Params):
    detector_path: WeightFile = Field(None, description="the YOLOX ONNX person detector weights (e.g. yolox_nano.onnx)")
    pose_backend: PoseBackendName = Field("movenet", description="top-down pose model: MoveNet TFLite or RTMPose/DWPose ONNX (SimCC)")
    pose_model_path: WeightFile = Field(None, description="the pose_backend model's weights: a MoveNet .tflite file for movenet, an RTMPose/DWPose .onnx file for rtmpose")
    sample_fps: float = Field(2.0, gt=0, description="frames per second analysed")
    max_side: int = Field(640, ge=64, description="longer side of the analysed frames")
    num_threads: int = Field(1, ge=1, description="CPU threads per model")
    detector_score_threshold: float = Field(0.3, ge=0, le=1, description="minimum YOLOX person score (objectness x class)")
    nms_iou_threshold: float = Field(0.45, gt=0, le=1, description="IoU above which the weaker of two person boxes is suppressed")
    box_expand: float = Field(1.25, ge=1, description="person box enlargement for the pose crop")
    keypoint_threshold: float = Field(0.3, ge=0, le=1, description="a keypoint counts as visible at or above this score (saliency, human size, motion)")
    min_box_area_fraction: float = Field(0.03, ge=0, le=1, description="a salient person's box covers at least this fraction of the frame")
    min_visible_keypoints: int = Field(5, ge=0, le=N_KEYPOINTS, description="a salient person shows at least this many visible keypoints")
    min_presence: float = Field(0.3, ge=0, le=1, description="fraction of the sampled frames in which a track must be salient to count as a person")
    min_people: int = Field(1, ge=0, description="reject clips with fewer salient people (no_people)")
    max_people: int = Field(3, ge=1, description="reject clips with more salient people (too_many_people)")
    track_min_iou: float = Field(0.2, ge=0, le=1, description="a detection continues a track when their boxes overlap at least this much (IoU) ...")
    track_max_centre_shift: float = Field(0.5, ge=0, description="... or when its centre moved at most this many track-box sides")
    track_max_size_ratio: float = Field(2.0, ge=1, description="... and its size (square root of the box area) changed by at most this factor")
    track_max_gap_s: float = Field(1.5, ge=0, description="a track not seen for longer than this ends (a later detection starts a new one)")


@dataclass
class FramePeople:
    """Detections in one sampled frame: boxes [N, 4] and keypoints [N, 17, 3] in clip pixels, and
    which of them are salient [N]."""

    boxes: np.ndarray
    keypoints: np.ndarray
    salient: np.ndarray


class People(Stage):
    name = "people"
    level = "clip"
    Params = PeopleParams
    adds_members = ("pose.npz",)
    adds_arrays = ("people.boxes", "people.frames")
    analysis = {"human_size": "human_size", "motion_amplitude": "motion_class"}

    @classmethod
    def annotate_sample(cls, document: dict) -> None:
        found = document["stages"].get(cls.name, {}).get("identities")
        if found is not None:
            document["identities"] = [dict(identity) for identity in found]

    def resources(self) -> Resources:
        return Resources(cpus=self.params.num_threads, memory_gb=1.0)

    def frame_specs(self) -> list[FrameSpec]:
        return [FrameSpec(fps=self.params.sample_fps, max_side=self.params.max_side)]

    def setup(self) -> None:
        params = self.params
        detector_path = self.weights("detector_path")  # both weight paths are checked before either loads
        self.pose: PoseEstimator = POSE_BACKENDS[params.pose_backend](params, self.weights)
        self.detector: PersonDetector = YoloxPersonDetector(detector_path, params.detector_score_threshold,
                                                            params.nms_iou_threshold, params.num_threads)

    def process_item(self, item: Item) -> None:
        frames = item.frames[self.frame_specs()[0]]
        if len(frames.images) == 0:
            self.reject(item, "no_frames", "no frame was decoded from the clip")
            return
        observed = [self._people_in(image, frames.scale) for image in frames.images]
        tracks = link_tracks([f.boxes for f in observed], frames.times, self.params)
        needed = max(1.0, self.params.min_presence * len(observed))
        people = [track for track in tracks if sum(observed[t].salient[d] for t, d in track.items()) >= needed]
        self._annotate(item, frames, observed, SalientPeople.of(people, observed))

    def _people_in(self, image: np.ndarray, scale: float) -> FramePeople:
        """Detect people in one sampled frame and estimate the pose of those large enough to matter."""
        height, width = image.shape[:2]
        boxes = self.detector.detect(image).boxes
        large = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) >= self.params.min_box_area_fraction * height * width
        keypoints = np.zeros((len(boxes), N_KEYPOINTS, 3), dtype=np.float32)
        keypoints[large] = self.pose.estimate(image, boxes[large])
        # a keypoint outside the picture is the model's guess at what is not shown, not a visible joint
        outside = ((keypoints[..., 0] < 0) | (keypoints[..., 0] >= width)
                   | (keypoints[..., 1] < 0) | (keypoints[..., 1] >= height))
        keypoints[..., 2][outside] = 0.0
        visible = (keypoints[..., 2] >= self.params.keypoint_threshold).sum(axis=1)
        keypoints[..., :2] /= scale
        return FramePeople(boxes / scale, keypoints, large & (visible >= self.params.min_visible_keypoints))

    def _annotate(self, item: Item, frames: ClipFrames, observed: list[FramePeople], people: SalientPeople) -> None:
        identities = [self._describe(i, people.keypoints[i], people.boxes[i], people.salient[i])
                      for i in range(len(people.boxes))]
        meta = {"identities": identities, "sampled_frames": len(observed),
                "detections_per_frame": [len(f.boxes) for f in observed]}
        self.record(item, meta, **_clip_scores(identities, people.salient))
        if len(identities) < self.params.min_people:
            self.reject(item, "no_people", f"{len(identities)} salient people < {self.params.min_people}")
            return
        if len(identities) > self.params.max_people:
            self.reject(item, "too_many_people", f"{len(identities)} salient people > {self.params.max_people}")
            return
        clip = item.meta["clips"]
        frame_indices = np.clip(np.round(frames.times * clip["fps"]), 0, clip["n_frames"] - 1).astype(np.int32)
        item.members["pose.npz"] = npz_bytes(kpts=people.keypoints.astype(np.float16), frames=frame_indices,
                                        boxes=people.boxes)
        item.arrays["people.boxes"] = people.boxes
        item.arrays["people.frames"] = frame_indices

    def _describe(self, identity: int, keypoints: np.ndarray, boxes: np.ndarray, salient: np.ndarray) -> dict:
        """One identity's meta from its keypoints [T, 17, 3], boxes [T, 4] (NaN where absent) and
        salient [T]; framing and motion are judged on the samples where it is salient."""
        present = np.isfinite(boxes[:, 0])
        threshold = self.params.keypoint_threshold
        amplitude = motion_amplitude(keypoints[salient], threshold)
        return {
            "id": identity,
            "human_size": track_human_size(keypoints[salient, :, 2], threshold),
            "motion_amplitude": None if amplitude is None else round(amplitude, 4),
            "motion_class": amplitude_class(amplitude),
            "mean_box": [round(float(v), 1) for v in boxes[present].mean(axis=0)],
            "presence": round(float(present.mean()), 4),
        }


@dataclass
class SalientPeople:
    """The salient people of a clip, ordered left to right by mean box centre: boxes [N, T, 4] (NaN
    where absent), keypoints [N, T, 17, 3] (NaN x, y and score 0 where absent), salient [N, T]."""

    boxes: np.ndarray
    keypoints: np.ndarray
    salient: np.ndarray

    @classmethod
    def of(cls, people: list[dict[int, int]], observed: list[FramePeople]) -> SalientPeople:
        boxes = np.full((len(people), len(observed), 4), np.nan, dtype=np.float32)
        keypoints = np.zeros((len(people), len(observed), N_KEYPOINTS, 3), dtype=np.float32)
        keypoints[..., :2] = np.nan
        salient = np.zeros((len(people), len(observed)), dtype=bool)
        for i, track in enumerate(people):
            for t, d in track.items():
                boxes[i, t] = observed[t].boxes[d]
                keypoints[i, t] = observed[t].keypoints[d]
                salient[i, t] = observed[t].salient[d]
        order = np.argsort(np.nanmean((boxes[..., 0] + boxes[..., 2]) / 2, axis=1))
        return cls(boxes[order], keypoints[order], salient[order])


def _clip_scores(identities: list[dict], salient: np.ndarray) -> dict:
    """Index columns: how many people, at most how many salient at once (salient [N, T]), the framing
    of the largest person (the dominant human size) and the largest motion amplitude."""
    largest = max(identities, key=lambda person: _box_area(person["mean_box"]), default=None)
    amplitudes = [person["motion_amplitude"] for person in identities if person["motion_amplitude"] is not None]
    return {"n_people": len(identities), "max_people_per_frame": int(salient.sum(axis=0).max(initial=0)),
            "human_size": largest["human_size"] if largest else None,
            "max_motion_amplitude": max(amplitudes) if amplitudes else None,
            "motion_class": amplitude_class(max(amplitudes)) if amplitudes else None}


def link_tracks(boxes_per_frame: list[np.ndarray], times: np.ndarray, params: PeopleParams) -> list[dict[int, int]]:
    """Link detections across sampled frames: each track maps frame index -> detection index.

    Each frame's detections are matched one-to-one to the tracks seen within `track_max_gap_s`,
    greedily by cost (overlap with, centre shift and size change from the track's last box), so that
    a clear match is never traded for two poor ones; unmatched detections start new tracks.
    """
    tracks: list[dict[int, int]] = []
    for t, boxes in enumerate(boxes_per_frame):
        live = [track for track in tracks if times[t] - times[max(track)] <= params.track_max_gap_s]
        last_boxes = np.array([boxes_per_frame[max(track)][track[max(track)]] for track in live]).reshape(-1, 4)
        cost = _match_cost(last_boxes, boxes, params)
        matched_tracks, matched = set(), set()
        for row, col in zip(*np.unravel_index(np.argsort(cost, axis=None), cost.shape)):
            if cost[row, col] < _UNMATCHABLE and row not in matched_tracks and col not in matched:
                live[row][t] = int(col)
                matched_tracks.add(row)
                matched.add(col)
        tracks.extend({t: d} for d in range(len(boxes)) if d not in matched)
    return tracks


def _match_cost(track_boxes: np.ndarray, boxes: np.ndarray, params: PeopleParams) -> np.ndarray:
    """Cost [tracks, detections]: (1 - IoU) + centre shift in track-box sides + |log size ratio|;
    _UNMATCHABLE where the pair overlaps too little and either moved too far or changed size too
    much (a hand detected inside a close-up person is no continuation of that person)."""
    iou = box_iou(track_boxes, boxes)
    side = np.maximum(np.max(track_boxes[:, 2:] - track_boxes[:, :2], axis=1), 1.0)[:, None]
    centre_shift = np.linalg.norm(_centres(track_boxes)[:, None] - _centres(boxes)[None], axis=-1) / side
    log_size_ratio = np.abs(np.log(_sizes(track_boxes)[:, None] / _sizes(boxes)[None]))
    gate = (iou >= params.track_min_iou) | ((centre_shift <= params.track_max_centre_shift)
                                            & (log_size_ratio <= np.log(params.track_max_size_ratio)))
    return np.where(gate, 1.0 - iou + centre_shift + log_size_ratio, _UNMATCHABLE)


def _centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def _sizes(boxes: np.ndarray) -> np.ndarray:
    """Square root of each box's area (at least one pixel)."""
    return np.sqrt(np.maximum(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1), 1.0))


def _box_area(box: list[float]) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])
