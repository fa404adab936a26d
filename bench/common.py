"""What the benches share: the real footage they read, and how they time a plain decode."""
from __future__ import annotations

from pathlib import Path

import av

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
VIDEOS = [
    "data-juicer/tests/ops/data/video1.mp4",
    "data-juicer/tests/ops/data/video2.mp4",
    "data-juicer/tests/ops/data/video3.mp4",
    "data-juicer/tests/ops/data/video4.mp4",
    "data-juicer/tests/ops/data/video5.mp4",
    "sam2/notebooks/videos/bedroom.mp4",
    "sample-videos/one-by-one-person-detection.mp4",
]


def fastest(run, repeats: int, clock) -> tuple[float, object]:
    """Seconds of the fastest of `repeats` calls of run(), and the last call's result."""
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        result = run()
        best = min(best, clock() - start)
    return best, result


def plain_decode(path: Path) -> tuple[int, dict]:
    """Decode every frame once with threaded PyAV; the frame count and the clip metadata."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n_frames = sum(1 for _ in container.decode(stream))
        fps = float(stream.average_rate)
        clip = {"fps": fps, "n_frames": n_frames, "width": stream.codec_context.width,
                "height": stream.codec_context.height, "has_audio": bool(container.streams.audio),
                "duration": n_frames / fps}
    return n_frames, clip
