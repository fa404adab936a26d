"""references: a full-body and a face reference image per identity, from the clip's own frames.

Among frames sampled at `sample_fps` (native size), each identity's reference frame is one where its
mask (masks.npz) is confident (>= 0.5) and, when the faces stage ran, holds a face track's box centre;
among those, the one with the largest confidence x mask area. Without any such frame the identity
has no reference.

* ref_<i>.png: the frame's pixels inside the identity's mask (upsampled to the frame) on a white
  background, cropped to the mask's box plus `margin`.
* face_<i>.png: a square head crop of `head_scale` x the head size around the head: the face track's
  box when the faces stage ran, else the head estimated from the people stage's pose keypoints
  (pose.npz, the sample nearest in time within `max_pose_gap_s`): centred on the visible nose, eyes
  and ears, sized from the ear, eye or shoulder distance.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field

from curation.stage import ClipFrames, FrameSpec, Item, Params, Resources, Stage
from stages.masks import CONFIDENT, clip_frame_indices
from stages.models.sam2_video import mask_bounding_boxes

FACES_FPS = 25.0  # the faces stage's timeline
_TIME_EPS = 1e-6  # seconds; curation.frames' tolerance when it samples frames at a rate
NOSE, LEFT_EYE, RIGHT_EYE, LEFT_EAR, RIGHT_EAR, LEFT_SHOULDER, RIGHT_SHOULDER = 0, 1, 2, 3, 4, 5, 6
HEAD_KEYPOINTS = [NOSE, LEFT_EYE, RIGHT_EYE, LEFT_EAR, RIGHT_EAR]
# head width per keypoint distance, from adult proportions: ears ~ the head's width, eyes ~ 0.4 of
# it, shoulders ~ 2.5 heads
HEAD_PER_DISTANCE = {(LEFT_EAR, RIGHT_EAR): 1.0, (LEFT_EYE, RIGHT_EYE): 2.5, (LEFT_SHOULDER, RIGHT_SHOULDER): 0.4}
WHITE = 255


class ReferencesParams(Params):
    sample_fps: float = Field(2.0, gt=0, description="frames per second considered for the reference images")
    margin: float = Field(0.05, ge=0, description="margin around the mask's box in the full-body reference, as a fraction of the box's longer side")
    head_scale: float = Field(1.8, gt=0, description="side of the square head crop as a multiple of the face box's longer side or of the head width estimated from the pose")
    keypoint_threshold: float = Field(0.3, ge=0, le=1, description="pose keypoints at or above this score place the head")
    max_pose_gap_s: float = Field(0.5, ge=0, description="the pose sample used for the head crop is at most this far in time from the reference frame")
    reject_missing: bool = Field(True, description="reject clips in which some identity has no confident frame for its reference (no_reference)")


class References(Stage):
    name = "references"
    requires = ("masks",)
    adds_members = ("ref_*.png", "face_*.png")
    Params = ReferencesParams

    def resources(self) -> Resources:
        return Resources(cpus=1, memory_gb=1.5)

    def frame_specs(self) -> list[FrameSpec]:
        return [FrameSpec(fps=self.params.sample_fps, max_side=None)]

    def process_item(self, item: Item) -> None:
        if "masks.npz" not in item.members:
            self.reject(item, "no_masks", "references needs the masks stage's masks.npz")
            return
        frames = item.frames[self.frame_specs()[0]]
        if len(frames.images) == 0:
            self.reject(item, "no_frames", "no frame was decoded from the clip")
            return
        masks, conf = _load(item.members["masks.npz"], "masks", "conf")
        samples = Samples.of(item, frames)
        identities = [self._reference(item, i, masks[i][samples.indices], conf[i][samples.indices].astype(np.float32),
                                      samples) for i in range(len(masks))]
        missing = [meta["id"] for meta in identities if meta["frame"] is None]
        self.record(item, {"identities": identities}, n_references=len(identities) - len(missing),
                    n_face_references=sum(meta["face_source"] is not None for meta in identities))
        if missing and self.params.reject_missing:
            self.reject(item, "no_reference", f"identities {missing} have no frame with a confident mask")

    def _reference(self, item: Item, identity: int, masks: np.ndarray, conf: np.ndarray, samples: Samples) -> dict:
        """Pick the identity's sample (its masks [S, h, w] and conf [S] on them) and write its images."""
        faces = None if samples.faces is None else [_face_inside(boxes, mask, samples.images.shape[1:3])
                                                    for boxes, mask in zip(samples.faces, masks)]
        area = masks.reshape(len(masks), -1).mean(axis=1)
        best = best_frame(conf, area, None if faces is None else np.array([box is not None for box in faces]))
        meta = {"id": identity, "frame": None, "face_source": None}
        if best is None:
            return meta
        image = samples.images[best]
        mask = upsample_mask(masks[best], image.shape[:2])
        if not mask.any():  # a few low-resolution pixels can vanish at the 0.5 threshold
            return meta
        reference = full_body_reference(image, mask, self.params.margin)
        item.members[f"ref_{identity}.png"] = _png(reference)
        meta.update(frame=int(samples.indices[best]), conf=round(float(conf[best]), 4),
                    area=round(float(area[best]), 4), ref_size=[reference.shape[1], reference.shape[0]])
        head, source = self._head(identity, best, None if faces is None else faces[best], samples)
        if head is not None:
            face = square_crop(image, head)
            item.members[f"face_{identity}.png"] = _png(face)
            meta.update(face_source=source, face_size=[face.shape[1], face.shape[0]])
        return meta

    def _head(self, identity: int, sample: int, face_box: np.ndarray | None,
              samples: Samples) -> tuple[np.ndarray | None, str | None]:
        """The head crop's (centre x, centre y, side) in the sample's pixels, and where it came from."""
        p = self.params
        if face_box is not None:
            centre = (face_box[:2] + face_box[2:]) / 2
            return np.array([*centre, p.head_scale * np.max(face_box[2:] - face_box[:2])]), "faces"
        if samples.keypoints is None or identity >= len(samples.keypoints):
            return None, None
        frame = samples.indices[sample]
        nearest = int(np.argmin(np.abs(samples.pose_frames - frame)))
        if abs(int(samples.pose_frames[nearest]) - int(frame)) / samples.fps > p.max_pose_gap_s:
            return None, None
        head = head_from_keypoints(samples.keypoints[identity, nearest].astype(np.float32), p.keypoint_threshold)
        if head is None:
            return None, None
        return np.array([head[0], head[1], p.head_scale * head[2]]) * samples.scale, "pose"


