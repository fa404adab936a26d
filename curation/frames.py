"""Decode a clip once and serve every stage's FrameSpec from that one pass."""
from __future__ import annotations

import io
from collections.abc import Iterable

import av
import numpy as np

from curation.stage import ClipFrames, FrameSpec

_TIME_EPS = 1e-6


def decode_frames(video: bytes | str, specs: Iterable[FrameSpec]) -> dict[FrameSpec, ClipFrames]:
    """Decode `video` (mp4 bytes or a path) in one pass and return frames for each spec.

    A spec with fps takes the first frame at or after each multiple of 1/fps from the clip start;
    each frame is converted and resized by swscale straight to the spec's size and colour.
    """
    specs = list(dict.fromkeys(specs))
    if not specs:
        return {}
    source = io.BytesIO(video) if isinstance(video, (bytes, bytearray)) else video
    images: dict[FrameSpec, list[np.ndarray]] = {spec: [] for spec in specs}
    times: dict[FrameSpec, list[float]] = {spec: [] for spec in specs}
    next_time = {spec: 0.0 for spec in specs}
    with av.open(source) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        sizes = {spec: _target_size(stream.codec_context.width, stream.codec_context.height, spec)
                 for spec in specs}
        first_time = None
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            if first_time is None:
                first_time = frame.time
            t = frame.time - first_time
            for spec in specs:
                if spec.fps is not None and t + _TIME_EPS < next_time[spec]:
                    continue
                width, height = sizes[spec]
                images[spec].append(frame.to_ndarray(
                    width=width, height=height, format="gray" if spec.gray else "rgb24",
                    interpolation="AREA"))
                times[spec].append(t)
                if spec.fps is not None:
                    while next_time[spec] <= t + _TIME_EPS:
                        next_time[spec] += 1.0 / spec.fps
        native_width = stream.codec_context.width
    return {spec: ClipFrames(images=_stack(images[spec], sizes[spec], spec.gray),
                             times=np.asarray(times[spec], dtype=np.float64),
                             scale=sizes[spec][0] / native_width)
            for spec in specs}


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
