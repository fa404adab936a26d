"""YuNet face detector (libfacedetection.train ONNX files) with two runtimes.

`YuNetOpenCV` runs a fixed-size file (e.g. yunet_n_320_320.onnx) in `cv2.FaceDetectorYN`, letterboxing
each frame to the file's input size. `YuNetOnnx` runs a dynamic-shape file (yunet_n_dynamic.onnx, which
OpenCV 4.14 cannot load) in onnxruntime at the frame's own size, with the output decode re-implemented
from OpenCV's `FaceDetectorYN::postProcess`. Both take RGB uint8 frames and return boxes in the pixels
of the frame they were given.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import onnxruntime as ort

STRIDES = (8, 16, 32)
DIVISOR = 32  # the network's total stride: input sides must be multiples of it
TOP_K = 5000  # OpenCV's default cap on boxes kept by NMS


@dataclass
class FaceDetections:
    """Faces found in one frame: boxes [N, 4] x1 y1 x2 y2, scores [N], landmarks [N, 5, 2]
    (right eye, left eye, nose tip, right and left mouth corner), all float32 in frame pixels."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @classmethod
    def empty(cls) -> FaceDetections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))

    def scaled(self, factor: float) -> FaceDetections:
        """The same detections with every coordinate multiplied by `factor`."""
        return FaceDetections(self.boxes * factor, self.scores, self.landmarks * factor)


def decode_outputs(outputs: dict[str, np.ndarray], pad_w: int, pad_h: int, score_threshold: float,
                   nms_threshold: float) -> FaceDetections:
    """Decode one image's raw YuNet outputs (names cls_8 ... kps_32, batch axis removed) the way
    OpenCV's FaceDetectorYN does: score = sqrt(clip(cls) * clip(obj)); anchor-free boxes per grid
    cell, centre (col + dx, row + dy) * stride and size exp(dw, dh) * stride; then NMS."""
    boxes, scores, landmarks = [], [], []
    for stride in STRIDES:
        cols = pad_w // stride  # cells run row by row, cols per row
        cls = np.clip(outputs[f"cls_{stride}"][:, 0], 0.0, 1.0)
        obj = np.clip(outputs[f"obj_{stride}"][:, 0], 0.0, 1.0)
        score = np.sqrt(cls * obj)
        keep = np.flatnonzero(score >= score_threshold)
        if keep.size == 0:
            continue
        cell = np.stack([keep % cols, keep // cols], axis=1).astype(np.float32)
        bbox = outputs[f"bbox_{stride}"][keep]
        centre = (cell + bbox[:, :2]) * stride
        size = np.exp(bbox[:, 2:4]) * stride
        boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
        scores.append(score[keep])
        landmarks.append((outputs[f"kps_{stride}"][keep].reshape(-1, 5, 2) + cell[:, None, :]) * stride)
    if not boxes:
        return FaceDetections.empty()
    found = FaceDetections(np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32),
                           np.concatenate(landmarks).astype(np.float32))
    keep = _nms(found.boxes, found.scores, score_threshold, nms_threshold)
    return FaceDetections(found.boxes[keep], found.scores[keep], found.landmarks[keep])


def _nms(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, nms_threshold: float) -> np.ndarray:
    # OpenCV truncates the boxes to integer x, y, w, h before its NMS; doing the same keeps the same faces.
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.int32)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), score_threshold, nms_threshold, top_k=TOP_K)
    return np.asarray(keep, dtype=np.int64).reshape(-1)


class YuNetOnnx:
    """A dynamic-shape YuNet file in onnxruntime, run at the frame's own size (padded with black on the
    right and bottom to a multiple of 32, as FaceDetectorYN pads)."""

    def __init__(self, model_path: str, score_threshold: float, nms_threshold: float, threads: int = 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        self.output_names = [output.name for output in self.session.get_outputs()]
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold

    def detect(self, frames_rgb: np.ndarray) -> list[FaceDetections]:
        """Faces in each of frames [B, H, W, 3] RGB uint8 (one size), in frame pixels."""
        if len(frames_rgb) == 0:
            return []
        _, height, width, _ = frames_rgb.shape
        pad_h, pad_w = _round_up(height, DIVISOR), _round_up(width, DIVISOR)
        blob = np.zeros((len(frames_rgb), 3, pad_h, pad_w), np.float32)
        blob[:, :, :height, :width] = frames_rgb[..., ::-1].transpose(0, 3, 1, 2)  # the network wants BGR
        raw = self.session.run(self.output_names, {"input": blob})
        return [decode_outputs({name: value[b] for name, value in zip(self.output_names, raw)},
                               pad_w, pad_h, self.score_threshold, self.nms_threshold)
                for b in range(len(frames_rgb))]


class YuNetOpenCV:
    """A fixed-size YuNet file in cv2.FaceDetectorYN. Each frame is scaled so its longer side fits the
    file's input, placed top-left on a black canvas of that size, and the boxes are scaled back."""

    def __init__(self, model_path: str, input_size: tuple[int, int], score_threshold: float,
                 nms_threshold: float):
        self.input_size = input_size
        self.detector = cv2.FaceDetectorYN.create(model_path, "", input_size, score_threshold, nms_threshold,
                                                  TOP_K)

    def detect(self, frames_rgb: np.ndarray) -> list[FaceDetections]:
        """Faces in each of frames [B, H, W, 3] RGB uint8, in frame pixels."""
        return [self._detect_one(frame) for frame in frames_rgb]

    def _detect_one(self, frame_rgb: np.ndarray) -> FaceDetections:
        height, width = frame_rgb.shape[:2]
        scale = min(self.input_size[0] / width, self.input_size[1] / height)
        resized = cv2.resize(frame_rgb, (max(1, round(width * scale)), max(1, round(height * scale))),
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        canvas = np.zeros((self.input_size[1], self.input_size[0], 3), np.uint8)
        canvas[:resized.shape[0], :resized.shape[1]] = cv2.cvtColor(resized, cv2.COLOR_RGB2BGR)
        _, faces = self.detector.detect(canvas)
        if faces is None or len(faces) == 0:
            return FaceDetections.empty()
        boxes = np.concatenate([faces[:, 0:2], faces[:, 0:2] + faces[:, 2:4]], axis=1)
        found = FaceDetections(boxes.astype(np.float32), faces[:, 14].astype(np.float32),
                               faces[:, 4:14].reshape(-1, 5, 2).astype(np.float32))
        return found.scaled(1.0 / scale)


def fixed_input_size(model_path: str) -> tuple[int, int] | None:
    """(width, height) of a fixed-size YuNet file's input, or None for a dynamic-shape file."""
    shape = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    height, width = shape[2:4]
    return (width, height) if isinstance(width, int) and isinstance(height, int) else None


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple
