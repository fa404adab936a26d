"""Light-ASD against the original implementation's outputs (../shared/golden/light-asd): strict
weight loading, the 4 s forward pass and its intermediates, the windowed evaluate_network scores
for all 8 track/weight pairs, the MFCC and the crop parameters. The README there gives the
tolerances: 1e-4 for float32 reimplementations, exact equality for MFCC and crop parameters."""
from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator

import av
import cv2
import numpy as np
import pytest
import torch
from scipy.io import wavfile

from conftest import LIGHT_ASD_GOLDEN, REALDATA
from stages.models.audio_features import mfcc_100fps, read_wav16k, track_mfcc
from stages.models.face_tracking import PAD_VALUE, crop_face, crop_parameters

CROP_SCALE = 0.40  # Columbia_test.py --cropScale default
from stages.models.light_asd import (LightASD, evaluate_windows, load_light_asd, per_duration_scores,
                                     score_track)

os.environ["HF_HUB_OFFLINE"] = "1"

WEIGHTS = REALDATA / "Light-ASD" / "weight"
VIDEO4 = REALDATA / "data-juicer" / "tests" / "ops" / "data" / "video4.mp4"
WEIGHT_NAMES = ("finetuning_TalkSet", "pretrain_AVA_CVPR")
TRACKS = ("video4_trackA", "video4_trackB", "video3_trackA", "video3_trackB")
TOLERANCE = 1e-4  # golden README, "Reproducing and tolerances"

pytestmark = pytest.mark.skipif(
    not (WEIGHTS.is_dir() and LIGHT_ASD_GOLDEN.is_dir()),
    reason=f"Light-ASD weights ({WEIGHTS}) or golden outputs ({LIGHT_ASD_GOLDEN}) not found")


@pytest.fixture(scope="module")
def golden() -> dict[str, np.lib.npyio.NpzFile]:
    return {name: np.load(LIGHT_ASD_GOLDEN / f"{name}.npz")
            for name in ("inputs", "scores", "intermediates_finetuning_TalkSet")}


@pytest.fixture(scope="module")
def models() -> Iterator[dict[str, LightASD]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # predictable on a shared machine; two threads spin against other jobs
    yield {name: load_light_asd(WEIGHTS / f"{name}.model") for name in WEIGHT_NAMES}
    torch.set_num_threads(threads)


@pytest.mark.parametrize("weight", WEIGHT_NAMES)
def test_weights_load_strictly_with_every_tensor(weight, models):
    state = torch.load(WEIGHTS / f"{weight}.model", map_location="cpu", weights_only=True)
    loaded = models[weight].state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[key], state[key]) for key in state)
    # the golden README: "Model has 1,021,120 parameters" (ASD.model, without the two heads)
    assert sum(p.numel() for p in models[weight].model.parameters()) == 1_021_120


def test_loading_strips_module_prefix_and_refuses_incomplete_files(tmp_path):
    state = torch.load(WEIGHTS / "finetuning_TalkSet.model", map_location="cpu", weights_only=True)
    torch.save({f"module.{key}": value for key, value in state.items()}, tmp_path / "ddp.model")
    assert torch.equal(load_light_asd(tmp_path / "ddp.model").lossAV.FC.weight, state["lossAV.FC.weight"])
    del state["lossV.FC.bias"]
    torch.save(state, tmp_path / "partial.model")
    with pytest.raises(RuntimeError, match="lossV.FC.bias"):
        load_light_asd(tmp_path / "partial.model")


@pytest.mark.parametrize("track", TRACKS)
def test_forward_4s_intermediates_match_original(track, models, golden):
    """The plain forward pass, layer by layer (the golden run kept intermediates for TalkSet only)."""
    weight = "finetuning_TalkSet"
    backbone, head = models[weight].model, models[weight].lossAV.FC
    audio = torch.from_numpy(golden["inputs"][f"{track}_audio"][None, :400])
    video = torch.from_numpy(golden["inputs"][f"{track}_video"][None, :100]).float()
    with torch.inference_mode():
        embed_audio, embed_visual = backbone.embed_audio(audio), backbone.embed_visual(video)
        fused = backbone.fuse(embed_audio, embed_visual)
        ours = {"embedA": embed_audio[0], "embedV": embed_visual[0], "outAV": fused, "logitsAV": head(fused)}
    for name, value in ours.items():
        expected = golden["intermediates_finetuning_TalkSet"][f"{track}_{weight}_forward4s_{name}"]
        np.testing.assert_allclose(value.numpy(), expected, atol=TOLERANCE, rtol=0, err_msg=name)


