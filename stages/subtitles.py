"""subtitles: OCR on sampled frames; drop clips whose subtitle text changes within the clip.

A burned-in subtitle that changes mid-clip ties the picture to speech that the clip's own audio may
not match, so such clips are dropped (the paper's rule). Static overlays (a logo, a fixed title, a
watermark) are not subtitles: text lines from every sampled frame are grouped into screen regions
(lines whose boxes overlap across frames share a region), and a region's text is compared between
consecutive frames where it has any. A region counts a change when neither reading is found in the
other, allowing `change_threshold` normalised edit distance (so partial or split OCR reads of one
fixed title still match). Text that merely appears or disappears is not a change.

Text lines below `min_text_score` or thicker than `max_line_height` of the frame's shorter side
(scene text on clothes or signs seen up close, big graphics) are left out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cv2
import langdetect
import numpy as np
from langdetect import DetectorFactory
from langdetect.lang_detect_exception import LangDetectException
from pydantic import Field

from curation.stage import FrameSpec, Item, Params, Resources, Stage, WeightFolder
from stages.models.ocr import OcrBackend, TextLine, TextReader
from stages.models.ocr_paddleocr import PaddleOcrBackend
from stages.models.ocr_rapidocr import RapidOcrBackend

# Two boxes are one screen region when their intersection covers this much of the smaller box:
# enough to join subtitle lines of different widths on one baseline, not stacked lines that touch.
_REGION_OVERLAP = 0.3

# ocr_backend name -> how that backend builds itself (stages/models/ocr.py). The parameter's allowed
# values are these keys: a new OCR engine is its module plus one line here.
OCR_BACKENDS: dict[str, OcrBackend] = {
    "rapidocr": RapidOcrBackend.from_params,
    "paddleocr": PaddleOcrBackend.from_params,
}
OcrBackendName = Literal[tuple(OCR_BACKENDS)]


class SubtitlesParams(Params):
    sample_fps: float = Field(1.0, gt=0, description="frames per second read by OCR")
    max_side: int = Field(960, ge=64, description="longer side of the frames given to OCR")
    ocr_backend: OcrBackendName = Field("rapidocr", description="rapidocr (PP-OCRv4 ONNX models shipped in its wheel) or paddleocr (3.x, local model folders)")
    paddle_det_model_dir: WeightFolder = Field(None, description="a PaddleOCR text detection model folder (for ocr_backend paddleocr)")
    paddle_rec_model_dir: WeightFolder = Field(None, description="a PaddleOCR text recognition model folder (for ocr_backend paddleocr)")
    threads: int = Field(1, ge=1, description="CPU threads for OCR inference; the stage reserves as many CPUs")
    min_text_score: float = Field(0.8, ge=0, le=1, description="text lines recognised with lower confidence are ignored")
    max_line_height: float = Field(0.15, gt=0, le=1, description="text lines thicker than this fraction of the frame's shorter side are ignored (scene text, graphics)")
    change_threshold: float = Field(0.4, ge=0, le=1, description="normalised edit distance between a region's readings above which its text changed")
    max_text_changes: int = Field(0, ge=0, description="reject as subtitle_change when text changes more often than this within the clip")
    min_language_chars: int = Field(4, ge=1, description="guess the spoken language (langdetect) from the OCR text only when it has at least this many letters")


@dataclass
class _Region:
    box: np.ndarray  # union of its lines' boxes, clip pixels
    readings: dict[int, list[str]] = field(default_factory=dict)  # sample index -> its lines there
    changes: list[tuple[str, str]] = field(default_factory=list)


class Subtitles(Stage):
    name = "subtitles"
    analysis = {"language": "language"}
    Params = SubtitlesParams

    def resources(self) -> Resources:
        return Resources(cpus=self.params.threads, memory_gb=1)

    def frame_specs(self) -> list[FrameSpec]:
        return [FrameSpec(fps=self.params.sample_fps, max_side=self.params.max_side)]

    def setup(self) -> None:
        self._ocr: TextReader = OCR_BACKENDS[self.params.ocr_backend](self.params, self.weights)

    def process_item(self, item: Item) -> None:
        frames = item.frames[self.frame_specs()[0]]
        if len(frames.images) == 0:
            self.reject(item, "no_frames", "no frame was decoded for OCR")
            return
        height, width = frames.images.shape[1:3]
        lines = [self._kept_lines(self._ocr(image), min(height, width)) for image in frames.images]
        regions = group_regions(lines, 1.0 / frames.scale)
        for region in regions:
            count_changes(region, self.params.change_threshold)
        n_changes = sum(len(r.changes) for r in regions)
        self.record(item, _meta(frames.times, lines, regions, 1.0 / frames.scale),
                    text_area_ratio=text_area_ratio(lines, height * width), n_text_changes=n_changes,
                    language=text_language(regions, self.params.min_language_chars))
        if n_changes > self.params.max_text_changes:
            first = next(r for r in regions if r.changes)
            before, after = first.changes[0]
            self.reject(item, "subtitle_change",
                        f"{n_changes} text change(s); region {_int_box(first.box)}: {before!r} -> {after!r}")

    def _kept_lines(self, lines: list[TextLine], short_side: int) -> list[TextLine]:
        p = self.params
        return [line for line in lines
                if line.score >= p.min_text_score and _normalise(line.text)
                and _thickness(line.quad) <= p.max_line_height * short_side]


def text_language(regions: list[_Region], min_chars: int) -> str | None:
    """The language of the text read on screen (subtitles are usually the spoken language), by
    langdetect with a fixed seed so that a re-run gives the same answer; None when too little text."""
    text = " ".join(dict.fromkeys(t for r in regions for reading in r.readings.values() for t in reading))
    if sum(ch.isalpha() for ch in text) < min_chars:
        return None
    by_script = _cjk_language(text)
    if by_script:
        return by_script
    try:
        return _seeded_langdetect().detect(text)
    except LangDetectException:
        return None


def _cjk_language(text: str) -> str | None:
    """Chinese, Japanese and Korean by script: langdetect's profiles confuse them on short lines
    (it calls plain Chinese subtitles Korean), while their scripts tell them apart exactly."""
    letters = [ch for ch in text if ch.isalpha()]
    hangul = sum("\uac00" <= ch <= "\ud7af" or "\u1100" <= ch <= "\u11ff" for ch in letters)
    kana = sum("\u3040" <= ch <= "\u30ff" for ch in letters)
    han = sum("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in letters)
    if hangul + kana + han < len(letters) / 2:
        return None
    if hangul:
        return "ko"
    return "ja" if kana else "zh"


def _seeded_langdetect():
    DetectorFactory.seed = 0
    return langdetect


def text_area_ratio(lines: list[list[TextLine]], frame_area: int) -> float:
    """Mean over the sampled frames of the fraction of the frame that kept text lines cover."""
    return float(np.mean([min(1.0, sum(cv2.contourArea(line.quad) for line in frame_lines) / frame_area)
                          for frame_lines in lines]))


def group_regions(lines: list[list[TextLine]], to_clip: float) -> list[_Region]:
    """Join text lines of all sampled frames into screen regions by box overlap (union-find)."""
    flat = [(k, line) for k, frame_lines in enumerate(lines) for line in frame_lines]
    if not flat:
        return []
    boxes = np.array([_axis_box(line.quad) for _, line in flat]) * to_clip
    parent = list(range(len(flat)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(_overlap_matrix(boxes) >= _REGION_OVERLAP, k=1))):
        parent[root(i)] = root(j)
    regions: dict[int, _Region] = {}
    for index, (k, line) in enumerate(flat):
        box = boxes[index]
        region = regions.setdefault(root(index), _Region(box=box.copy()))
        region.box = np.concatenate([np.minimum(region.box[:2], box[:2]), np.maximum(region.box[2:], box[2:])])
        region.readings.setdefault(k, []).append(_normalise(line.text))
    return sorted(regions.values(), key=lambda r: (r.box[1], r.box[0]))


def count_changes(region: _Region, threshold: float) -> None:
    """Walk the region's readings in time. A reading that matches none of the current text's readings
    is a change and starts a new current text; one that matches joins it (OCR reads one fixed title
    in varying pieces, so a later piece may only be found in an earlier piece)."""
    run: list[list[str]] = []
    for k in sorted(region.readings):
        reading = region.readings[k]
        if run and not _matches(reading, run, threshold):
            region.changes.append(("".join(max(run, key=_n_chars)), "".join(reading)))
            run = []
        if reading not in run:
            run.append(reading)


def _matches(reading: list[str], run: list[list[str]], threshold: float) -> bool:
    """Whether the reading is found, within `threshold` normalised edit distance, in what the run has
    read so far, or the run's fullest reading is found in it (the new reading is more complete)."""
    seen = "|".join("".join(r) for r in run)
    fullest = max(run, key=_n_chars)
    return min(_containment_distance(reading, seen),
               _containment_distance(fullest, "".join(reading))) <= threshold


