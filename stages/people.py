"""people: salient humans, their tracks and COCO-17 poses, their framing and how much they move.

On frames sampled at `sample_fps`, YOLOX finds people and a top-down pose model (MoveNet or
RTMPose/DWPose) gives each one's keypoints; detections are linked across the samples into tracks
(greedy matching on IoU, centre shift and size change). A track is a salient person when, in enough of the
samples, it is salient: a large, clearly visible person (the paper's salient human). Large: its box
covers at least `min_box_area_fraction` of the frame, so tiny background people never count. Clearly
visible: any one of
* body: at least `min_visible_keypoints` visible keypoints (medium shots, full bodies);
* head: at least `min_head_keypoints` of the 5 head keypoints (nose, eyes, ears) at
  `head_keypoint_threshold` or more (head-and-shoulders shots, where the pose model sees little else);
* face: a face box mostly inside the person box and at least `min_face_height` of its height (face
  close-ups, where even the head keypoints fail). Faces come from the faces stage when it ran earlier
  (its tracks in item.meta["faces"]), else from YuNet run here on the sampled frames when
  `face_model_path` is set, else this evidence is not used.
Clips keep 1 to 3 salient people (the InterActHuman rule); others are rejected with "no_people" or
"too_many_people".

Only what can change the answer is computed. A track is a salient person only if its box is large in
at least `min_presence` of the samples, and the boxes alone tell that before any pose: detection runs
sample by sample and stops as soon as no track, begun or still to begin, can be large in that many
samples (the clip has no salient person, whatever the pose or faces would say); pose is estimated
only for the large boxes of tracks that are large in enough samples, and YuNet runs only on the
samples that hold such a box. The answer, the identities and pose.npz are those of judging every
large box; the meta says how many samples were detected (`detected_frames`) and how many boxes were
posed (`posed_boxes`).

Each identity's meta counts the samples each kind of evidence made it salient (`evidence`). Drawn or
rendered characters are not people; this stage cannot tell them apart: run the `photographic` stage
before it.

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
from stages.models.yunet import YuNetOnnx, YuNetOpenCV, fixed_input_size

N_KEYPOINTS = 17
HEAD_KEYPOINTS = slice(0, 5)  # COCO nose, eyes, ears
FACES_FPS = 25.0  # the faces stage's timeline
FACE_BATCH = 8  # sampled frames per YuNet call
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
    min_visible_keypoints: int = Field(5, ge=0, le=N_KEYPOINTS, description="body evidence: a large person box with at least this many visible keypoints is salient (medium shots, full bodies)")
    min_head_keypoints: int = Field(2, ge=1, le=5, description="head evidence: a large person box with at least this many of the 5 head keypoints (nose, eyes, ears) at head_keypoint_threshold is salient (head-and-shoulders shots, where the pose model sees only the head)")
    head_keypoint_threshold: float = Field(0.4, ge=0, le=1, description="a head keypoint counts as head evidence at or above this score")
    face_model_path: WeightFile = Field(None, description="a YuNet ONNX face detector (yunet_n_dynamic.onnx, or a fixed-size file such as yunet_n_320_320.onnx) run on the sampled frames for face evidence when no faces stage ran earlier; null: face evidence only from an earlier faces stage")
    face_score_threshold: float = Field(0.7, ge=0, le=1, description="face evidence: YuNet faces scoring below this are ignored (faces stage tracks are already filtered by its min_track_score)")
    min_face_inside: float = Field(0.7, ge=0, le=1, description="face evidence: at least this fraction of the face box lies inside the person box")
    min_face_height: float = Field(0.1, ge=0, le=1, description="face evidence: the face box is at least this fraction of the person box's height (a whole body is about 7 heads; a far face inside a near person's box does not count)")
    min_presence: float = Field(0.3, ge=0, le=1, description="fraction of the sampled frames in which a track must be salient to count as a person")
    min_people: int = Field(1, ge=0, description="reject clips with fewer salient people (no_people)")
    max_people: int = Field(3, ge=1, description="reject clips with more salient people (too_many_people)")
    track_min_iou: float = Field(0.2, ge=0, le=1, description="a detection continues a track when their boxes overlap at least this much (IoU) ...")
    track_max_centre_shift: float = Field(0.5, ge=0, description="... or when its centre moved at most this many track-box sides")
    track_max_size_ratio: float = Field(2.0, ge=1, description="... and its size (square root of the box area) changed by at most this factor")
    track_max_gap_s: float = Field(1.5, ge=0, description="a track not seen for longer than this ends (a later detection starts a new one)")


@dataclass
class FramePeople:
    """Detections in one sampled frame: boxes [N, 4] and keypoints [N, 17, 3] in clip pixels, which of
    them are salient [N], and the evidence of each [N]: large box, body keypoints, head keypoints, a
    face inside (salient = posed & (body | head | face)). `posed` [N]: which boxes were given a pose
    (every large one, or only those that can change the answer); the others keep keypoint scores 0
    and are not salient."""

    boxes: np.ndarray
    keypoints: np.ndarray
    salient: np.ndarray
    large: np.ndarray | None = None
    body: np.ndarray | None = None
    head: np.ndarray | None = None
    face: np.ndarray | None = None
    posed: np.ndarray | None = None


class People(Stage):
    name = "people"
    sample_fields = {"identities": []}
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
        self.face_detector = None
        if params.face_model_path is not None:
            face_path = self.weights("face_model_path")
            size = fixed_input_size(face_path)
            self.face_detector = (YuNetOnnx(face_path, params.face_score_threshold, 0.3, params.num_threads)
                                  if size is None else
                                  YuNetOpenCV(face_path, size, params.face_score_threshold, 0.3))

    def process_item(self, item: Item) -> None:
        frames = item.frames[self.frame_specs()[0]]
        if len(frames.images) == 0:
            self.reject(item, "no_frames", "no frame was decoded from the clip")
            return
        needed = needed_samples(len(frames.images), self.params)
        linker, large = self._detect_until_decided(frames, needed)
        to_pose = boxes_that_matter(linker.tracks, large, needed)
        wanted = np.zeros(len(frames.images), dtype=bool)
        wanted[:len(to_pose)] = [mask.any() for mask in to_pose]
        faces = self.faces_on(item, frames, wanted)
        observed = [self._judge(image, frames.scale, boxes, mask, face_boxes)
                    for image, boxes, mask, face_boxes in zip(frames.images, linker.boxes, to_pose, faces)]
        people = tracks_flagged_in(linker.tracks, [f.salient for f in observed], needed)
        self._annotate(item, frames, observed, SalientPeople.of(people, observed, len(frames.images)))

    def _detect_until_decided(self, frames: ClipFrames, needed: float) -> tuple[TrackLinker, list[np.ndarray]]:
        """Person boxes of the sampled frames in order, linked into tracks, and which are large [N] per
        frame; detection stops once no track can be large in `needed` samples (see
        `nobody_can_qualify`), so the linker may hold fewer frames than were sampled."""
        linker = TrackLinker(self.params)
        large = []
        for t, image in enumerate(frames.images):
            boxes = self.detector.detect(image).boxes
            linker.add(boxes, frames.times[t])
            large.append(large_boxes(boxes, image.shape, self.params.min_box_area_fraction))
            if nobody_can_qualify(linker, large, frames.times[t + 1:], needed):
                break
        return linker, large

    def faces_on(self, item: Item, frames: ClipFrames, wanted: np.ndarray | None = None) -> list[np.ndarray | None]:
        """Face boxes [F, 4] in the sampled frames' pixels, per sample: the faces stage's tracks when it
        ran earlier, else YuNet's detections when face_model_path is set, else None (no face evidence).
        `wanted` [T] bool: the samples whose faces can matter; YuNet skips the others (None there)."""
        tracks = (item.meta.get("faces") or {}).get("tracks")
        if tracks is not None:
            return [faces_at(tracks, round(t * FACES_FPS)) * frames.scale for t in frames.times]
        faces: list[np.ndarray | None] = [None] * len(frames.images)
        if self.face_detector is None:
            return faces
        samples = np.arange(len(frames.images)) if wanted is None else np.flatnonzero(wanted)
        for start in range(0, len(samples), FACE_BATCH):
            batch = samples[start:start + FACE_BATCH]
            for t, found in zip(batch, self.face_detector.detect(frames.images[batch])):
                faces[t] = found.boxes
        return faces

    def _people_in(self, image: np.ndarray, scale: float, faces: np.ndarray | None = None) -> FramePeople:
        """Detect people in one sampled frame and judge every large box (module docstring), skipping
        nothing: what the rule sees frame by frame (benches compare rules on it); `faces` [F, 4] in the
        frame's pixels, or None."""
        boxes = self.detector.detect(image).boxes
        every_large = large_boxes(boxes, image.shape, self.params.min_box_area_fraction)
        return self._judge(image, scale, boxes, every_large, faces)

    def _judge(self, image: np.ndarray, scale: float, boxes: np.ndarray, to_pose: np.ndarray,
               faces: np.ndarray | None) -> FramePeople:
        """Estimate the pose of the boxes [N, 4] marked `to_pose` [N] and judge which are salient (the
        others are not: their keypoint scores stay 0); boxes and faces [F, 4] (or None) in the frame's
        pixels, the result in clip pixels."""
        height, width = image.shape[:2]
        params = self.params
        keypoints = np.zeros((len(boxes), N_KEYPOINTS, 3), dtype=np.float32)
        if to_pose.any():
            keypoints[to_pose] = self.pose.estimate(image, boxes[to_pose])
        # a keypoint outside the picture is the model's guess at what is not shown, not a visible joint
        outside = ((keypoints[..., 0] < 0) | (keypoints[..., 0] >= width)
                   | (keypoints[..., 1] < 0) | (keypoints[..., 1] >= height))
        keypoints[..., 2][outside] = 0.0
        body = (keypoints[..., 2] >= params.keypoint_threshold).sum(axis=1) >= params.min_visible_keypoints
        head = (keypoints[:, HEAD_KEYPOINTS, 2] >= params.head_keypoint_threshold).sum(axis=1) >= params.min_head_keypoints
        face = face_inside(boxes, faces, params.min_face_inside, params.min_face_height)
        keypoints[..., :2] /= scale
        large = large_boxes(boxes, image.shape, params.min_box_area_fraction)
        return FramePeople(boxes / scale, keypoints, to_pose & (body | head | face), large, body, head, face, to_pose)

    def _annotate(self, item: Item, frames: ClipFrames, observed: list[FramePeople], people: SalientPeople) -> None:
        identities = [self._describe(i, people.keypoints[i], people.boxes[i], people.salient[i], people.evidence[i])
                      for i in range(len(people.boxes))]
        meta = {"identities": identities, "sampled_frames": len(frames.images), "detected_frames": len(observed),
                "detections_per_frame": [len(f.boxes) for f in observed],
                "posed_boxes": sum(int(f.posed.sum()) for f in observed)}
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

    def _describe(self, identity: int, keypoints: np.ndarray, boxes: np.ndarray, salient: np.ndarray,
                  evidence: dict[str, int]) -> dict:
        """One identity's meta from its keypoints [T, 17, 3], boxes [T, 4] (NaN where absent), salient
        [T] and evidence counts; framing and motion are judged on the samples where it is salient."""
        present = np.isfinite(boxes[:, 0])
        threshold = self.params.keypoint_threshold
        amplitude = motion_amplitude(keypoints[salient], threshold)
        return {
            "id": identity,
            "evidence": evidence,
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
    evidence: list[dict[str, int]]  # per person: in how many samples each kind of evidence made it salient

    @classmethod
    def of(cls, people: list[dict[int, int]], observed: list[FramePeople], n_samples: int) -> SalientPeople:
        """From the tracks that are salient people and the frames judged (the first of `n_samples`)."""
        boxes = np.full((len(people), n_samples, 4), np.nan, dtype=np.float32)
        keypoints = np.zeros((len(people), n_samples, N_KEYPOINTS, 3), dtype=np.float32)
        keypoints[..., :2] = np.nan
        salient = np.zeros((len(people), n_samples), dtype=bool)
        evidence = []
        for i, track in enumerate(people):
            counts = dict.fromkeys(EVIDENCE, 0)
            for t, d in track.items():
                boxes[i, t] = observed[t].boxes[d]
                keypoints[i, t] = observed[t].keypoints[d]
                salient[i, t] = observed[t].salient[d]
                for kind in EVIDENCE:
                    flags = getattr(observed[t], kind)
                    counts[kind] += int(salient[i, t] and flags is not None and flags[d])
            evidence.append(counts)
        order = np.argsort(np.nanmean((boxes[..., 0] + boxes[..., 2]) / 2, axis=1))
        return cls(boxes[order], keypoints[order], salient[order], [evidence[i] for i in order])


EVIDENCE = ("body", "head", "face")


def salient_tracks(observed: list[FramePeople], times: np.ndarray, params: PeopleParams) -> list[dict[int, int]]:
    """The tracks that are salient people: salient in at least min_presence of the samples (and one)."""
    tracks = link_tracks([f.boxes for f in observed], times, params)
    return tracks_flagged_in(tracks, [f.salient for f in observed], needed_samples(len(observed), params))


def needed_samples(n_samples: int, params: PeopleParams) -> float:
    """In how many of a clip's samples a track must be salient to be a salient person."""
    return max(1.0, params.min_presence * n_samples)


def tracks_flagged_in(tracks: list[dict[int, int]], flags: list[np.ndarray], needed: float) -> list[dict[int, int]]:
    """The tracks whose detections are flagged (flags[t] [N_t] bool per frame) in at least `needed` frames."""
    return [track for track in tracks if sum(bool(flags[t][d]) for t, d in track.items()) >= needed]


def large_boxes(boxes: np.ndarray, frame_shape: tuple[int, ...], min_area_fraction: float) -> np.ndarray:
    """bool [N]: the xyxy boxes [N, 4] covering at least `min_area_fraction` of a frame of `frame_shape` (H, W, ...)."""
    height, width = frame_shape[:2]
    return np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) >= min_area_fraction * height * width


