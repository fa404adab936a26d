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

Reading is detection-first, as finding text costs far less than reading it, and a clip's text mostly
stays put (issue 16). Per sampled frame (1 per second sees every subtitle line, as lines last a second
or more): a reading whose text's edges have not moved is kept as it is, so a static title or logo is
read once (`recognise: changed`); the text detector looks for anything else on a copy of the frame
shrunk to `det_max_side`, and only at the part of it that changed since it last looked; where it finds
unexplained text, the lines are found again at full size (in bands across the frame, or on the whole
frame for vertical text) and recognised. With `stop_early` the frames stop being read once the text
changes exceed `max_text_changes`: the clip is rejected whatever follows. Text too small or faint for
the shrunk frame (a lone 25-pixel character in a 360-pixel-wide frame, a fading watermark) is missed;
`det_max_side` = `max_side`, `recognise: all` and `stop_early: false` read every line of every sampled
frame, as the stage did before.
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
from stages.models.ocr import OcrBackend, TextLine, TextReader, crop_line
from stages.models.ocr_paddleocr import PaddleOcrBackend
from stages.models.ocr_rapidocr import RapidOcrBackend

# Two boxes are one screen region when their intersection covers this much of the smaller box:
# enough to join subtitle lines of different widths on one baseline, not stacked lines that touch.
_REGION_OVERLAP = 0.3
# A new reading replaces the earlier readings whose boxes overlap it by this much of the smaller box:
# the same line read again, or pieces of it where the detector split it once.
_SAME_PLACE = 0.5
# Whether a line's pixels changed is judged on the edges of its text, as the background between
# glyphs may move under a static title: an edge is a Sobel magnitude above _EDGE (a step of about 40
# grey levels), and it stayed when its gradient now differs by less than _EDGE_DRIFT of its magnitude
# (compression noise moves it far less). The text is unchanged when _EDGES_KEPT of its edges stayed:
# static opaque text keeps nearly all, another line in its place about a quarter at most (bench:
# bench/subtitles_bench.py). Under _MIN_EDGES edge pixels there is too little to tell: read again.
_EDGE = 150.0
_EDGE_DRIFT = 0.3
_EDGES_KEPT = 0.5
_MIN_EDGES = 20
# The detector looks again where a shrunk grey pixel moved by more than this since it last saw it
# (compression noise moves them far less after shrinking), with this many shrunk pixels of context
# around: enough that the area is never under half the detector's 32-pixel input grain (below that,
# RapidOCR's resize to a multiple of 32 leaves nothing to look at).
_SEEN_NOISE = 24
_LOOK_MARGIN = 16
# A line found on the shrunk frame is clearly horizontal when this many times wider than thick.
_HORIZONTAL = 2.0
# Text found on the shrunk frame is explained by kept readings when this much of its box lies on them.
_EXPLAINED = 0.75
# Lines whose tops are this close (frame pixels) are on one row, ordered left to right.
_SAME_ROW = 10

# ocr_backend name -> how that backend builds itself (stages/models/ocr.py). The parameter's allowed
# values are these keys: a new OCR engine is its module plus one line here.
OCR_BACKENDS: dict[str, OcrBackend] = {
    "rapidocr": RapidOcrBackend.from_params,
    "paddleocr": PaddleOcrBackend.from_params,
}
OcrBackendName = Literal[tuple(OCR_BACKENDS)]


class SubtitlesParams(Params):
    sample_fps: float = Field(1.0, gt=0, description="frames per second read by OCR; at 1 every subtitle line (shown for 1 s or more) is seen at least once, so each change is counted, while sparser sampling skips lines")
    max_side: int = Field(960, ge=64, description="longer side of the frames that text lines are read from")
    det_max_side: int = Field(320, ge=32, description="longer side of the shrunk frame copy on which the text detector looks for new text (its cost grows with the area); 320 still finds subtitle-sized text (bench/subtitles_bench.py: 256 missed a subtitle change), max_side searches every frame at full size")
    recognise: Literal["changed", "all"] = Field("changed", description="changed: keep a line's reading while its text's edges stay put, and read only the other text; all: read every line found in every sampled frame")
    stop_early: bool = Field(True, description="stop reading a clip once its text changes exceed max_text_changes (it is rejected whatever follows); false reads every sampled frame, for a full n_text_changes")
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


