"""The frames analysis stages read from a clip's window of its source are the encoded clip's frames:
same count, same order, same picture (up to x264's loss), at the source's rate and resampled."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import require_realdata
from curation.frames import decode_frames, decode_window
from curation.stage import FrameSpec, Item
from stages.clips import Clips, ClipsParams
from stages.encode import Encode, EncodeParams
from stages.probe import Probe, ProbeParams

SMALL_GRAY = FrameSpec(max_side=64, gray=True)


def _clip_of(video: str, first_s: float, seconds: float, fps: float | None) -> Item:
    """One clip of `seconds` from `first_s` of a constant-rate real video, as clips plans it."""
    path = require_realdata() / "data-juicer/tests/ops/data" / video
    item = Item(source_id=video, source_path=str(path))
    Probe(ProbeParams()).process([item])
    rate = item.meta["probe"]["fps"]
    first, end = round(first_s * rate), round((first_s + seconds) * rate)
    item.meta["shots"] = {"shots": [[first / rate, end / rate]], "shot_frames": [[first, end]], "fps": rate}
    (clip,) = Clips(ClipsParams(min_clip_s=1.0, fps=fps)).process([item])
    assert clip.kept
    return clip


@pytest.mark.parametrize("video, fps", [("video3.mp4", None), ("video3.mp4", 25.0), ("video4.mp4", 25.0),
                                        ("video4.mp4", None)])
def test_window_frames_are_the_encoded_clips_frames(video, fps):
    clip = _clip_of(video, 2.0, 3.0, fps)
    window = decode_window(clip.source_path, clip.window, [SMALL_GRAY])[SMALL_GRAY]
    Encode(EncodeParams(preset="ultrafast", crf=12)).process([clip])
    assert clip.kept, clip.reject
    encoded = decode_frames(clip.members["mp4"], [SMALL_GRAY])[SMALL_GRAY]
    n_frames = clip.meta["clips"]["n_frames"]
    assert len(window.images) == len(encoded.images) == n_frames and window.scale == encoded.scale
    distances = np.abs(window.images.astype(np.float32) - encoded.images).mean(axis=(1, 2))
    steps = np.abs(np.diff(encoded.images.astype(np.float32), axis=0)).mean(axis=(1, 2))
    assert distances.max() < 1.5, distances  # x264's loss at crf 12
    assert distances.mean() < steps[steps > 0].mean(), (distances, steps)  # frame k is frame k, not a neighbour
    assert np.allclose(window.times, encoded.times, atol=2e-3)
