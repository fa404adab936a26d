"""RTMPose / DWPose top-down pose on ONNX Runtime, with rtmlib's pre- and post-processing: a PoseEstimator
(stages/models/pose.py), the people stage's pose_backend "rtmpose".

Pre-processing: each xyxy box becomes a centre and a scale (its size x `padding`), widened or heightened
to the model's aspect ratio, and that rectangle is warped to the input size; pixels are RGB (mmpose
trains RTMPose with bgr_to_rgb) normalised by ImageNet mean and std in 0-255 units.
Post-processing (SimCC): the model gives, per keypoint, a 1-D classification over x bins and over y
bins, `split_ratio` bins per input pixel; the location is the argmax of each, the score the smaller
of the two maxima. DWPose whole-body models give 133 keypoints; the first 17 are the COCO body.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import cv2
import numpy as np
import onnxruntime as ort

if TYPE_CHECKING:
    from curation.stage import WeightPath
    from stages.people import PeopleParams

N_BODY_KEYPOINTS = 17
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)

# network input [1, 3, H, W] float32 -> (simcc_x [1, K, W * ratio], simcc_y [1, K, H * ratio])
SimccModel = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class RTMPose:
    def __init__(self, run_model: SimccModel, input_width: int, input_height: int, padding: float = 1.25):
        self.run_model = run_model
        self.input_size = np.array([input_width, input_height], dtype=np.float64)
        self.padding = padding

    @classmethod
    def from_onnx(cls, model_path: str, padding: float = 1.25, num_threads: int = 1) -> RTMPose:
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        model_input = session.get_inputs()[0]
        height, width = model_input.shape[2:4]
        if not (isinstance(height, int) and isinstance(width, int)):
            raise ValueError(f"{model_path}: the pose model needs a fixed input size, got {model_input.shape}")

        def run_model(blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            simcc_x, simcc_y = session.run(None, {model_input.name: blob})[:2]
            return simcc_x, simcc_y

        return cls(run_model, width, height, padding)

    @classmethod
    def from_params(cls, params: PeopleParams, weights: WeightPath) -> RTMPose:
        """The people stage's pose_backend "rtmpose": pose_model_path is an RTMPose/DWPose .onnx file."""
        return cls.from_onnx(weights("pose_model_path"), params.box_expand, params.num_threads)

    def estimate(self, image_rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """COCO body keypoints [N, 17, 3] (x, y in image pixels, score) for each xyxy box [N, 4]."""
        keypoints = np.zeros((len(boxes), N_BODY_KEYPOINTS, 3), dtype=np.float32)
        for i, box in enumerate(boxes):
            centre, scale = box_to_centre_scale(box, self.padding, self.input_size)
            blob = normalise(warp_to_input(image_rgb, centre, scale, self.input_size))
            simcc_x, simcc_y = self.run_model(blob)
            keypoints[i] = decode_simcc(simcc_x[0], simcc_y[0], centre, scale, self.input_size)[:N_BODY_KEYPOINTS]
        return keypoints


def box_to_centre_scale(box: np.ndarray, padding: float, input_size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (x, y) and size (w, h) of the image rectangle fed to the model: the padded box grown
    along one axis to the input's aspect ratio."""
    centre = (box[:2] + box[2:]) / 2.0
    width, height = np.maximum((box[2:] - box[:2]) * padding, 1.0)
    aspect = input_size[0] / input_size[1]
    if width > height * aspect:
        return centre, np.array([width, width / aspect])
    return centre, np.array([height * aspect, height])


def warp_to_input(image: np.ndarray, centre: np.ndarray, scale: np.ndarray, input_size: np.ndarray) -> np.ndarray:
    """The rectangle (centre, scale) of the image, resized to the input size (black outside)."""
    zoom = input_size[0] / scale[0]
    offset = input_size / 2.0 - centre * zoom
    warp = np.array([[zoom, 0, offset[0]], [0, zoom, offset[1]]], dtype=np.float64)
    return cv2.warpAffine(image, warp, (int(input_size[0]), int(input_size[1])), flags=cv2.INTER_LINEAR)


def normalise(crop_rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB crop [H, W, 3] -> float32 network input [1, 3, H, W]."""
    return ((crop_rgb.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)[None].copy()


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, centre: np.ndarray, scale: np.ndarray,
                 input_size: np.ndarray) -> np.ndarray:
    """SimCC outputs [K, Wx], [K, Wy] of one crop -> keypoints [K, 3] (x, y in image pixels, score).
    Scores below 0 (no response) are clipped to 0."""
    split_ratio = simcc_x.shape[1] / input_size[0]
    in_input = np.stack([simcc_x.argmax(axis=1), simcc_y.argmax(axis=1)], axis=1) / split_ratio
    in_image = in_input / input_size * scale + centre - scale / 2.0
    score = np.minimum(simcc_x.max(axis=1), simcc_y.max(axis=1)).clip(0, None)
    return np.concatenate([in_image, score[:, None]], axis=1).astype(np.float32)
