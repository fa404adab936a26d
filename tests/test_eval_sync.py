"""The evaluator's lip-sync metrics: Sync-C/D on constructed distance tables and through SyncNet with
random weights, and the per-identity sync (Light-ASD, real weights) on correct vs swapped audio."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stages.models.audio_features import VIDEO_FPS
from stages.models.syncnet import SyncNet, sync_score
from tests.clip_cutting import decode_frames_25fps, wav_16k_bytes
from tests.conftest import REALDATA, require_realdata
from training.data import ClipSample, read_clips
from training.evaluation.common import GeneratedVideo, MetricUnavailable
from training.evaluation.sync import (FaceLocator, IdentitySyncSettings, LightAsdScorer, SyncNetScorer, SyncSettings, Timeline,
                                      build_identity_sync, build_sync, identity_sync, scores_over, timeline_of)
from training.media import read_wav
from training.synthetic import SyntheticSpec, write_corpus

LIGHT_ASD = REALDATA / "Light-ASD/weight/finetuning_TalkSet.model"
YUNET = REALDATA / "libfacedetection.train/onnx/yunet_n_dynamic.onnx"
VIDEO3 = REALDATA / "data-juicer/tests/ops/data/video3.mp4"


def test_sync_c_and_d_from_a_constructed_distance_table():
    # 3 windows, offsets -2..2: the best mean distance is at offset index 3 (shift +1)
    table = np.array([[5.0, 4.0, 3.0, 1.0, 6.0], [5.0, 4.0, 3.0, 2.0, 6.0], [5.0, 4.0, 3.0, 3.0, 6.0]])
    score = sync_score(table)
    assert score.sync_d == pytest.approx(2.0)  # min over offsets of the mean distances (5, 4, 3, 2, 6)
    assert score.sync_c == pytest.approx(4.0 - 2.0)  # median of the means (4) minus the minimum
    assert score.offset == 2 - 3


def test_missing_models_are_named():
    with pytest.raises(MetricUnavailable, match="syncnet_path"):
        build_sync(SyncSettings(), "cpu")
    with pytest.raises(MetricUnavailable, match="light_asd_path"):
        build_identity_sync(IdentitySyncSettings(scorer="light_asd"), "cpu")


def synthetic_samples(folder: Path, clips: int) -> list[ClipSample]:
    write_corpus(folder, clips, seed=3, spec=SyntheticSpec(frames=100))
    return list(read_clips(str(folder / "shards" / "shard-*.tar")))


def as_generated(sample: ClipSample) -> GeneratedVideo:
    return GeneratedVideo(sample.key, sample.frames, sample.fps, sample.audio, None)


def test_syncnet_path_with_random_weights(tmp_path):
    require_realdata()
    torch.manual_seed(0)
    torch.save(SyncNet().state_dict(), tmp_path / "syncnet.model")
    metric = build_sync(SyncSettings(syncnet_path=str(tmp_path / "syncnet.model"), face_detector_path=str(YUNET)), "cpu")
    sample = synthetic_samples(tmp_path / "corpus", 1)[0]
    values = metric.score(as_generated(sample), sample)
    assert np.isfinite(values["sync_c"]) and values["sync_c"] >= 0 and values["sync_d"] > 0
    scores = SyncNetScorer(str(tmp_path / "syncnet.model")).frame_scores(
        np.zeros((12, 224, 224, 3), np.uint8), np.zeros(16000, np.int16))
    # windows start at frames 0..6 (syncnet_python stops one window short): frames 0-10 are covered
    assert scores.shape == (12,) and np.isfinite(scores[:11]).all() and np.isnan(scores[11])
    assert metric.summary().keys() == {"sync_c", "sync_d"}


def correct_and_swapped(scorer, timeline_correct: Timeline, timeline_swapped: Timeline, boxes) -> tuple[dict, dict]:
    return identity_sync(scorer, timeline_correct, boxes), identity_sync(scorer, timeline_swapped, boxes)


def test_per_identity_sync_separates_correct_from_swapped_on_the_synthetic_corpus(tmp_path):
    require_realdata()
    scorer, faces = LightAsdScorer(str(LIGHT_ASD)), FaceLocator(str(YUNET))
    rows = []
    for sample in synthetic_samples(tmp_path, 4):
        generated = as_generated(sample)
        correct, swapped = timeline_of(generated, sample), timeline_of(generated, sample, order=[1, 0])
        boxes = faces.boxes(sample.key, correct)  # the figures' heads, from the masks (no face detector knows them)
        assert np.isfinite(boxes[:, :, 0]).mean() > 0.9
        rows.append(correct_and_swapped(scorer, correct, swapped, boxes))
    for correct, swapped in rows:
        print(f"margin correct {correct['identity_sync_margin']:.2f} swapped {swapped['identity_sync_margin']:.2f}; "
              f"mixed {correct['mixed_audio_sync']:.2f} vs {swapped['mixed_audio_sync']:.2f}")
    assert all(c["identity_sync_margin"] > s["identity_sync_margin"] for c, s in rows)
    assert all(c["mixed_audio_sync"] == s["mixed_audio_sync"] for c, s in rows)  # the mix cannot tell


def test_per_identity_sync_separates_correct_from_swapped_on_real_turn_taking():
    require_realdata()
    seconds = 20.0
    frames = decode_frames_25fps(VIDEO3, 0.0, int(seconds * VIDEO_FPS))
    audio = read_wav(wav_16k_bytes(VIDEO3, 0.0, seconds), 16000)
    scorer, faces = LightAsdScorer(str(LIGHT_ASD)), FaceLocator(str(YUNET))
    probe = Timeline(frames, audio[None].repeat(2, 0), np.zeros((2, len(frames)), bool), None)
    boxes = faces.boxes("video3", probe)
    assert np.isfinite(boxes[:, :, 0]).mean(axis=1).min() > 0.7, "both women's faces are tracked"
    speak = np.stack([scores_over(scorer, frames, boxes[i], audio) for i in range(2)])
    sample = ClipSample("video3", frames, float(VIDEO_FPS), audio, None, None, np.nan_to_num(speak, nan=-1.0),
                        [None, None], [None, None], "", None)
    generated = as_generated(sample)
    correct, swapped = correct_and_swapped(scorer, timeline_of(generated, sample),
                                           timeline_of(generated, sample, order=[1, 0]), boxes)
    print(correct, swapped)
    assert (speak > 0).mean(axis=1).min() > 0.1, "both women speak in the first 20 s"
    assert correct["identity_sync_margin"] > swapped["identity_sync_margin"] + 1.0
    assert correct["mixed_audio_sync"] == swapped["mixed_audio_sync"]
