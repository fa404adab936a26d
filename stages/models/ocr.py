"""Text detection + recognition backends behind one call: RGB frame -> list of TextLine.

RapidOCR (default) runs PaddleOCR's PP-OCRv4 detector and recogniser through ONNX Runtime from the
models shipped in its wheel, so it works offline. PaddleOCR (3.x) is used where the package is
installed and its detection/recognition model folders are given.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TextLine:
    """One detected text line: its quadrilateral [4, 2] (x, y in frame pixels), text and confidence."""

    quad: np.ndarray
    text: str
    score: float


class RapidOcrBackend:
    def __init__(self, threads: int):
        from rapidocr_onnxruntime import RapidOCR

        # limit_type "max": never upscale the frame for detection (the wheel's default scales the
        # shorter side up to 736, which costs several times more on video frames and finds no more)
        self._engine = RapidOCR(det_limit_type="max", det_limit_side_len=960, use_cls=False,
                                intra_op_num_threads=threads, inter_op_num_threads=1)

    def __call__(self, rgb: np.ndarray) -> list[TextLine]:
        result, _ = self._engine(np.ascontiguousarray(rgb[..., ::-1]), use_cls=False)  # expects BGR
        return [TextLine(np.asarray(quad, dtype=np.float32), text, float(score))
                for quad, text, score in (result or [])]


class PaddleOcrBackend:
    def __init__(self, det_model_dir: str | None, rec_model_dir: str | None):
        try:
            from paddleocr import PaddleOCR
        except ImportError as exc:
            raise ValueError("ocr_backend 'paddleocr' needs the paddleocr package (3.x) installed; "
                             "set ocr_backend to 'rapidocr' otherwise") from exc
        for name, folder in (("paddle_det_model_dir", det_model_dir), ("paddle_rec_model_dir", rec_model_dir)):
            if not folder or not Path(folder).is_dir():
                raise ValueError(f"ocr_backend 'paddleocr' needs {name} set to a local model folder (got {folder!r})")
        self._engine = PaddleOCR(text_detection_model_dir=det_model_dir, text_recognition_model_dir=rec_model_dir,
                                 use_doc_orientation_classify=False, use_doc_unwarping=False,
                                 use_textline_orientation=False)

    def __call__(self, rgb: np.ndarray) -> list[TextLine]:
        lines = []
        for page in self._engine.predict(np.ascontiguousarray(rgb[..., ::-1])):
            for quad, text, score in zip(page["rec_polys"], page["rec_texts"], page["rec_scores"]):
                lines.append(TextLine(np.asarray(quad, dtype=np.float32), text, float(score)))
        return lines
