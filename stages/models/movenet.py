"""MoveNet single-person pose (TFLite, LiteRT interpreter) run top-down on person boxes: a PoseEstimator
(stages/models/pose.py), the people stage's pose_backend "movenet".

MoveNet Lightning takes one 192x192 RGB uint8 image and returns [1, 1, 17, 3]: COCO keypoints as
(y, x, score) normalised to that image. It was trained on roughly square crops around one person, so
each person box is grown into a square (keeping the aspect ratio undistorted) before resizing.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
from ai_edge_litert.interpreter import Interpreter

if TYPE_CHECKING:
    from curation.stage import WeightPath
    from stages.people import PeopleParams

N_KEYPOINTS = 17


class MoveNetPose:
    def __init__(self, model_path: str, box_expand: float = 1.25, num_threads: int = 1):
        self.interpreter = Interpreter(model_path=model_path, num_threads=num_threads)
        self.interpreter.allocate_tensors()
        model_input = self.interpreter.get_input_details()[0]
        self.input_index = model_input["index"]
        self.input_size = int(model_input["shape"][1])
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.box_expand = box_expand

    @classmethod
    def from_params(cls, params: PeopleParams, weights: WeightPath) -> MoveNetPose:
        """The people stage's pose_backend "movenet": pose_model_path is a MoveNet .tflite file."""
        return cls(weights("pose_model_path"), params.box_expand, params.num_threads)

    def estimate(self, image_rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Keypoints [N, 17, 3] (x, y in image pixels, score) for each xyxy box [N, 4]."""
        keypoints = np.zeros((len(boxes), N_KEYPOINTS, 3), dtype=np.float32)
        for i, box in enumerate(boxes):
            origin, side = square_around(box, self.box_expand)
            crop = crop_square(image_rgb, origin, side, self.input_size)
            self.interpreter.set_tensor(self.input_index, crop[None])
            self.interpreter.invoke()
            yx_score = self.interpreter.get_tensor(self.output_index)[0, 0]
            keypoints[i, :, 0] = origin[0] + yx_score[:, 1] * side
            keypoints[i, :, 1] = origin[1] + yx_score[:, 0] * side
            keypoints[i, :, 2] = yx_score[:, 2]
        return keypoints


def square_around(box: np.ndarray, expand: float) -> tuple[np.ndarray, float]:
    """Top-left corner (x, y) and side of the square centred on an xyxy box, `expand` times its
    longer side."""
    centre = (box[:2] + box[2:]) / 2
    side = float(max(box[2] - box[0], box[3] - box[1]) * expand)
    return centre - side / 2, max(side, 1.0)


def crop_square(image: np.ndarray, origin: np.ndarray, side: float, size: int) -> np.ndarray:
    """The square [origin, origin + side) of the image resized to size x size; outside the image is
    black (the crop may reach past the frame edge)."""
    scale = size / side
    warp = np.array([[scale, 0, -origin[0] * scale], [0, scale, -origin[1] * scale]], dtype=np.float64)
    return cv2.warpAffine(image, warp, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
