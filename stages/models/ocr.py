"""Text detection + recognition: the contract of an OCR backend, RGB frame -> list of TextLine.

A backend is any class with `__call__(rgb) -> list[TextLine]` (a `TextReader`, a `typing.Protocol`:
nothing to inherit) and a `from_params` classmethod (an `OcrBackend`). The subtitles stage's registry
`stages.subtitles.OCR_BACKENDS` maps each `ocr_backend` value to that `from_params`, and the
parameter's allowed values are that registry's keys; so a new OCR engine is one new module in
stages/models/ plus one line of that registry. The backends:

- rapidocr (stages/models/ocr_rapidocr.py, the default) runs PaddleOCR's PP-OCRv4 detector and
  recogniser through ONNX Runtime from the models shipped in its wheel, so it works offline;
- paddleocr (stages/models/ocr_paddleocr.py) runs PaddleOCR 3.x where the package is installed, from
  local detection and recognition model folders.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

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
    def __call__(self, rgb: np.ndarray) -> list[TextLine]:
        """The text lines read in one RGB uint8 frame [H, W, 3]."""


class OcrBackend(Protocol):
    def __call__(self, params: SubtitlesParams, weights: WeightPath) -> TextReader:
        """Build the reader from the subtitles stage's params, reading weight paths through `weights`
        (so that a missing model is reported against its parameter)."""
