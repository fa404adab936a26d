"""Text detection and recognition: the contract of an OCR backend, and the line crop both backends read.

A backend is any class with `detect(rgb) -> list of quads` and `recognise(crops) -> list of (text,
score)` (a `TextReader`, a `typing.Protocol`: nothing to inherit) and a `from_params` classmethod (an
`OcrBackend`). Detection and recognition are separate so that the subtitles stage can find text on a
small copy of the frame and read only the lines whose pixels changed (stages/subtitles.py). The
subtitles stage's registry `stages.subtitles.OCR_BACKENDS` maps each `ocr_backend` value to that
`from_params`, and the parameter's allowed values are that registry's keys; so a new OCR engine is one
new module in stages/models/ plus one line of that registry. The backends:

- rapidocr (stages/models/ocr_rapidocr.py, the default) runs PaddleOCR's PP-OCRv4 detector and
  recogniser through ONNX Runtime from the models shipped in its wheel, so it works offline;
- paddleocr (stages/models/ocr_paddleocr.py) runs PaddleOCR 3.x's text detection and recognition
  modules where the package is installed, from local model folders.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from curation.stage import WeightPath

if TYPE_CHECKING:
    from stages.subtitles import SubtitlesParams


@dataclass(frozen=True)
class TextLine:
    """One detected text line: its quadrilateral [4, 2] (x, y in frame pixels), text and confidence."""

    quad: np.ndarray
    text: str
    score: float


class TextReader(Protocol):
    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """The text lines found in one RGB uint8 frame [H, W, 3], as quadrilaterals [4, 2] (x, y in
        that frame's pixels, clockwise from the top left), in any order."""

    def recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """The text and confidence of each RGB uint8 crop of one text line (see `crop_line`)."""


class OcrBackend(Protocol):
    def __call__(self, params: SubtitlesParams, weights: WeightPath) -> TextReader:
        """Build the reader from the subtitles stage's params, reading weight paths through `weights`
        (so that a missing model is reported against its parameter)."""


def crop_line(image: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """The text line inside `quad`, warped upright to its own width and height (as PaddleOCR crops
    lines for its recogniser); a line standing on end is turned to read left to right."""
    quad = quad.astype(np.float32)
    width = max(1, int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3]))))
    height = max(1, int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2]))))
    upright = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
    crop = cv2.warpPerspective(image, cv2.getPerspectiveTransform(quad, upright), (width, height),
                               borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)
    return np.rot90(crop) if height >= 1.5 * width else crop
