"""RapidOCR: PaddleOCR's PP-OCRv4 text detector and recogniser on ONNX Runtime, from the models shipped
in the rapidocr-onnxruntime wheel (works offline). A TextReader (stages/models/ocr.py), the subtitles
stage's ocr_backend "rapidocr"."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from stages.models.ocr import TextLine

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

    def __call__(self, rgb: np.ndarray) -> list[TextLine]:
        result, _ = self._engine(np.ascontiguousarray(rgb[..., ::-1]), use_cls=False)  # expects BGR
        return [TextLine(np.asarray(quad, dtype=np.float32), text, float(score))
                for quad, text, score in (result or [])]
