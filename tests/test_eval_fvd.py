"""FVD: the Fréchet distance against scipy's sqrtm, the piergiaj-layout I3D on real clips, the TorchScript
detector path, clip sampling, and the metric's availability rules."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from tests.conftest import REALDATA, require_realdata
from training.data import ClipSample
from training.evaluation.common import GeneratedVideo, MetricUnavailable
from training.evaluation.fvd import FvdSettings, build, clip_windows, frame_indices_at_rate
from training.evaluation.frechet import feature_statistics, frechet_distance
from training.evaluation.i3d import InceptionI3d, same_padding
from training.media import decode_video

VIDEO_DIR = REALDATA / "data-juicer" / "tests" / "ops" / "data"


def scipy_frechet(features1: np.ndarray, features2: np.ndarray) -> float:
    """The textbook float64 formula through scipy.linalg.sqrtm of the covariance product."""
    mu1, mu2 = features1.mean(axis=0), features2.mean(axis=0)
    sigma1, sigma2 = np.cov(features1, rowvar=False), np.cov(features2, rowvar=False)
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return float(np.real(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * root)))


@pytest.mark.parametrize("dims, n1, n2", [(8, 200, 150), (64, 500, 300), (400, 1000, 800),
                                          (64, 20, 30), (400, 50, 60), (32, 2, 3)])
def test_frechet_distance_matches_scipy_sqrtm(dims, n1, n2):
    rng = np.random.default_rng(dims + n1)
    real = rng.normal(size=(n1, dims))
    generated = rng.normal(size=(n2, dims)) @ rng.normal(size=(dims, dims)) * 0.3 + 0.5
    ours = frechet_distance(*feature_statistics(generated), *feature_statistics(real))
    # Fewer samples than dims: singular covariances, where sqrtm itself is only good to ~1e-8.
    assert ours == pytest.approx(scipy_frechet(generated, real), rel=1e-6)


@pytest.mark.parametrize("dims, n", [(16, 100), (400, 30)])
def test_frechet_distance_of_identical_sets_is_zero(dims, n):
    features = np.random.default_rng(n).normal(size=(n, dims)) * 10
    statistics = feature_statistics(features)
    assert 0.0 <= frechet_distance(*statistics, *statistics) < 1e-8 * np.trace(statistics[1])


def test_feature_statistics_are_float64_and_unbiased():
    features = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    mu, sigma = feature_statistics(features)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(features.astype(np.float64), rowvar=False))
    with pytest.raises(ValueError):
        feature_statistics(features[:1])


def test_same_padding_is_tf_same():
    assert same_padding(224, 7, 2) == (2, 3)  # even size: k - s, the larger half after
    assert same_padding(16, 3, 1) == (1, 1)
    assert same_padding(7, 2, 2) == (0, 1)  # odd size: k - s % r
    assert same_padding(8, 1, 1) == (0, 0)


def test_frame_sampling_at_the_clip_rate():
    np.testing.assert_array_equal(frame_indices_at_rate(10, 24.0, 24.0), np.arange(10))
    # 30 fps resampled to 24: 20 frames last 2/3 s, 16 frames at 24 fps, the frame on screen at k / 24.
    np.testing.assert_array_equal(frame_indices_at_rate(20, 30.0, 24.0), np.floor(np.arange(16) * 1.25))
    np.testing.assert_array_equal(frame_indices_at_rate(5, 12.0, 24.0), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    frames = np.arange(40)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    windows = clip_windows(frames, 24.0, 24.0, length=16, max_clips=3)
    assert [int(clip[0, 0, 0, 0]) for clip in windows] == [0, 16]  # non-overlapping, from the start
    assert clip_windows(frames[:15], 24.0, 24.0, length=16, max_clips=1) == []


def test_build_without_i3d_path_names_it(tmp_path):
    with pytest.raises(MetricUnavailable, match="i3d_path"):
        build(FvdSettings(), "cpu")
    with pytest.raises(MetricUnavailable, match="i3d_path"):
        build(FvdSettings(i3d_path=str(tmp_path / "absent.pt")), "cpu")


def sample(key: str, frames: np.ndarray, fps: float) -> ClipSample:
    return ClipSample(key=key, frames=frames, fps=fps, audio=None, masks=None, conf=None, speak=None, refs=[],
                      faces=[], caption="", segments=None)


def generated(key: str, frames: np.ndarray, fps: float) -> GeneratedVideo:
    return GeneratedVideo(key=key, frames=frames, fps=fps, audio=None, trace=None)


class InputProbe(torch.nn.Module):
    """Stands in for i3d_torchscript.pt: same call signature; features describe what it was given."""

    def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True,
                return_features: bool = False) -> torch.Tensor:
        assert not rescale and not resize and return_features, "called with StyleGAN-V's FVD arguments"
        batch = x.shape[0]
        flat = x.reshape(batch, 3, -1)
        shape = torch.tensor(x.shape[2:], dtype=x.dtype).expand(batch, 3)
        return torch.cat([flat.mean(dim=2), flat.amin(dim=(1, 2))[:, None], flat.amax(dim=(1, 2))[:, None],
                          shape], dim=1)


def test_torchscript_detector_path(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(InputProbe()).save(str(path))
    metric = build(FvdSettings(i3d_path=str(path), max_clips_per_video=2), "cpu")
    rng = np.random.default_rng(0)
    real_frames = rng.integers(0, 256, size=(40, 48, 64, 3), dtype=np.uint8)
    scores = metric.score(generated("g0", rng.integers(0, 256, size=(20, 36, 36, 3), dtype=np.uint8), 12.0),
                          sample("s0", real_frames, 24.0))
    # 20 frames at 12 fps sampled at the clip's 24 fps: 40 frames, two 16-frame clips; the clip too.
    assert scores == {"fvd_generated_clips": 2.0, "fvd_real_clips": 2.0}
    features = metric.generated_features[0]
    assert features.shape == (2, 8) and features.dtype == np.float64
    assert features[:, 3].min() >= -1 and features[:, 4].max() <= 1  # scaled to [-1, 1]
    np.testing.assert_array_equal(features[:, 5:], [[16, 224, 224]] * 2)

    assert math.isnan(build(FvdSettings(i3d_path=str(path)), "cpu").summary()["fvd"])
    summary = metric.summary()
    assert summary["fvd_generated_clips"] == summary["fvd_real_clips"] == 2.0
    assert math.isfinite(summary["fvd"]) and "fvd" not in metric.skipped


def test_too_few_clips_give_nan_with_a_reason(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(InputProbe()).save(str(path))
    metric = build(FvdSettings(i3d_path=str(path)), "cpu")
    frames = np.zeros((16, 32, 32, 3), np.uint8)
    metric.score(generated("g0", frames, 24.0), sample("s0", frames, 24.0))
    assert metric.score(generated("g1", frames[:8], 24.0), sample("s0", frames, 24.0))["fvd_generated_clips"] == 0
    summary = metric.summary()
    assert math.isnan(summary["fvd"]) and summary["fvd_real_clips"] == 1.0  # s0 counted once
    assert "at least 2 clips" in metric.skipped["fvd"]


@pytest.fixture(scope="module")
def random_i3d_state(tmp_path_factory) -> tuple[dict[str, torch.Tensor], str]:
    """Random weights saved as piergiaj's 2018 checkpoints are: legacy (non-zip) torch.save format, from a
    PyTorch without BatchNorm's num_batches_tracked (which load_state_dict fills in for such files)."""
    torch.manual_seed(0)
    state = {name: tensor for name, tensor in InceptionI3d().state_dict().items()
             if not name.endswith("num_batches_tracked")}
    path = tmp_path_factory.mktemp("i3d") / "rgb_imagenet.pt"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return state, str(path)


