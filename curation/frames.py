"""Decode a clip once and serve every stage's FrameSpec from that one pass: from its encoded member,
or, before it is encoded, straight from its window of the source."""
from __future__ import annotations

import io
import math
from collections.abc import Iterable, Iterator
from fractions import Fraction

import av
import numpy as np

from curation.stage import ClipFrames, FrameSpec, SourceWindow

_TIME_EPS = 1e-6


def decode_frames(video: bytes | str, specs: Iterable[FrameSpec], threads: int = 1) -> dict[FrameSpec, ClipFrames]:
    """Decode `video` (mp4 bytes or a path) in one pass and return frames for each spec.

    A spec with fps takes the first frame at or after each multiple of 1/fps from the clip start;
    each frame is converted and resized by swscale straight to the spec's size and colour.
    """
    source = io.BytesIO(video) if isinstance(video, (bytes, bytearray)) else video
    with av.open(source) as container:
        stream = _video_stream(container, threads)
        sampler = _Sampler(specs, stream.codec_context.width, stream.codec_context.height)
        first_time = None
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            first_time = frame.time if first_time is None else first_time
            sampler.add(frame, frame.time - first_time)
    return sampler.result()


def decode_window(source: str, window: SourceWindow, specs: Iterable[FrameSpec], threads: int = 1) -> dict[FrameSpec, ClipFrames]:
    """Frames for each spec from the clip's window of its source (a path or URL), decoded once.

    The frames are the ones the clip is cut from: the first shown at or after a quarter frame before
    `window.start`, and `end_frame - first_frame` of them, as `stages/encode.py` cuts them. A clip
    resampled to `window.fps` gets its frames as ffmpeg's fps filter makes them (see `_resampled`).
    Sizes and `scale` are relative to the clip's picture (window.width x height)."""
    with av.open(source) as container:
        stream = _video_stream(container, threads)
        sampler = _Sampler(specs, window.width, window.height)
        frames = _window_frames(container, stream, window)
        for frame, t in frames if window.fps is None else _resampled(frames, Fraction(window.fps), window.n_frames):
            sampler.add(frame, float(t))
    return sampler.result()


def _video_stream(container, threads: int):
    stream = container.streams.video[0]
    # frame threads beyond the stage's reserved CPUs would oversubscribe the node Ray packs
    stream.thread_type = "AUTO" if threads > 1 else "SLICE"
    stream.thread_count = threads
    return stream


def _window_frames(container, stream, window: SourceWindow) -> Iterator[tuple[av.VideoFrame, Fraction]]:
    """(frame, exact seconds from the window's first frame) for the window's frames, after one seek."""
    base = stream.start_time or 0
    earliest = window.start - 0.25 / window.source_fps
    container.seek(base + max(0, int(earliest / stream.time_base)), stream=stream, backward=True)
    first_pts, taken = None, 0
    for frame in container.decode(stream):
        if frame.pts is None or float((frame.pts - base) * stream.time_base) < earliest:
            continue
        first_pts = frame.pts if first_pts is None else first_pts
        yield frame, (frame.pts - first_pts) * stream.time_base
        taken += 1
        if taken == window.end_frame - window.first_frame:
            return


def _resampled(frames: Iterator[tuple[av.VideoFrame, Fraction]], fps: Fraction, n_frames: int) -> Iterator[tuple[av.VideoFrame, Fraction]]:
    """The clip's `n_frames` frames at `fps`, as ffmpeg's fps filter (round=near) picks them: a source
    frame lands on output slot round(t * fps), and slot k shows the last frame landed at or before
    it (repeated across empty slots; of two frames on one slot, the later)."""
    k, previous = 0, None
    for frame, t in frames:
        slot = math.floor(t * fps + Fraction(1, 2))
        while previous is not None and k < min(slot, n_frames):
            yield previous, k / fps
            k += 1
        previous = frame
    while previous is not None and k < n_frames:
        yield previous, k / fps
        k += 1


class _Sampler:
    """Picks each spec's frames from a stream of decoded frames and converts them."""

    def __init__(self, specs: Iterable[FrameSpec], width: int, height: int):
        self.specs = list(dict.fromkeys(specs))
        self.width = width
        self.sizes = {spec: _target_size(width, height, spec) for spec in self.specs}
        self.images: dict[FrameSpec, list[np.ndarray]] = {spec: [] for spec in self.specs}
        self.times: dict[FrameSpec, list[float]] = {spec: [] for spec in self.specs}
        self.next_time = {spec: 0.0 for spec in self.specs}
        self.pair_pending = {spec: False for spec in self.specs}  # the next frame completes a pair

    def add(self, frame: av.VideoFrame, t: float) -> None:
        t = max(0.0, t)  # a window's first frame may sit a rounding error before its start
        converted: dict[tuple[int, int, bool], np.ndarray] = {}  # specs of one size and colour share it
        for spec in self.specs:
            due = spec.fps is None or t + _TIME_EPS >= self.next_time[spec]
            if not due and not self.pair_pending[spec]:
                continue
            self.pair_pending[spec] = spec.pairs and due
            width, height = self.sizes[spec]
            if (width, height, spec.gray) not in converted:
                converted[width, height, spec.gray] = frame.to_ndarray(
                    width=width, height=height, format="gray" if spec.gray else "rgb24", interpolation="AREA")
            self.images[spec].append(converted[width, height, spec.gray])
            self.times[spec].append(t)
            if spec.fps is not None:
                while self.next_time[spec] <= t + _TIME_EPS:
                    self.next_time[spec] += 1.0 / spec.fps

    def result(self) -> dict[FrameSpec, ClipFrames]:
        return {spec: ClipFrames(images=_stack(self.images[spec], self.sizes[spec], spec.gray),
                                 times=np.asarray(self.times[spec], dtype=np.float64),
                                 scale=self.sizes[spec][0] / self.width)
                for spec in self.specs}


def _target_size(width: int, height: int, spec: FrameSpec) -> tuple[int, int]:
    if spec.max_side is None or max(width, height) <= spec.max_side:
        return width, height
    scale = spec.max_side / max(width, height)
    return max(2, round(width * scale)), max(2, round(height * scale))


def _stack(frames: list[np.ndarray], size: tuple[int, int], gray: bool) -> np.ndarray:
    if frames:
        return np.stack(frames)
    width, height = size
    return np.zeros((0, height, width) if gray else (0, height, width, 3), dtype=np.uint8)
