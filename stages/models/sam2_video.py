"""SAM2 video tracking of box-prompted objects (transformers' Sam2VideoModel from a local checkpoint).

One pass over the frames, in order. The image encoder runs on `batch_size` frames at once and its
features go into the inference session's feature cache, so the per-frame step (memory attention,
mask decoder, memory encoder) never re-encodes a frame. On a frame with detections, the tracked
objects are stepped first; a detection whose box overlaps no tracked object's mask by
`new_object_iou` starts a new object, box-prompted on that frame (a conditioning frame, as a user's
box would be). The session keeps only what SAM2 reads again: the conditioning frames and the last
max(num_maskmem, max_object_pointers_in_encoder) tracked frames of each object, without their
full-resolution masks.

Outputs per tracked frame: each object's mask logits resized to the requested output size, and its
presence probability, the sigmoid of SAM2's object score logit (SAM2 itself treats a logit above 0,
probability above 0.5, as the object being visible).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import Sam2VideoModel
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from stages.models.image_preprocessing import Normalisation, sam2_pixels
from stages.models.boxes import box_iou

ABSENT_LOGIT = -20.0  # mask logit of an object on frames before it was found (sigmoid ~ 2e-9)
BOX_LABELS = (2, 3)  # SAM's point labels of a box's top-left and bottom-right corners
NEW_OBJECT = -1


@dataclass
class TrackedObjects:
    """logits [O, T, h, w] float16 mask logits at the output size (> 0 inside); presence [O, T]
    float32 (0 before the object was found); first_frame [O] the frame each object was found on;
    detection_objects: per frame with detections, the object each detection became or continued
    (NEW_OBJECT when it was dropped at the max_objects limit)."""

    logits: np.ndarray
    presence: np.ndarray
    first_frame: np.ndarray
    detection_objects: dict[int, np.ndarray]


class Sam2VideoTracker:
    def __init__(self, folder: str | Path, device: str, dtype: torch.dtype, batch_size: int,
                 new_object_iou: float, max_objects: int):
        self.model = Sam2VideoModel.from_pretrained(folder, dtype=dtype).to(device).eval()
        config = self.model.config
        self.image_size = config.image_size
        self.memory_frames = max(config.num_maskmem, config.max_object_pointers_in_encoder)
        self.norm = Normalisation.of_checkpoint(folder)
        self.device, self.dtype = device, dtype
        self.batch_size, self.new_object_iou, self.max_objects = batch_size, new_object_iou, max_objects

    @torch.inference_mode()
    def track(self, frames: np.ndarray, boxes_at: dict[int, np.ndarray], out_size: tuple[int, int]) -> TrackedObjects:
        """Track through RGB frames [T, H, W, 3] uint8 the objects that the boxes [N, 4] (frame pixels)
        given for some frame indices find."""
        run = _TrackingRun(self, frames.shape[1:3], out_size)
        for start in range(0, len(frames), self.batch_size):
            pixels = sam2_pixels(frames[start:start + self.batch_size], self.image_size, self.norm, self.device,
                                 self.dtype)
            run.cache_features(start, pixels)
            for offset, frame_pixels in enumerate(pixels):
                run.step(start + offset, frame_pixels, boxes_at.get(start + offset))
        return run.result(len(frames))


@dataclass
class _FrameOutput:
    logits: torch.Tensor  # [O_t, h, w] float16 on the device, objects 0..O_t-1 known at that frame
    presence: torch.Tensor  # [O_t]


@dataclass
class _TrackingRun:
    tracker: Sam2VideoTracker
    frame_size: tuple[int, int]
    out_size: tuple[int, int]
    outputs: dict[int, _FrameOutput] = field(default_factory=dict)
    first_frame: list[int] = field(default_factory=list)
    detection_objects: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        tracker = self.tracker
        self.session = Sam2VideoInferenceSession(
            video_height=self.frame_size[0], video_width=self.frame_size[1], inference_device=tracker.device,
            inference_state_device=tracker.device, video_storage_device=tracker.device, dtype=tracker.dtype,
            max_vision_features_cache_size=tracker.batch_size)

    def cache_features(self, start: int, pixels: torch.Tensor) -> None:
        """Encode a batch of frames at once and hand each frame's features to the session's cache."""
        features = self.tracker.model.get_image_features(pixels)
        for offset in range(len(pixels)):
            self.session.cache.cache_vision_features(start + offset, {
                "vision_feats": [level[:, offset:offset + 1] for level in features.fpn_hidden_states],
                "vision_pos_embeds": [level[:, offset:offset + 1] for level in features.fpn_position_encoding]})

    def step(self, index: int, pixels: torch.Tensor, boxes: np.ndarray | None) -> None:
        if boxes is not None and len(boxes):
            self._step_with_detections(index, pixels, boxes)
        elif self.first_frame:
            self._forward(index, pixels)
        self._prune(index)

    def _step_with_detections(self, index: int, pixels: torch.Tensor, boxes: np.ndarray) -> None:
        """Step the tracked objects, then start new objects from the detections none of them covers."""
        objects = np.full(len(boxes), NEW_OBJECT)
        if self.first_frame:
            output = self._forward(index, pixels)
            objects = self._continued_objects(boxes, output)
        room = max(0, self.tracker.max_objects - len(self.first_frame))
        new = np.flatnonzero(objects == NEW_OBJECT)[:room]
        if len(new):
            for detection in new:
                objects[detection] = self._add_object(index, boxes[detection])
            self.session.obj_with_new_inputs = [int(objects[d]) for d in new]
            self._forward(index, pixels)
        self.detection_objects[index] = objects

    def _continued_objects(self, boxes: np.ndarray, output: _FrameOutput) -> np.ndarray:
        """Per detection, the tracked object whose mask box overlaps it most, if by new_object_iou."""
        mask_boxes = mask_bounding_boxes(output.logits.float().cpu().numpy() > 0, self.frame_size)
        visible = (output.presence.cpu().numpy() > 0.5) & np.isfinite(mask_boxes[:, 0])
        iou = box_iou(boxes, np.nan_to_num(mask_boxes)) * visible[None]
        return np.where(iou.max(axis=1) >= self.tracker.new_object_iou, iou.argmax(axis=1), NEW_OBJECT)

    def _add_object(self, index: int, box: np.ndarray) -> int:
        object_id = len(self.first_frame)
        height, width = self.frame_size
        side = self.tracker.image_size
        corners = torch.tensor(box, dtype=torch.float32).reshape(1, 1, 2, 2)
        corners *= torch.tensor([side / width, side / height])
        self.session.add_point_inputs(self.session.obj_id_to_idx(object_id), index, {
            "point_coords": corners, "point_labels": torch.tensor([[BOX_LABELS]], dtype=torch.int32)})
        self.first_frame.append(index)
        return object_id

    def _forward(self, index: int, pixels: torch.Tensor) -> _FrameOutput:
        result = self.tracker.model(inference_session=self.session, frame_idx=index, frame=pixels)
        logits = F.interpolate(result.pred_masks.float(), size=self.out_size, mode="bilinear", align_corners=False,
                               antialias=True)[:, 0]
        output = _FrameOutput(logits.half(), result.object_score_logits.float().reshape(-1).sigmoid())
        self.outputs[index] = output
        return output

    def _prune(self, index: int) -> None:
        """Drop what SAM2 never reads again: older tracked frames, full-resolution masks, past frames' pixels."""
        oldest_kept = index - self.tracker.memory_frames
        for per_object in self.session.output_dict_per_obj.values():
            tracked = per_object["non_cond_frame_outputs"]
            for frame in [frame for frame in tracked if frame < oldest_kept]:
                del tracked[frame]
            for stored in [*tracked.values(), *per_object["cond_frame_outputs"].values()]:
                stored.pop("high_res_masks", None)
        for frame in [frame for frame in self.session.processed_frames or {} if frame < index]:
            del self.session.processed_frames[frame]

    def result(self, n_frames: int) -> TrackedObjects:
        n_objects = len(self.first_frame)
        logits = np.full((n_objects, n_frames, *self.out_size), ABSENT_LOGIT, dtype=np.float16)
        presence = np.zeros((n_objects, n_frames), dtype=np.float32)
        for index, output in self.outputs.items():
            known = len(output.presence)
            logits[:known, index] = output.logits.cpu().numpy()
            presence[:known, index] = output.presence.cpu().numpy()
        return TrackedObjects(logits, presence, np.asarray(self.first_frame, dtype=np.int64), self.detection_objects)


def mask_bounding_boxes(masks: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Boxes [N, 4] (x1, y1, x2, y2 in pixels of a frame of frame_size (height, width)) around masks
    [N, h, w] bool; NaN for empty masks."""
    n, height, width = masks.shape
    boxes = np.full((n, 4), np.nan, dtype=np.float32)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    scale = np.array([frame_size[1] / width, frame_size[0] / height] * 2, dtype=np.float32)
    for i in range(n):
        if rows[i].any():
            ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
            boxes[i] = np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=np.float32) * scale
    return boxes
