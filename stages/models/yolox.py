"""YOLOX person detector on ONNX Runtime (the Megvii YOLOX export: raw head output, decoded here), a
PersonDetector (stages/models/pose.py).

The exported graph takes `images` [1, 3, S, S] float, BGR 0-255 (no normalisation), letterboxed:
resized by one ratio to fit S x S, placed top-left, padded with 114. It outputs [1, A, 5 + C] raw
per anchor point (cx, cy offsets in grid cells, log w, log h, objectness, class scores) over the
stride 8/16/32 grids; boxes are decoded as in YOLOX's demo_postprocess.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import onnxruntime as ort

from stages.models.boxes import box_iou

PERSON_CLASS = 0
STRIDES = (8, 16, 32)
LETTERBOX_FILL = 114


@dataclass
class Detections:
    """Boxes [N, 4] x1, y1, x2, y2 in the input image's pixels and their scores [N], best first."""

    boxes: np.ndarray
    scores: np.ndarray


class YoloxPersonDetector:
    def __init__(self, model_path: str, score_threshold: float = 0.3, nms_iou_threshold: float = 0.45,
                 num_threads: int = 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_size = int(model_input.shape[2])
        self.score_threshold = score_threshold
        self.nms_iou_threshold = nms_iou_threshold
        self.grid, self.grid_strides = anchor_grid(self.input_size)

    def detect(self, image_rgb: np.ndarray) -> Detections:
        """People in one RGB uint8 image [H, W, 3]."""
        blob, ratio = letterbox(image_rgb, self.input_size)
        raw = self.session.run(None, {self.input_name: blob})[0][0]
        boxes, scores = decode_person_boxes(raw, self.grid, self.grid_strides)
        keep = scores > self.score_threshold
        boxes, scores = boxes[keep] / ratio, scores[keep]
        height, width = image_rgb.shape[:2]
        boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
        order = nms(boxes, scores, self.nms_iou_threshold)
        return Detections(boxes=boxes[order], scores=scores[order].astype(np.float32))


def letterbox(image_rgb: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """The [1, 3, size, size] float32 network input (BGR planes) and the resize ratio (input px per image px)."""
    height, width = image_rgb.shape[:2]
    ratio = min(size / height, size / width)
    resized = cv2.resize(image_rgb, (int(width * ratio), int(height * ratio)), interpolation=cv2.INTER_LINEAR)
    blob = np.full((1, 3, size, size), LETTERBOX_FILL, dtype=np.float32)
    # resized straight into the planes, channels reversed there: half the time of swapping on the
    # image and converting a whole uint8 canvas, the same values
    blob[0, :, :resized.shape[0], :resized.shape[1]] = resized.transpose(2, 0, 1)[::-1]
    return blob, ratio


def anchor_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell coordinates [A, 2] (x, y) and strides [A, 1] of every anchor point, in the export's order
    (stride by stride, row-major within each)."""
    cells, strides = [], []
    for stride in STRIDES:
        side = size // stride
        xs, ys = np.meshgrid(np.arange(side), np.arange(side))
        cells.append(np.stack([xs, ys], axis=-1).reshape(-1, 2))
        strides.append(np.full((side * side, 1), stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)


def decode_person_boxes(raw: np.ndarray, grid: np.ndarray, strides: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw head output [A, 5 + C] to xyxy boxes [A, 4] in network-input pixels and person scores [A]
    (objectness x person class probability, as YOLOX scores a class)."""
    centres = (raw[:, :2] + grid) * strides
    sizes = np.exp(raw[:, 2:4]) * strides
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    return boxes, raw[:, 4] * raw[:, 5 + PERSON_CLASS]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        order = rest[box_iou(boxes[best][None], boxes[rest])[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
