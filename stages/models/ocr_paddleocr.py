"""PaddleOCR 3.x text detection and recognition modules from local model folders, where the paddleocr
package is installed. A TextReader (stages/models/ocr.py), the subtitles stage's ocr_backend
"paddleocr"."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from curation.stage import WeightPath
    from stages.subtitles import SubtitlesParams


class PaddleOcrBackend:
    def __init__(self, det_model_dir: str, rec_model_dir: str):
        try:
            from paddleocr import TextDetection, TextRecognition
        except ImportError as exc:
            raise ValueError("ocr_backend 'paddleocr' needs the paddleocr package (3.x) installed; "
                             "set ocr_backend to 'rapidocr' otherwise") from exc
        self._detector = TextDetection(model_dir=det_model_dir)
        self._recogniser = TextRecognition(model_dir=rec_model_dir)

    @classmethod
    def from_params(cls, params: SubtitlesParams, weights: WeightPath) -> PaddleOcrBackend:
        """paddle_det_model_dir and paddle_rec_model_dir are required (local model folders)."""
        return cls(weights("paddle_det_model_dir"), weights("paddle_rec_model_dir"))

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(quad, dtype=np.float32)
                for page in self._detector.predict(np.ascontiguousarray(rgb[..., ::-1]))
                for quad in page["dt_polys"]]

    def recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        if not crops:
            return []
        results = self._recogniser.predict([np.ascontiguousarray(crop[..., ::-1]) for crop in crops])
        return [(result["rec_text"], float(result["rec_score"])) for result in results]