def decoded(name: str, frames: int) -> tuple[np.ndarray, float]:
    return decode_video((VIDEO_DIR / name).read_bytes(), max_frames=frames)


def test_piergiaj_i3d_on_real_videos(random_i3d_state):
    require_realdata()
    state, path = random_i3d_state
    metric = build(FvdSettings(i3d_path=path), "cpu")
    assert torch.equal(metric.extractor.Mixed_5c.b2b.conv3d.weight, state["Mixed_5c.b2b.conv3d.weight"])
    video4, video4_fps = decoded("video4.mp4", 20)  # 360x480 at 30 fps: 16 frames at 24 fps
    video3, video3_fps = decoded("video3.mp4", 16)  # 640x362 at 24 fps
    assert metric.score(generated("g0", video4, video4_fps), sample("s0", video3, video3_fps)) == {
        "fvd_generated_clips": 1.0, "fvd_real_clips": 1.0}
    metric.score(generated("g1", video3, video3_fps), sample("s1", video4, video4_fps))
    assert [features.shape for features in metric.generated_features] == [(1, 400), (1, 400)]
    assert [features.shape for features in metric.real_features.values()] == [(1, 400), (1, 400)]
    assert not np.allclose(metric.generated_features[0], metric.generated_features[1])
    summary = metric.summary()
    assert math.isfinite(summary["fvd"]) and summary["fvd"] >= 0


@pytest.mark.parametrize("change", ["missing", "unexpected"])
def test_piergiaj_state_dict_loads_strictly(random_i3d_state, tmp_path, change):
    state = dict(random_i3d_state[0])
    if change == "missing":
        del state["Mixed_4c.b1b.conv3d.weight"]
    else:
        state["Mixed_4c.b1c.conv3d.weight"] = state["Mixed_4c.b1b.conv3d.weight"]
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match="Mixed_4c.b1"):
        build(FvdSettings(i3d_path=str(path)), "cpu")
