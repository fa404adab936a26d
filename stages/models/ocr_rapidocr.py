"""RapidOCR: PaddleOCR's PP-OCRv4 text detector and recogniser on ONNX Runtime, from the models shipped
in the rapidocr-onnxruntime wheel (works offline). A TextReader (stages/models/ocr.py), the subtitles
stage's ocr_backend "rapidocr"."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from curation.stage import WeightPath
    from stages.subtitles import SubtitlesParams


class RapidOcrBackend:
    def __init__(self, threads: int):
        from rapidocr_onnxruntime import RapidOCR

        # limit_type "max": never upscale the frame for detection (the wheel's default scales the
        # shorter side up to 736, which costs several times more on video frames and finds no more)
        self._engine = RapidOCR(det_limit_type="max", det_limit_side_len=960, use_cls=False,
                                intra_op_num_threads=threads, inter_op_num_threads=1)

    @classmethod
    def from_params(cls, params: SubtitlesParams, weights: WeightPath) -> RapidOcrBackend:
        """Needs no weight parameter: its models come with the package."""
        return cls(params.threads)

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        quads, _ = self._engine.text_det(np.ascontiguousarray(rgb[..., ::-1]))  # expects BGR
        return [] if quads is None else [np.asarray(quad, dtype=np.float32) for quad in quads]

    def recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        # one crop per call: in a batch every crop is padded to the widest one's width, which costs
        # more and leaves the shorter lines to read trailing noise
        return [self._read_one(crop) for crop in crops]

    def _read_one(self, crop: np.ndarray) -> tuple[str, float]:
        [(text, score)], _ = self._engine.text_rec([np.ascontiguousarray(crop[..., ::-1])])  # expects BGR
        return text, float(score)