@dataclass
class Samples:
    """What the sampled frames show: images [S, H, W, 3], their clip frame indices [S] at the clip's fps,
    the scale from clip pixels to theirs, the face tracks' boxes on each (in their pixels; None without
    the faces stage), and the people stage's keypoints [N, T_pose, 17, 3] (clip pixels) on its clip
    frames pose_frames [T_pose] (None without the people stage)."""

    images: np.ndarray
    indices: np.ndarray
    scale: float
    fps: float
    faces: list[np.ndarray] | None
    keypoints: np.ndarray | None
    pose_frames: np.ndarray | None

    @classmethod
    def of(cls, item: Item, frames: ClipFrames) -> Samples:
        clip = item.meta["clips"]
        faces = None
        if "faces" in item.meta:
            faces = [boxes * frames.scale for boxes in face_boxes_at(item.meta["faces"]["tracks"], frames.times)]
        keypoints = pose_frames = None
        if "pose.npz" in item.members:
            keypoints, pose_frames = _load(item.members["pose.npz"], "kpts", "frames")
        return cls(frames.images, clip_frame_indices(frames.times, clip["fps"], clip["n_frames"]), frames.scale,
                   clip["fps"], faces, keypoints, pose_frames)


def best_frame(conf: np.ndarray, area: np.ndarray, has_face: np.ndarray | None) -> int | None:
    """Index of the sample with a confident, non-empty mask (with a face in it, when faces are known
    and some such sample has one) and the largest conf x area; None when no sample qualifies."""
    usable = (conf >= CONFIDENT) & (area > 0)
    if has_face is not None and (usable & has_face).any():
        usable &= has_face
    if not usable.any():
        return None
    return int(np.argmax(np.where(usable, conf * area, -1.0)))


