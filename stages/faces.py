"""faces: face detection on every frame at 25 fps, face tracks, and the face crops the speaker models read.

YuNet finds faces in each decoded frame (OpenCV's FaceDetectorYN on a fixed-size file, or onnxruntime on
a dynamic-shape file); the detections are put on a 25 fps timeline (frame k shows the first decoded
frame at or after k / 25 s, as curation.frames samples), linked into tracks by IoU with short gaps
filled by interpolation, and each track is cropped the way Light-ASD crops faces.

Hand-off to later stages (the `speakers` stage reads these):
* meta["faces"]["tracks"]: [{"id", "frames": 25 fps clip frame indices, "boxes": [x1, y1, x2, y2] in
  clip pixels per frame, "mean_score": mean detection score}], ordered by first frame, then left to right;
* arrays "faces.track<id>.gray112" uint8 [T, 112, 112] (Light-ASD's input) and
  "faces.track<id>.rgb224" uint8 [T, 224, 224, 3] (the same crop in colour, for SyncNet).
Scores: n_tracks, max_faces_per_frame (most tracks present in one frame).
"""
from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from curation.stage import ClipFrames, FrameSpec, Item, Params, Resources, Stage, WeightFile
from stages.models.face_tracking import FaceTrack, crop_face, crop_parameters, gray_centre_112, track_faces
from stages.models.yunet import FaceDetections, YuNetOnnx, YuNetOpenCV, fixed_input_size

FPS = 25.0  # Light-ASD and SyncNet read faces at 25 fps
_TIME_EPS = 1e-6  # seconds; curation.frames' tolerance when it samples frames at a rate


class FacesParams(Params):
    backend: Literal["opencv", "onnxruntime"] = Field("opencv", description="opencv: a fixed-size YuNet file in cv2.FaceDetectorYN, the frame letterboxed to its input; onnxruntime: a dynamic-shape file at the frame's own size")
    model_path: WeightFile = Field(None, description="a YuNet ONNX file: yunet_n_320_320.onnx for backend opencv, yunet_n_dynamic.onnx for onnxruntime")
    score_threshold: float = Field(0.5, ge=0, le=1, description="minimum YuNet face score sqrt(cls * obj)")
    nms_threshold: float = Field(0.3, gt=0, le=1, description="IoU above which the weaker of two face boxes is suppressed")
    max_side: int | None = Field(None, ge=64, description="longer side of the frames the detector and the crops see (null: the clip's size)")
    frames_per_batch: int = Field(8, ge=1, description="frames per detector call (onnxruntime runs them as one batch)")
    num_threads: int = Field(1, ge=1, description="CPU threads of the detector")
    min_face_size: float = Field(32.0, ge=0, description="detections whose longer box side is below this many clip pixels are ignored")
    iou_threshold: float = Field(0.3, ge=0, le=1, description="a detection continues a track when its IoU with the track's last detection exceeds this")
    max_gap: int = Field(10, ge=0, description="most consecutive 25 fps frames without a detection that a track bridges (filled by interpolation)")
    min_track_frames: int = Field(10, ge=1, description="tracks with fewer detected frames are dropped")
    min_track_score: float = Field(0.75, ge=0, le=1, description="tracks whose mean detection score is below this are dropped (the backs of heads and cartoon faces on the test footage score 0.5 to 0.7, real faces 0.85 and more)")
    crop_scale: float = Field(0.4, ge=0, description="Light-ASD's cropScale: margin around the face in the crops, in half face sizes")
    reject_no_faces: bool = Field(True, description="reject clips without any face track (no_faces); false keeps them with an empty track list")