@pytest.mark.parametrize("weight", WEIGHT_NAMES)
@pytest.mark.parametrize("track", TRACKS)
def test_windowed_scores_match_evaluate_network(weight, track, models, golden):
    """All 8 track/weight pairs: the per-duration arrays (forward4s is the first 4 s window of
    duration 4: the same input, video[0:100] and audio[0:400]), their mean, and the rounded output."""
    audio, video = golden["inputs"][f"{track}_audio"], golden["inputs"][f"{track}_video"]
    expected = {kind: golden["scores"][f"{track}_{weight}_{kind}"]
                for kind in ("forward4s", "evaluate_perduration", "evaluate_unrounded", "evaluate")}
    per_duration = per_duration_scores(models[weight], audio, video)
    np.testing.assert_allclose(per_duration, expected["evaluate_perduration"], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(per_duration[3, :100], expected["forward4s"], atol=TOLERANCE, rtol=0)
    scores = per_duration.mean(axis=0)  # what score_track returns
    np.testing.assert_allclose(scores, expected["evaluate_unrounded"], atol=TOLERANCE, rtol=0)
    # the verbatim function's rounded output, except where a value sits on a rounding boundary
    near_boundary = np.abs(np.abs(expected["evaluate_unrounded"] * 10 % 1) - 0.5) < TOLERANCE * 10
    assert near_boundary.sum() <= 1  # the README counts 1 such frame in two AVA tracks, 0 elsewhere
    np.testing.assert_allclose(np.round(scores, 1)[~near_boundary],
                               expected["evaluate"][~near_boundary], atol=1e-6)


@pytest.mark.parametrize("n_frames", [9, 37])
def test_shared_work_equals_independent_window_passes(n_frames, models, golden):
    """score_track reuses one whole-track visual pass; a naive loop of evaluate_network's windows
    (batch 1, each its own sequence) must give the same scores: short windows (< 12 frames),
    repeated windows (a track shorter than the durations) and chunked whole-track passes."""
    model = models["finetuning_TalkSet"]
    mfcc = golden["inputs"]["video3_trackA_audio"][40:40 + 4 * n_frames]
    gray = golden["inputs"]["video3_trackA_video"][10:10 + n_frames]
    naive = np.zeros(n_frames)
    with torch.inference_mode():
        for start, end in evaluate_windows(n_frames):
            naive[start:end] += model(torch.from_numpy(mfcc[None, 4 * start:4 * end]),
                                      torch.from_numpy(gray[None, start:end]).float())[0].numpy()
    naive /= 6
    np.testing.assert_allclose(score_track(model, mfcc, gray, max_batch_frames=40), naive,
                               atol=TOLERANCE, rtol=0)


def test_mfcc_is_bit_exact(golden):
    for clip in ("video4", "video3"):
        wav_file = io.BytesIO()
        wavfile.write(wav_file, 16000, golden["inputs"][f"{clip}_wav16k"])
        samples = read_wav16k(wav_file.getvalue())
        expected = golden["inputs"][f"{clip}_trackA_audio"]
        np.testing.assert_array_equal(mfcc_100fps(samples), expected)
        np.testing.assert_array_equal(track_mfcc(samples, 0, 150), expected)
        # a track running to the end of the audio gets 4 rows per frame, the missing tail as silence
        shifted = track_mfcc(samples, 10, 150)
        assert shifted.shape == (600, 13)
        np.testing.assert_array_equal(shifted[:500], mfcc_100fps(samples[6400:])[:500])


def test_crop_parameters_equal_crop_video():
    tracks = json.loads((LIGHT_ASD_GOLDEN / "tracks.json").read_text())
    for track in TRACKS:
        frames = [tracks[track]["frames"][key] for key in sorted(tracks[track]["frames"], key=int)]
        centre_x, centre_y, half_size = crop_parameters(np.array([f["track_box_x1y1x2y2"] for f in frames]))
        np.testing.assert_array_equal(centre_x, [f["crop_center_x"] for f in frames])
        np.testing.assert_array_equal(centre_y, [f["crop_center_y"] for f in frames])
        np.testing.assert_array_equal(half_size, [f["crop_half_size_s"] for f in frames])


@pytest.mark.parametrize("centre", [(205.3, 209.9), (12.0, 350.0), (470.0, 5.0)])
def test_crop_face_equals_padding_then_slicing(centre):
    """crop_video pads the whole frame with 110 and slices; crop_face fills only what it needs
    (boxes in the middle, at the bottom-left and at the top-right edge of a real 480x360 frame)."""
    with av.open(str(VIDEO4)) as container:
        frame = next(container.decode(video=0)).to_ndarray(format="rgb24")
    x, y, s = *centre, 50.29
    pad = int(s * (1 + 2 * CROP_SCALE))
    padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=PAD_VALUE)
    my, mx = y + pad, x + pad
    window = padded[int(my - s):int(my + s * (1 + 2 * CROP_SCALE)),
                    int(mx - s * (1 + CROP_SCALE)):int(mx + s * (1 + CROP_SCALE))]
    np.testing.assert_array_equal(crop_face(frame, x, y, s, CROP_SCALE), cv2.resize(window, (224, 224)))