@dataclass(eq=False)  # compared by identity
class _Reading:
    """The text last recognised at one place on screen, with the grey pixels it was read from."""

    quad: np.ndarray  # frame pixels
    box: tuple[int, int, int, int]  # x0, y0, x1, y1: the whole pixels under quad
    pixels: np.ndarray
    text: str
    score: float


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
        reader = ClipReader(self._ocr, self.params)
        lines, stopped_at = self._read_frames(reader, frames.images, frames.times, 1.0 / frames.scale)
        regions = find_regions(lines, 1.0 / frames.scale, self.params.change_threshold)
        n_changes = sum(len(r.changes) for r in regions)
        meta = _meta(frames.times, lines, regions, 1.0 / frames.scale)
        meta.update(stopped_early_at=stopped_at, n_lines_recognised=reader.n_recognised)
        self.record(item, meta, text_area_ratio=text_area_ratio(lines, height * width), n_text_changes=n_changes,
                    language=text_language(regions, self.params.min_language_chars))
        if n_changes > self.params.max_text_changes:
            first = next(r for r in regions if r.changes)
            before, after = first.changes[0]
            self.reject(item, "subtitle_change",
                        f"{n_changes} text change(s); region {_int_box(first.box)}: {before!r} -> {after!r}")

    def _read_frames(self, reader: ClipReader, images: np.ndarray, times: np.ndarray,
                     to_clip: float) -> tuple[list[list[TextLine]], float | None]:
        """The kept text lines of each frame read, and the sample time at which reading stopped early
        (None when every frame was read). Only a frame where some line was recognised can add a
        change (the others repeat earlier readings), so only then is the count taken again."""
        p = self.params
        lines: list[list[TextLine]] = []
        for image, time in zip(images, times):
            n_recognised = reader.n_recognised
            lines.append(self._kept_lines(reader.read(image)))
            if p.stop_early and reader.n_recognised > n_recognised:
                regions = find_regions(lines, to_clip, p.change_threshold)
                if sum(len(r.changes) for r in regions) > p.max_text_changes:
                    return lines, round(float(time), 3)
        return lines, None

    def _kept_lines(self, lines: list[TextLine]) -> list[TextLine]:
        return [line for line in lines if line.score >= self.params.min_text_score and _normalise(line.text)]