class Faces(Stage):
    name = "faces"
    adds_arrays = ("faces.track*.rgb224", "faces.track*.gray112")
    Params = FacesParams

    def resources(self) -> Resources:
        return Resources(cpus=self.params.num_threads, memory_gb=1.5)

    def frame_specs(self) -> list[FrameSpec]:
        return [FrameSpec(fps=FPS, max_side=self.params.max_side)]

    def setup(self) -> None:
        path = self.weights("model_path")
        if self.params.backend == "opencv":
            size = fixed_input_size(path)
            if size is None:
                raise ValueError(f"faces.model_path {path} has a dynamic input size: use a fixed-size file "
                                 "(yunet_n_320_320.onnx) with backend opencv, or set faces.backend: onnxruntime")
            cv2.setNumThreads(self.params.num_threads)  # process-wide: OpenCV otherwise takes every core
            self.detector = YuNetOpenCV(path, size, self.params.score_threshold, self.params.nms_threshold)
        else:
            self.detector = YuNetOnnx(path, self.params.score_threshold, self.params.nms_threshold,
                                      self.params.num_threads)

    def process_item(self, item: Item) -> None:
        clip = item.frames[self.frame_specs()[0]]
        if len(clip.images) == 0:
            self.record(item, {"tracks": []}, n_tracks=0, max_faces_per_frame=0)
            self.reject(item, "no_frames", "no video frame was decoded")
            return
        detections = self.detect(clip.images)
        timeline = frames_at_fps(clip.times, _duration(item, clip), FPS)
        tracks = [track for track in track_faces(*self._usable(detections, clip.scale, timeline),
                                                 self.params.iou_threshold, self.params.max_gap,
                                                 self.params.min_track_frames)
                  if track.mean_score >= self.params.min_track_score]
        self.record(item, {"tracks": [_track_meta(index, track) for index, track in enumerate(tracks)]},
                    n_tracks=len(tracks), max_faces_per_frame=_max_overlap(tracks, len(timeline)))
        for index, track in enumerate(tracks):
            rgb224 = self._crops(clip, timeline, track)
            item.arrays[f"faces.track{index}.rgb224"] = rgb224
            item.arrays[f"faces.track{index}.gray112"] = np.stack([gray_centre_112(face) for face in rgb224])
        if not tracks and self.params.reject_no_faces:
            self.reject(item, "no_faces", _no_face_detail(detections, clip.scale, self.params))

    def detect(self, images: np.ndarray) -> list[FaceDetections]:
        step = self.params.frames_per_batch
        return [found for start in range(0, len(images), step)
                for found in self.detector.detect(images[start:start + step])]

    def _usable(self, detections: list[FaceDetections], scale: float,
                timeline: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per 25 fps frame: boxes in clip pixels and scores of the faces large enough to track."""
        boxes, scores = [], []
        for found in (detections[index].scaled(1.0 / scale) for index in timeline):
            large = _longer_side(found.boxes) >= self.params.min_face_size
            boxes.append(found.boxes[large])
            scores.append(found.scores[large])
        return boxes, scores

    def _crops(self, clip: ClipFrames, timeline: np.ndarray, track: FaceTrack) -> np.ndarray:
        # crop in the decoded frames' pixels: with max_side unset these are the clip's own, as in Light-ASD
        centre_x, centre_y, half_size = crop_parameters(track.boxes * clip.scale)
        return np.stack([crop_face(clip.images[timeline[frame]], centre_x[i], centre_y[i], half_size[i],
                                   self.params.crop_scale)
                         for i, frame in enumerate(track.frames)])


def frames_at_fps(times: np.ndarray, duration: float, fps: float) -> np.ndarray:
    """For each frame k of a `fps` timeline covering `duration` seconds, the index of the decoded frame
    (at `times`, ascending) that shows it: the first at or after k / fps, as curation.frames picks
    them (so for sources of at least `fps` this is frame k itself; sparser sources repeat frames)."""
    targets = np.arange(max(1, round(duration * fps))) / fps
    return np.searchsorted(times, targets - _TIME_EPS).clip(max=len(times) - 1)


def _duration(item: Item, clip: ClipFrames) -> float:
    clip_meta = item.meta.get("clips") or {}
    return float(clip_meta.get("duration") or clip.times[-1] + 1 / FPS)


def _longer_side(boxes: np.ndarray) -> np.ndarray:
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def _track_meta(index: int, track: FaceTrack) -> dict:
    return {"id": index, "frames": track.frames.tolist(),
            "boxes": np.round(track.boxes, 2).tolist(), "mean_score": round(track.mean_score, 4)}


def _max_overlap(tracks: list[FaceTrack], n_frames: int) -> int:
    present = np.zeros(n_frames, dtype=np.int64)
    for track in tracks:
        present[track.frames] += 1
    return int(present.max(initial=0))


def _no_face_detail(detections: list[FaceDetections], scale: float, params: FacesParams) -> str:
    found = [found.scaled(1.0 / scale) for found in detections if len(found.boxes)]
    if not found:
        return f"no face scored {params.score_threshold} or more in {len(detections)} frames"
    largest = max(float(_longer_side(f.boxes).max()) for f in found)
    return (f"faces in {len(found)} of {len(detections)} frames (largest {largest:.0f} px, minimum "
            f"{params.min_face_size:.0f} px) formed no track of {params.min_track_frames} detected frames "
            f"with a mean score of {params.min_track_score} or more")
