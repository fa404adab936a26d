"""motion and quality on real footage from ../shared/realdata: real clips pass the defaults, and known
changes made to real frames (a pan of known speed, blur, darkening, added noise, JPEG blocking)
are measured as such and rejected with the right reason."""
from __future__ import annotations

from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest

from clip_cutting import cut_clip
from conftest import REALDATA
from curation.frames import decode_frames
from curation.stage import ClipFrames, FrameSpec, Item
from stages.motion import Motion, MotionParams
from stages.quality import Quality, QualityParams

DJ = REALDATA / "data-juicer" / "tests" / "ops" / "data"
BEDROOM = REALDATA / "sam2" / "notebooks" / "videos" / "bedroom.mp4"
WALKERS = REALDATA / "sample-videos" / "one-by-one-person-detection.mp4"
pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real footage folder {REALDATA} is absent")


def clip_item(stage, path: Path, start: float, end: float) -> Item:
    data, clip = cut_clip(path, start, end)
    return Item(source_id="x", source_path=str(path), key="x-0000", clip_index=0, start=0.0,
                end=clip["duration"], members={"mp4": data}, meta={"clips": clip},
                frames=decode_frames(data, stage.frame_specs()))


def frames_item(frames: dict) -> Item:
    return Item(source_id="x", source_path="synthetic", key="x-0000", clip_index=0, frames=frames)


@cache
def first_gray_frame(path: Path) -> np.ndarray:
    """The clip's first frame as the motion stage sees frames (gray, area-downscaled), a bit larger
    than its default analysis size so that windows can slide across it."""
    data, _ = cut_clip(path, 0.0, 0.1)
    spec = FrameSpec(max_side=384, gray=True)
    return decode_frames(data, [spec])[spec].images[0]


def panned_frames(path: Path, shift_px: int, n: int, fps: float) -> ClipFrames:
    """A pan of `shift_px` pixels per frame: windows sliding right across one real frame."""
    source = first_gray_frame(path)
    height, width = (144, 256) if source.shape[1] > source.shape[0] else (256, 144)
    assert source.shape[1] >= width + shift_px * n and source.shape[0] >= height
    images = np.stack([source[:height, k * shift_px:k * shift_px + width] for k in range(n)])
    return ClipFrames(images=np.ascontiguousarray(images), times=np.arange(n) / fps, scale=1.0)


def measured_pan(method: str, path: Path, shift_px: int) -> tuple[float, float]:
    """(measured mean flow, true flow) in frame diagonals per second for a real-frame pan at 30 fps."""
    stage = Motion(MotionParams(method=method, pairs_per_second=30.0))
    stage.setup()
    frames = panned_frames(path, shift_px, n=10, fps=30.0)
    item = frames_item({stage.frame_specs()[0]: frames})
    stage.process([item])
    assert len(item.meta["motion"]["pair_flow"]) == 9
    return item.scores["motion.mean_flow"], shift_px / np.hypot(*frames.images.shape[1:]) * 30.0


# ---------- motion ----------

@pytest.mark.parametrize("path", [BEDROOM, DJ / "video4.mp4"])
@pytest.mark.parametrize("shift_px", [3, 12])
def test_dis_measures_a_known_pan_in_diagonals_per_second(path, shift_px):
    measured, true = measured_pan("dis", path, shift_px)
    assert measured == pytest.approx(true, rel=0.1)


def test_farneback_measures_a_known_pan_on_texture():
    # Farneback leaves flat regions (bare walls) near zero, so it is checked on video3's shelves
    measured, true = measured_pan("farneback", DJ / "video3.mp4", 3)
    assert measured == pytest.approx(true, rel=0.2)


def test_fast_pan_is_too_intense_and_a_still_is_static():
    stage = Motion(MotionParams(min_mean_flow=0.005))
    stage.setup()
    spec = stage.frame_specs()[0]
    fast = frames_item({spec: panned_frames(BEDROOM, shift_px=12, n=10, fps=25.0)})
    still_frames = panned_frames(BEDROOM, shift_px=0, n=10, fps=25.0)
    still = frames_item({spec: still_frames})
    stage.process([fast, still])
    assert fast.reject.reason == "motion_too_intense"
    assert still.reject.reason == "motion_static"
    assert still.scores["motion.mean_flow"] < 1e-3
    default = Motion(MotionParams())
    default.setup()
    again = frames_item({spec: still_frames})
    default.process([again])
    assert again.reject is None, "motion_static is off by default"