class ClipReader:
    """Reads the text lines of one clip's sampled frames, in time order. With `recognise: changed` an
    earlier reading whose text's edges have not moved is kept as it is, and only text that the kept
    readings do not explain is read. The detector looks for such text on a copy of the frame shrunk
    to det_max_side, and only at the part of it that changed since it last looked (text can appear or
    change only where the picture does); only where it finds some does it run at full size, for the
    lines to read."""

    def __init__(self, ocr: TextReader, params: SubtitlesParams):
        self._ocr = ocr
        self._params = params
        self._readings: list[_Reading] = []
        self._last_seen: np.ndarray | None = None  # the shrunk grey frame as the detector last saw each part
        self.n_recognised = 0

    def read(self, image: np.ndarray) -> list[TextLine]:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        kept, changed = self._unchanged_and_changed(gray)
        known = _known_mask(gray.shape, [r.box for r in kept], [r.box for r in changed])
        quads = self._new_lines(image, known, [r.box for r in changed])
        texts = self._ocr.recognise([crop_line(image, quad) for quad in quads])
        new = [self._remember(quad, gray, text, score) for quad, (text, score) in zip(quads, texts)]
        self.n_recognised += len(quads)
        kept = [r for r in kept if r in self._readings]  # less those a new reading replaced
        return in_reading_order([TextLine(r.quad, r.text, r.score) for r in kept + new])

    def _unchanged_and_changed(self, gray: np.ndarray) -> tuple[list[_Reading], list[_Reading]]:
        """The earlier readings whose text is still there unchanged, and the others (with
        `recognise: all` none is kept: every line is read again)."""
        if self._params.recognise == "all":
            return [], []
        unchanged = [not pixels_changed(_pixels(gray, r.box), r.pixels) for r in self._readings]
        return ([r for r, same in zip(self._readings, unchanged) if same],
                [r for r, same in zip(self._readings, unchanged) if not same])

    def _new_lines(self, image: np.ndarray, known: np.ndarray,
                   changed: list[tuple[int, int, int, int]]) -> list[np.ndarray]:
        """Quads of the text lines that the kept readings do not explain, less those too thick to be
        overlaid text. The shrunk frame only tells where there is such text; the lines to read are
        then found at full size (`_full_size_lines`), as the shrunk frame shows small text in pieces
        that vary between frames (read, those pieces would count as changes). On the shrunk frame
        two stacked lines may merge into one box, so only a box thicker than two lines is no
        overlaid text there."""
        height, width = image.shape[:2]
        scale = min(1.0, self._params.det_max_side / max(height, width))
        max_thickness = self._params.max_line_height * min(height, width)
        max_found_thickness = 2 * max_thickness if scale < 1 else max_thickness
        quads = [quad for quad in self._look(image, scale, changed)
                 if not _explained(quad, known) and _thickness(quad) <= max_found_thickness]
        if quads and scale < 1:
            quads = [quad for quad in self._full_size_lines(image, quads, known) if _thickness(quad) <= max_thickness]
        return quads

    def _full_size_lines(self, image: np.ndarray, found: list[np.ndarray], known: np.ndarray) -> list[np.ndarray]:
        """The unexplained lines at full size where the shrunk frame found some: in bands across the
        frame around those (`_bands`), unless a line there is not horizontal or is cut by its band
        (a band may cut vertical text into pieces that read as short lines); else on the whole frame."""
        height = image.shape[0]
        bands = _bands(found, image.shape)
        if bands != [(0, height)]:
            quads = self._unexplained_in(image, bands, known)
            if all(_horizontal(quad) and not _cut(quad, bands, height) for quad in quads):
                return quads
        return self._unexplained_in(image, [(0, height)], known)

    def _unexplained_in(self, image: np.ndarray, bands: list[tuple[int, int]], known: np.ndarray) -> list[np.ndarray]:
        return [quad for top, bottom in bands for quad in self._detect_in(image, top, bottom)
                if not _explained(quad, known)]

    def _detect_in(self, image: np.ndarray, top: int, bottom: int) -> list[np.ndarray]:
        """Lines found at full size in the rows [top, bottom) of the frame, as quads in frame pixels."""
        offset = np.array([0, top], dtype=np.float32)
        return [quad + offset for quad in self._ocr.detect(np.ascontiguousarray(image[top:bottom]))]

    def _look(self, image: np.ndarray, scale: float, changed: list[tuple[int, int, int, int]]) -> list[np.ndarray]:
        """Lines found on the frame shrunk by `scale`, within the part to look at, as quads in frame
        pixels."""
        height, width = image.shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image
        to_small = np.array([size[0] / width, size[1] / height] * 2)
        area = self._area_to_look(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY),
                                  [np.array(box) * to_small for box in changed])
        if area is None:
            return []
        x0, y0, x1, y1 = area
        offset = np.array([x0, y0], dtype=np.float32)
        return [(quad + offset) / to_small[:2].astype(np.float32)
                for quad in self._ocr.detect(np.ascontiguousarray(small[y0:y1, x0:x1]))]

    def _area_to_look(self, small_gray: np.ndarray, changed: list[np.ndarray]) -> tuple[int, int, int, int] | None:
        """The box, in shrunk pixels, around the pixels that moved by more than noise since the
        detector last saw them and around the readings whose text changed, grown by a margin of
        context; the whole frame at first and with `recognise: all`; None when nothing changed."""
        if self._last_seen is None or self._params.recognise == "all":
            self._last_seen = small_gray
            return 0, 0, small_gray.shape[1], small_gray.shape[0]
        ys, xs = np.nonzero(cv2.absdiff(small_gray, self._last_seen) > _SEEN_NOISE)
        boxes = changed + ([np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])] if len(xs) else [])
        if not boxes:
            return None
        corners = np.array(boxes)
        x0, y0, x1, y1 = _clip_box(np.concatenate([corners[:, :2].min(axis=0) - _LOOK_MARGIN,
                                                   corners[:, 2:].max(axis=0) + _LOOK_MARGIN]), small_gray.shape)
        self._last_seen[y0:y1, x0:x1] = small_gray[y0:y1, x0:x1]
        return x0, y0, x1, y1

    def _remember(self, quad: np.ndarray, gray: np.ndarray, text: str, score: float) -> _Reading:
        """Keep a new reading, in place of the earlier ones it mostly covers or that mostly cover it
        (the same line, or pieces of it read where the detector split it)."""
        box = _pixel_box(quad, gray.shape)
        reading = _Reading(quad, box, _pixels(gray, box).copy(), text, score)
        self._readings = [r for r in self._readings if _overlap(box, r.box) < _SAME_PLACE] + [reading]
        return reading