def _n_chars(reading: list[str]) -> int:
    return sum(map(len, reading))


def _containment_distance(lines: list[str], text: str) -> float:
    """Edit operations to match each line to its best span of `text`, over the lines' characters."""
    return sum(substring_edit_distance(line, text) for line in lines) / _n_chars(lines)


def substring_edit_distance(pattern: str, text: str) -> int:
    """Levenshtein distance from `pattern` to its best-matching span of `text` (semi-global)."""
    previous = [0] * (len(text) + 1)  # matching may start anywhere in text, for free
    for i, char in enumerate(pattern, start=1):
        row = [i] + [0] * len(text)
        for j, other in enumerate(text, start=1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (char != other))
        previous = row
    return min(previous)


def _overlap_matrix(boxes: np.ndarray) -> np.ndarray:
    """Intersection area over the smaller box's area, for every pair of [x0, y0, x1, y1] boxes."""
    x0 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y0 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x1 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y1 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    areas = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6)
    return inter / np.minimum(areas[:, None], areas[None, :])


def _axis_box(quad: np.ndarray) -> np.ndarray:
    return np.concatenate([quad.min(axis=0), quad.max(axis=0)])


def _thickness(quad: np.ndarray) -> float:
    x0, y0, x1, y1 = _axis_box(quad)
    return float(min(x1 - x0, y1 - y0))


def _normalise(text: str) -> str:
    return "".join(text.split()).lower()


def _int_box(box: np.ndarray) -> list[int]:
    return [int(round(v)) for v in box]


def _meta(times: np.ndarray, lines: list[list[TextLine]], regions: list[_Region], to_clip: float) -> dict:
    return {
        "sample_times": [round(float(t), 3) for t in times],
        "texts": [[line.text for line in frame_lines] for frame_lines in lines],
        "boxes": [[_int_box(_axis_box(line.quad) * to_clip) for line in frame_lines] for frame_lines in lines],
        "regions": [{"box": _int_box(r.box), "kind": "changing" if r.changes else "static",
                     "n_changes": len(r.changes),
                     "texts": list(dict.fromkeys("".join(reading) for reading in r.readings.values()))}
                    for r in regions],
    }