def test_real_clips_kept_and_jumping_children_move_more_than_a_talk_at_a_table():
    stage = Motion(MotionParams())
    stage.setup()
    talk = clip_item(stage, DJ / "video3.mp4", 5.0, 9.0)  # 2 women at a table, talking (README)
    jumping = clip_item(stage, BEDROOM, 0.0, 4.0)  # 2 children jumping on a bed (README)
    stage.process([talk, jumping])
    assert talk.reject is None and jumping.reject is None
    assert jumping.scores["motion.mean_flow"] > 2 * talk.scores["motion.mean_flow"]
    assert jumping.scores["motion.peak_flow"] >= jumping.scores["motion.mean_flow"]


def test_single_frame_is_a_recorded_reject():
    stage = Motion(MotionParams())
    stage.setup()
    one = ClipFrames(images=np.zeros((1, 90, 160), np.uint8), times=np.zeros(1), scale=1.0)
    item = frames_item({stage.frame_specs()[0]: one})
    stage.process([item])
    assert item.reject.reason == "no_frame_pairs"


# ---------- quality ----------

@pytest.fixture(scope="module")
def quality() -> Quality:
    return Quality(QualityParams())


@pytest.mark.parametrize("path,start", [(DJ / "video3.mp4", 5.0), (DJ / "video4.mp4", 2.0),
                                        (BEDROOM, 1.0), (WALKERS, 30.0)])
def test_defaults_keep_real_footage(quality, path, start):
    item = clip_item(quality, path, start, start + 3.0)
    quality.process([item])
    assert item.reject is None, item.reject
    scores = {k.split(".", 1)[1]: v for k, v in item.scores.items()}
    assert set(scores) == {"sharpness", "mean_luma", "clipped_dark", "clipped_bright", "colourfulness",
                           "noise_sigma", "blockiness"}
    assert all(np.isfinite(v) for v in scores.values())


@pytest.fixture(scope="module")
def real_frames(quality):
    """Three frames of video4 (two girls, README) in both of the stage's specs."""
    return clip_item(quality, DJ / "video4.mp4", 2.0, 5.0).frames


def _degraded(quality, real_frames, colour_fn=None, luma_fn=None) -> Item:
    colour_spec, luma_spec = quality.frame_specs()
    colour, luma = real_frames[colour_spec], real_frames[luma_spec]
    frames = {colour_spec: ClipFrames(np.stack([colour_fn(f) if colour_fn else f for f in colour.images]),
                                      colour.times, colour.scale),
              luma_spec: ClipFrames(np.stack([luma_fn(f) if luma_fn else f for f in luma.images]),
                                    luma.times, luma.scale)}
    item = frames_item(frames)
    quality.process([item])
    return item


def test_blur_is_too_blurry(quality, real_frames):
    item = _degraded(quality, real_frames, colour_fn=lambda f: cv2.GaussianBlur(f, (0, 0), 2.0))
    assert item.reject.reason == "too_blurry"


def test_darkened_footage_is_bad_exposure(quality, real_frames):
    item = _degraded(quality, real_frames, colour_fn=lambda f: (f * 0.12).astype(np.uint8))
    assert item.reject.reason == "bad_exposure"
    assert item.scores["quality.mean_luma"] < QualityParams().min_mean_luma


def test_added_gaussian_noise_is_estimated_and_too_noisy(quality, real_frames):
    rng = np.random.default_rng(0)
    sigma = 10.0

    def noisy(f):
        return np.clip(f + rng.normal(0, sigma, f.shape), 0, 255).astype(np.uint8)

    item = _degraded(quality, real_frames, colour_fn=noisy, luma_fn=noisy)
    # the clip's own (compressed, denoised) noise is small, so the estimate is the added sigma
    assert item.scores["quality.noise_sigma"] == pytest.approx(sigma, rel=0.1)
    assert item.reject.reason == "too_noisy"


def test_jpeg_blocking_is_blocky(quality, real_frames):
    def jpeg(f):
        return cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 10])[1], cv2.IMREAD_GRAYSCALE)

    clean = _degraded(quality, real_frames)
    blocky = _degraded(quality, real_frames, luma_fn=jpeg)
    assert clean.reject is None
    assert blocky.reject.reason == "blocky"
    assert blocky.scores["quality.blockiness"] > clean.scores["quality.blockiness"]


def test_no_frames_is_a_recorded_reject(quality):
    colour_spec, luma_spec = quality.frame_specs()
    item = frames_item({colour_spec: ClipFrames(np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0), 1.0),
                        luma_spec: ClipFrames(np.zeros((0, 8, 8), np.uint8), np.zeros(0), 1.0)})
    quality.process([item])
    assert item.reject.reason == "no_frames"