def pixels_changed(now: np.ndarray, then: np.ndarray) -> bool:
    """Whether the text in one line's box changed, from the grey pixels of the box now and when read:
    whether too few of the text's edges stayed as they were."""
    gradient_then, gradient_now = _gradient(then), _gradient(now)
    magnitude = np.linalg.norm(gradient_then, axis=-1)
    edges = magnitude > _EDGE
    if edges.sum() < _MIN_EDGES:
        return True
    drift = np.linalg.norm(gradient_now[edges] - gradient_then[edges], axis=-1)
    return bool((drift < _EDGE_DRIFT * magnitude[edges]).mean() < _EDGES_KEPT)


def _gradient(gray: np.ndarray) -> np.ndarray:
    """Sobel gradient [H, W, 2] of a grey image."""
    image = gray.astype(np.float32)
    return np.stack([cv2.Sobel(image, cv2.CV_32F, 1, 0), cv2.Sobel(image, cv2.CV_32F, 0, 1)], axis=-1)


def in_reading_order(lines: list[TextLine]) -> list[TextLine]:
    """Top to bottom, and left to right among lines whose tops are within _SAME_ROW pixels: the
    order RapidOCR gives, which decides how a region's pieces join into its text."""
    ordered = sorted(lines, key=lambda line: (line.quad[0, 1], line.quad[0, 0]))
    for i in range(len(ordered) - 1):
        for j in range(i, -1, -1):
            upper, lower = ordered[j], ordered[j + 1]
            if abs(lower.quad[0, 1] - upper.quad[0, 1]) >= _SAME_ROW or lower.quad[0, 0] >= upper.quad[0, 0]:
                break
            ordered[j], ordered[j + 1] = lower, upper
    return ordered


