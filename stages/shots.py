"""shots: PySceneDetect shot boundaries on downscaled frames, with fades to black trimmed.

The source is decoded once, streaming (a long source cannot be held in memory), by PySceneDetect's
PyAV backend with threaded decoding; each frame is scaled by swscale straight to the analysis size.
Times come from each frame's presentation timestamp, not its count, so variable-frame-rate footage
(phone recordings, screen captures) is cut where its frames really are.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Literal

import cv2
import numpy as np
from pydantic import Field
from scenedetect import SceneManager
from scenedetect.backends.pyav import VideoStreamAv
from scenedetect.detectors import AdaptiveDetector, ContentDetector
from scenedetect.scene_detector import SceneDetector

from curation.stage import Item, Params, Resources, Stage
from curation.storage import is_url, open_url

logging.getLogger("pyscenedetect").setLevel(logging.WARNING)  # it logs every file at INFO


class ShotsParams(Params):
    detector: Literal["adaptive", "content"] = Field("adaptive", description="PySceneDetect detector")
    content_threshold: float = Field(27.0, gt=0, description="ContentDetector threshold (HSV delta)")
    adaptive_threshold: float = Field(3.0, gt=0, description="AdaptiveDetector ratio threshold")
    min_content_val: float = Field(15.0, ge=0, description="AdaptiveDetector minimum content change for a cut")
    min_shot_s: float = Field(0.6, ge=0, description="shortest shot the detector may emit")
    max_side: int = Field(256, ge=32, description="longer side of the frames analysed")
    fade_luma: float = Field(16.0, ge=0, le=255, description="frames darker than this (mean luma) at a shot's ends are trimmed as fades")
    min_decoded_fraction: float = Field(0.9, ge=0, le=1, description="reject sources whose decodable video covers less of the probed duration")


class Shots(Stage):
    name = "shots"
    level = "source"
    requires = ("probe",)
    source_scores = True
    Params = ShotsParams

    def resources(self) -> Resources:
        return Resources(cpus=1, memory_gb=1)

    def process_item(self, item: Item) -> None:
        params = self.params
        # PySceneDetect opens a path or a file object: an object-store source is read through fsspec
        with nullcontext(item.source_path) if not is_url(item.source_path) else open_url(item.source_path) as source:
            video = _DownscaledStreamAv(source, params.max_side)
            luma = _LumaRecorder()
            manager = SceneManager()
            manager.auto_downscale = False
            manager.downscale = 1
            manager.add_detector(_make_detector(params, video.frame_rate))
            manager.add_detector(luma)
            manager.detect_scenes(video=video)
        n_decoded = len(luma.values)
        probed = item.meta["probe"]["duration"]
        if n_decoded == 0:
            self.reject(item, "undecodable", "no video frame could be decoded")
            return
        # frame i shows from times[i] to times[i + 1]; the last frame lasts a typical frame's time
        frame_s = float(np.median(np.diff(luma.times))) if n_decoded > 1 else 1.0 / float(video.frame_rate)
        times = np.append(luma.times, luma.times[-1] + frame_s)
        decoded_s = times[-1] - times[0]
        if decoded_s < params.min_decoded_fraction * probed:
            self.reject(item, "truncated", f"decoded {decoded_s:.2f} s of {probed:.2f} s")
            return
        scenes = [(_frame_at(luma.times, s.seconds), _frame_at(luma.times, e.seconds))
                  for s, e in manager.get_scene_list(start_in_scene=True)]
        scenes[-1] = (scenes[-1][0], n_decoded)  # the last scene runs to the last decoded frame
        shots, dark = _trim_fades(scenes, np.asarray(luma.values), params.fade_luma)
        meta = {
            "fps": float(video.frame_rate),
            "decoded_frames": n_decoded,
            "decode_failures": int(video.decode_failures),
            "shots": [[round(float(times[a]), 4), round(float(times[b]), 4)] for a, b in shots],
            "cuts": [round(float(times[a]), 4) for a, _ in scenes[1:]],
            "dark_frames_trimmed": int(dark),
        }
        self.record(item, meta, n_shots=len(shots))


def _frame_at(frame_times: np.ndarray, seconds: float) -> int:
    """The first decoded frame shown at or after `seconds` (a scene boundary's timestamp)."""
    return int(np.searchsorted(frame_times, seconds - 1e-6))


def _make_detector(params: ShotsParams, fps) -> SceneDetector:
    min_len = max(1, int(round(params.min_shot_s * float(fps))))
    if params.detector == "content":
        return ContentDetector(threshold=params.content_threshold, min_scene_len=min_len)
    return AdaptiveDetector(adaptive_threshold=params.adaptive_threshold, min_scene_len=min_len,
                            min_content_val=params.min_content_val)


def _trim_fades(scenes: list[tuple[int, int]], luma: np.ndarray, fade_luma: float):
    """Trim dark frames from both ends of each scene [start, end); drop scenes that are all dark."""
    shots, trimmed = [], 0
    for start, end in scenes:
        end = min(end, len(luma))
        bright = np.flatnonzero(luma[start:end] >= fade_luma)
        if bright.size == 0:
            trimmed += end - start
            continue
        first, last = start + bright[0], start + bright[-1] + 1
        trimmed += (first - start) + (end - last)
        shots.append((int(first), int(last)))
    return shots, trimmed


class _DownscaledStreamAv(VideoStreamAv):
    """PySceneDetect's PyAV stream, giving frames at the analysis size. For 8-bit 4:2:0 video (nearly
    all of it) each plane is area-resized by OpenCV and only the small image is converted to BGR:
    converting at full size costs three times the decode itself."""

    def __init__(self, path: str, max_side: int):
        super().__init__(path, threading_mode="AUTO", suppress_output=True)
        width, height = super().frame_size
        scale = min(1.0, max_side / max(width, height))
        # I420 needs an even width and a height divisible by 4 (the chroma planes are stacked in rows)
        self._size = (max(4, round(width * scale / 2) * 2), max(4, round(height * scale / 4) * 4))

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
        if frame.format.name not in ("yuv420p", "yuvj420p"):
            return frame.to_ndarray(width=width, height=height, format="bgr24", interpolation="AREA")
        luma, blue_diff, red_diff = (_plane(plane) for plane in frame.planes)
        small = [cv2.resize(luma, (width, height), interpolation=cv2.INTER_AREA)]
        small += [cv2.resize(chroma, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
                  .reshape(height // 4, width) for chroma in (blue_diff, red_diff)]
        return cv2.cvtColor(np.concatenate(small), cv2.COLOR_YUV2BGR_I420)


def _plane(plane) -> np.ndarray:
    """A frame plane as a 2-D uint8 array without copying (rows are padded to line_size)."""
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width]


class _LumaRecorder(SceneDetector):
    """Not a detector: records each frame's presentation time and mean luma (for fade trimming) in
    the same pass."""

    def __init__(self):
        super().__init__()
        self.values: list[float] = []
        self.frame_times: list[float] = []

    @property
    def times(self) -> np.ndarray:
        return np.asarray(self.frame_times)

    def process_frame(self, timecode, frame_img):
        self.frame_times.append(timecode.seconds)
        blue, green, red = frame_img[..., 0], frame_img[..., 1], frame_img[..., 2]
        self.values.append(float((0.114 * blue.mean()) + (0.587 * green.mean()) + (0.299 * red.mean())))
        return []