def boxes_that_matter(tracks: list[dict[int, int]], large: list[np.ndarray], needed: float) -> list[np.ndarray]:
    """Per frame, bool [N]: the large boxes of the tracks large in at least `needed` frames. Only their
    pose and faces can make a salient person: a detection is salient only when large."""
    chosen = [np.zeros_like(flags) for flags in large]
    for track in tracks_flagged_in(tracks, large, needed):
        for t, d in track.items():
            chosen[t][d] = large[t][d]
    return chosen


def nobody_can_qualify(linker: TrackLinker, large: list[np.ndarray], later_times: np.ndarray, needed: float) -> bool:
    """Whether no track can be large in `needed` frames any more, whatever the frames at `later_times`
    hold: a track not begun yet has only those frames; one begun has its large frames so far, plus
    those frames unless it is already over (unseen for longer than track_max_gap_s by the next one)."""
    remaining = len(later_times)
    if remaining >= needed:
        return False
    for track in linker.tracks:
        last = max(track)
        going_on = remaining > 0 and later_times[0] - linker.times[last] <= linker.params.track_max_gap_s
        if sum(bool(large[t][d]) for t, d in track.items()) + remaining * going_on >= needed:
            return False
    return True


def face_inside(person_boxes: np.ndarray, face_boxes: np.ndarray | None, min_inside: float,
                min_height: float) -> np.ndarray:
    """bool [N]: some face box lies at least `min_inside` inside person box n and is at least
    `min_height` of its height (all boxes x1 y1 x2 y2 in one frame's pixels; None: no face evidence)."""
    if face_boxes is None or not len(face_boxes) or not len(person_boxes):
        return np.zeros(len(person_boxes), dtype=bool)
    top_left = np.maximum(person_boxes[:, None, :2], face_boxes[None, :, :2])
    bottom_right = np.minimum(person_boxes[:, None, 2:], face_boxes[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    face_area = np.maximum(np.prod(face_boxes[:, 2:] - face_boxes[:, :2], axis=-1), 1e-6)
    person_height = np.maximum(person_boxes[:, 3] - person_boxes[:, 1], 1e-6)
    tall_enough = (face_boxes[None, :, 3] - face_boxes[None, :, 1]) >= min_height * person_height[:, None]
    return ((inter / face_area[None] >= min_inside) & tall_enough).any(axis=1)


def faces_at(tracks: list[dict], frame: int) -> np.ndarray:
    """The faces stage's track boxes [F, 4] (clip pixels) at 25 fps frame `frame`."""
    boxes = [track["boxes"][track["frames"].index(frame)] for track in tracks if frame in track["frames"]]
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


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
    """Link detections across sampled frames: each track maps frame index -> detection index (TrackLinker)."""
    linker = TrackLinker(params)
    for boxes, time in zip(boxes_per_frame, times):
        linker.add(boxes, time)
    return linker.tracks


class TrackLinker:
    """Tracks built one sampled frame at a time, so that detection can stop once the clip is decided.

    Each frame's detections are matched one-to-one to the tracks seen within `track_max_gap_s`,
    greedily by cost (overlap with, centre shift and size change from the track's last box), so that
    a clear match is never traded for two poor ones; unmatched detections start new tracks. Each
    track maps frame index -> detection index.
    """

    def __init__(self, params: PeopleParams):
        self.params = params
        self.boxes: list[np.ndarray] = []
        self.times: list[float] = []
        self.tracks: list[dict[int, int]] = []

    def add(self, boxes: np.ndarray, time: float) -> None:
        """The next frame's boxes [N, 4], seen at `time` seconds."""
        t = len(self.boxes)
        self.boxes.append(boxes)
        self.times.append(time)
        live = [track for track in self.tracks if time - self.times[max(track)] <= self.params.track_max_gap_s]
        last_boxes = np.array([self.boxes[max(track)][track[max(track)]] for track in live]).reshape(-1, 4)
        cost = _match_cost(last_boxes, boxes, self.params)
        matched_tracks, matched = set(), set()
        for row, col in zip(*np.unravel_index(np.argsort(cost, axis=None), cost.shape)):
            if cost[row, col] < _UNMATCHABLE and row not in matched_tracks and col not in matched:
                live[row][t] = int(col)
                matched_tracks.add(row)
                matched.add(col)
        self.tracks.extend({t: d} for d in range(len(boxes)) if d not in matched)


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