def _bands(quads: list[np.ndarray], shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Row ranges [top, bottom) across the frame holding the lines found on the shrunk frame, each
    line padded by its thickness above and below, overlapping ones merged; the whole frame when one
    of them is not a horizontal line (a piece of vertical text, a lone character)."""
    height = shape[0]
    if not all(_horizontal(quad) for quad in quads):
        return [(0, height)]
    bands: list[tuple[int, int]] = []
    for x0, y0, x1, y1 in sorted((_axis_box(quad) for quad in quads), key=lambda box: box[1]):
        top, bottom = max(0, int(2 * y0 - y1)), min(height, int(np.ceil(2 * y1 - y0)))
        if bands and top <= bands[-1][1]:
            previous_top, previous_bottom = bands.pop()
            top, bottom = previous_top, max(previous_bottom, bottom)
        bands.append((top, bottom))
    return bands


def _horizontal(quad: np.ndarray) -> bool:
    x0, y0, x1, y1 = _axis_box(quad)
    return x1 - x0 >= _HORIZONTAL * (y1 - y0)


def _cut(quad: np.ndarray, bands: list[tuple[int, int]], height: int) -> bool:
    """Whether the quad touches an edge of the band it was found in that is not the frame's edge."""
    y0, y1 = quad[:, 1].min(), quad[:, 1].max()
    top, bottom = next(band for band in bands if band[0] <= y0 < band[1])
    return (top > 0 and y0 <= top + 1) or (bottom < height and y1 >= bottom - 1)


def _explained(quad: np.ndarray, known: np.ndarray) -> bool:
    """Whether most of the quad's box lies on kept readings (dilated in `known`)."""
    x0, y0, x1, y1 = _pixel_box(quad, known.shape)
    return bool(known[y0:y1, x0:x1].mean() >= _EXPLAINED)


def _known_mask(shape: tuple[int, ...], kept: list[tuple[int, int, int, int]],
                changed: list[tuple[int, int, int, int]]) -> np.ndarray:
    """The pixels the kept readings explain: their boxes, each grown by half its thickness (a line
    found on the shrunk frame has a coarser, larger box than the full-size reading of it), less the
    boxes of readings whose text changed (which must be looked at again, even beside kept text)."""
    mask = np.zeros(shape[:2], dtype=bool)
    for x0, y0, x1, y1 in kept:
        grow = (min(x1 - x0, y1 - y0) + 1) // 2
        mask[max(0, y0 - grow):y1 + grow, max(0, x0 - grow):x1 + grow] = True
    for x0, y0, x1, y1 in changed:
        mask[y0:y1, x0:x1] = False
    return mask


def _pixels(gray: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return gray[y0:y1, x0:x1]


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


def find_regions(lines: list[list[TextLine]], to_clip: float, threshold: float) -> list[_Region]:
    """The screen regions of the frames' text lines, each with its text changes counted."""
    regions = group_regions(lines, to_clip)
    for region in regions:
        count_changes(region, threshold)
    return regions


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


def _pixel_box(quad: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The whole pixels covering the quad, inside the frame."""
    return _clip_box(_axis_box(quad), shape)


def _clip_box(box: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The whole pixels covering an [x0, y0, x1, y1] box, inside an image of `shape`; never empty."""
    height, width = shape[:2]
    left, top = int(np.clip(np.floor(box[0]), 0, width - 1)), int(np.clip(np.floor(box[1]), 0, height - 1))
    return left, top, int(np.clip(np.ceil(box[2]), left + 1, width)), int(np.clip(np.ceil(box[3]), top + 1, height))


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection area over the smaller box's area."""
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / max(1, min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])))


def _thickness(quad: np.ndarray) -> float:
    x0, y0, x1, y1 = _axis_box(quad)
    return float(min(x1 - x0, y1 - y0))


def _normalise(text: str) -> str:
    return "".join(text.split()).lower()


def _int_box(box: np.ndarray) -> list[int]:
    return [int(round(v)) for v in box]


def _meta(times: np.ndarray, lines: list[list[TextLine]], regions: list[_Region], to_clip: float) -> dict:
    """What was read, per sample read (the first len(lines) samples) and per region."""
    return {
        "sample_times": [round(float(t), 3) for t in times[:len(lines)]],
        "texts": [[line.text for line in frame_lines] for frame_lines in lines],
        "boxes": [[_int_box(_axis_box(line.quad) * to_clip) for line in frame_lines] for frame_lines in lines],
        "regions": [{"box": _int_box(r.box), "kind": "changing" if r.changes else "static",
                     "n_changes": len(r.changes),
                     "texts": list(dict.fromkeys("".join(reading) for reading in r.readings.values()))}
                    for r in regions],
    }
