"""PaddleOCR 3.x text detection and recognition from local model folders, where the paddleocr package
is installed. A TextReader (stages/models/ocr.py), the subtitles stage's ocr_backend "paddleocr"."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from stages.models.ocr import TextLine

if TYPE_CHECKING:
    from curation.stage import WeightPath
    from stages.subtitles import SubtitlesParams


class PaddleOcrBackend:
    def __init__(self, det_model_dir: str, rec_model_dir: str):
        try:
            from paddleocr import PaddleOCR
        except ImportError as exc:
            raise ValueError("ocr_backend 'paddleocr' needs the paddleocr package (3.x) installed; "
                             "set ocr_backend to 'rapidocr' otherwise") from exc
        self._engine = PaddleOCR(text_detection_model_dir=det_model_dir, text_recognition_model_dir=rec_model_dir,
                                 use_doc_orientation_classify=False, use_doc_unwarping=False,
                                 use_textline_orientation=False)

    @classmethod
    def from_params(cls, params: SubtitlesParams, weights: WeightPath) -> PaddleOcrBackend:
        """paddle_det_model_dir and paddle_rec_model_dir are required (local model folders)."""
        return cls(weights("paddle_det_model_dir"), weights("paddle_rec_model_dir"))

    def __call__(self, rgb: np.ndarray) -> list[TextLine]:
        lines = []
        for page in self._engine.predict(np.ascontiguousarray(rgb[..., ::-1])):
            for quad, text, score in zip(page["rec_polys"], page["rec_texts"], page["rec_scores"]):
                lines.append(TextLine(np.asarray(quad, dtype=np.float32), text, float(score)))
        return lines