def face_boxes_at(tracks: list[dict], times: np.ndarray) -> list[np.ndarray]:
    """Per sampled frame (times in seconds), the face tracks' boxes [K, 4] (clip pixels) on it: those of
    the last 25 fps frame at or before its time (the faces stage's frame k shows the first decoded
    frame at or after k / 25 s)."""
    boxes: list[list] = [[] for _ in times]
    for track in tracks:
        by_frame = dict(zip(track["frames"], track["boxes"]))
        for s, time in enumerate(times):
            box = by_frame.get(int(np.floor(time * FACES_FPS + _TIME_EPS)))
            if box is not None:
                boxes[s].append(box)
    return [np.asarray(frame_boxes, dtype=np.float32).reshape(-1, 4) for frame_boxes in boxes]


def _face_inside(boxes: np.ndarray, mask: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray | None:
    """The largest face box (frame pixels) whose centre falls inside mask [h, w] (covering the frame)."""
    if not len(boxes):
        return None
    height, width = frame_size
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    cols = np.clip((centre[:, 0] * mask.shape[1] / width).astype(int), 0, mask.shape[1] - 1)
    rows = np.clip((centre[:, 1] * mask.shape[0] / height).astype(int), 0, mask.shape[0] - 1)
    inside = mask[rows, cols] > 0
    if not inside.any():
        return None
    sides = np.max(boxes[:, 2:] - boxes[:, :2], axis=1)
    return boxes[np.argmax(np.where(inside, sides, -1))]


def head_from_keypoints(keypoints: np.ndarray, threshold: float) -> np.ndarray | None:
    """(centre x, centre y, head width) from COCO-17 keypoints [17, 3]: centred on the visible nose,
    eyes and ears, the width from the widest visible pair in HEAD_PER_DISTANCE; None when fewer than two
    head points or no such pair is visible."""
    visible = (keypoints[:, 2] >= threshold) & np.isfinite(keypoints[:, 0])
    head_points = [k for k in HEAD_KEYPOINTS if visible[k]]
    widths = [factor * float(np.linalg.norm(keypoints[a, :2] - keypoints[b, :2]))
              for (a, b), factor in HEAD_PER_DISTANCE.items() if visible[a] and visible[b]]
    if len(head_points) < 2 or not widths or max(widths) <= 0:
        return None
    centre = keypoints[head_points, :2].mean(axis=0)
    return np.array([centre[0], centre[1], max(widths)], dtype=np.float32)


def upsample_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A low-resolution mask [h, w] at size (height, width), bool, with bilinear edges."""
    resized = cv2.resize(mask.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return resized >= 0.5


def full_body_reference(image: np.ndarray, mask: np.ndarray, margin: float) -> np.ndarray:
    """The masked pixels of image [H, W, 3] on white, cropped to the mask's box plus margin x its longer side."""
    box = mask_bounding_boxes(mask[None], mask.shape)[0]
    pad = margin * np.max(box[2:] - box[:2])
    x1, y1 = np.floor(np.maximum(box[:2] - pad, 0)).astype(int)
    x2, y2 = np.ceil(np.minimum(box[2:] + pad, [mask.shape[1], mask.shape[0]])).astype(int)
    on_white = np.where(mask[..., None], image, np.uint8(WHITE))
    return np.ascontiguousarray(on_white[y1:y2, x1:x2])


def square_crop(image: np.ndarray, head: np.ndarray) -> np.ndarray:
    """The square (centre x, centre y, side) of image, clipped to the image."""
    half = head[2] / 2
    x1, y1 = np.floor(np.maximum(head[:2] - half, 0)).astype(int)
    x2 = int(np.ceil(min(head[0] + half, image.shape[1])))
    y2 = int(np.ceil(min(head[1] + half, image.shape[0])))
    return np.ascontiguousarray(image[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)])


def _load(npz: bytes, *names: str) -> tuple[np.ndarray, ...]:
    with np.load(io.BytesIO(npz)) as arrays:
        return tuple(arrays[name] for name in names)


def _png(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"PNG encoding failed for an image of shape {rgb.shape}")
    return encoded.tobytes()
