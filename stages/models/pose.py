"""The people stage's model contracts: a person detector and a top-down pose estimator.

Each is a `typing.Protocol`: any class with the method fits, without inheriting from anything (as
the evaluator's `FrameScorer`, training/evaluation/sync.py). Pose backends are chosen by name: the
people stage's registry `stages.people.POSE_BACKENDS` maps each `pose_backend` value to the
backend's `from_params` (a `PoseBackend`), and the parameter's allowed values are that registry's
keys. A new pose model is therefore one new module in stages/models/, with a class that has
`estimate` and a `from_params` classmethod, plus its name and `from_params` as one line of that
registry.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from curation.stage import WeightPath

if TYPE_CHECKING:
    from stages.models.yolox import Detections
    from stages.people import PeopleParams


class PersonDetector(Protocol):
    def detect(self, image_rgb: np.ndarray) -> Detections:
        """People in one RGB uint8 image [H, W, 3]: xyxy boxes [N, 4] in its pixels and scores [N],
        best first."""


class PoseEstimator(Protocol):
    def estimate(self, image_rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """COCO-17 keypoints float32 [N, 17, 3] (x, y in image pixels, score) of the person in each
        xyxy box [N, 4] of the RGB uint8 image [H, W, 3]."""


class PoseBackend(Protocol):
    def __call__(self, params: PeopleParams, weights: WeightPath) -> PoseEstimator:
        """Build the estimator from the people stage's params, reading weight paths through `weights`
        (so that a missing file is reported against its parameter)."""
