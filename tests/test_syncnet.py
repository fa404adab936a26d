"""SyncNet (no public weights exist here): the syncnet_v2.model key layout loads strictly, the
outputs have the original's shapes on real face crops, calc_pdist's distance table and the
Sync-C / Sync-D / offset formulas hold on constructed tables, and the syncnet stage runs with a
randomly initialised model saved to a temporary file."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from stages.models.audio_features import read_wav16k, track_mfcc
from stages.models.syncnet import SyncNet, distance_table, embed_track, load_syncnet, sync_score
from stages.syncnet import SyncNetParams, SyncNetStage
from test_speakers_stage import golden_clip, needs_data

os.environ["HF_HUB_OFFLINE"] = "1"

# SyncNetModel.py (joonson/syncnet_python): Sequential index, out and in channels, kernel of each
# conv (each followed by a BatchNorm at index + 1); the ReLU and pooling layers take the other indices.
AUDIO_CONVS = [(0, 64, 1, (3, 3)), (4, 192, 64, (3, 3)), (8, 384, 192, (3, 3)),
               (11, 256, 384, (3, 3)), (14, 256, 256, (3, 3)), (18, 512, 256, (5, 4))]
LIP_CONVS = [(0, 96, 3, (5, 7, 7)), (4, 256, 96, (1, 5, 5)), (8, 256, 256, (1, 3, 3)),
             (11, 256, 256, (1, 3, 3)), (14, 256, 256, (1, 3, 3)), (18, 512, 256, (1, 6, 6))]


def original_layout_state(with_counters: bool) -> dict[str, torch.Tensor]:
    """A random state dict with syncnet_v2.model's keys and shapes."""
    generator = torch.Generator().manual_seed(0)
    shapes: dict[str, tuple] = {}

    def batch_norm(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (channels,)
        if with_counters:
            shapes[f"{prefix}.num_batches_tracked"] = ()

    for trunk, convs in (("netcnnaud", AUDIO_CONVS), ("netcnnlip", LIP_CONVS)):
        for index, out_channels, in_channels, kernel in convs:
            shapes[f"{trunk}.{index}.weight"] = (out_channels, in_channels, *kernel)
            shapes[f"{trunk}.{index}.bias"] = (out_channels,)
            batch_norm(f"{trunk}.{index + 1}", out_channels)
    for head in ("netfcaud", "netfclip"):
        shapes.update({f"{head}.0.weight": (512, 512), f"{head}.0.bias": (512,),
                       f"{head}.3.weight": (1024, 512), f"{head}.3.bias": (1024,)})
        batch_norm(f"{head}.1", 512)
    return {key: torch.rand(shape, generator=generator) + 0.5 if shape else torch.tensor(7)
            for key, shape in shapes.items()}


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_random.model"
    torch.manual_seed(0)
    torch.save(SyncNet().state_dict(), path)
    return str(path)


@pytest.mark.parametrize("with_counters", [True, False])
def test_original_key_layout_loads_strictly(with_counters, tmp_path):
    state = original_layout_state(with_counters)
    torch.save(state, tmp_path / "syncnet_v2.model")
    loaded = load_syncnet(tmp_path / "syncnet_v2.model").state_dict()
    assert set(loaded) == set(original_layout_state(True))
    assert all(torch.equal(loaded[key], value) for key, value in state.items())


def test_other_layouts_are_refused(tmp_path):
    extra = {**original_layout_state(True), "netcnnlip.21.weight": torch.zeros(1)}
    torch.save(extra, tmp_path / "extra.model")
    with pytest.raises(ValueError, match="netcnnlip.21.weight"):
        load_syncnet(tmp_path / "extra.model")
    missing = original_layout_state(True)
    del missing["netfcaud.3.bias"]
    torch.save(missing, tmp_path / "missing.model")
    with pytest.raises(ValueError, match="netfcaud.3.bias"):
        load_syncnet(tmp_path / "missing.model")


@needs_data
def test_embeddings_and_distances_have_the_original_shapes_on_real_crops(random_weights):
    item, crops = golden_clip("video4", n_frames=12)
    mfcc = track_mfcc(read_wav16k(item.members["wav"]), 0, 12)
    lips, sounds = embed_track(load_syncnet(random_weights), crops[0], mfcc, batch_size=4)
    assert lips.shape == sounds.shape == (12 - 5, 1024)  # windows i < T - 5, as the original
    assert torch.isfinite(lips).all() and torch.isfinite(sounds).all()
    assert distance_table(lips, sounds).shape == (7, 31)
    assert embed_track(load_syncnet(random_weights), crops[0][:5], mfcc)[0].shape == (0, 1024)


def test_distance_table_is_calc_pdist():
    torch.manual_seed(0)
    lips, sounds = torch.randn(9, 16), torch.randn(9, 16)
    vshift = 4
    padded = F.pad(sounds, (0, 0, vshift, vshift))  # calc_pdist, row by row
    expected = [F.pairwise_distance(lips[[i], :].repeat(2 * vshift + 1, 1),
                                    padded[i:i + 2 * vshift + 1, :]).numpy() for i in range(len(lips))]
    np.testing.assert_allclose(distance_table(lips, sounds, vshift), np.stack(expected), rtol=1e-6)


@pytest.mark.parametrize("best_column, offset", [(19, -4), (9, 6), (15, 0)])
def test_sync_scores_on_a_constructed_table(best_column, offset):
    """Mean distance 10 at most shifts, 12 at a few, 3 at one: Sync-D is 3, Sync-C 10 - 3 = 7."""
    mean_distance = np.full(31, 10.0)
    mean_distance[[0, 1, 2, 30]] = 12.0
    mean_distance[best_column] = 3.0
    wobble = np.where(np.arange(31) % 2, 0.5, -0.5)  # cancels over each pair of rows
    table = np.stack([mean_distance + wobble, mean_distance - wobble] * 3)
    score = sync_score(table)
    assert (score.offset, score.n_windows) == (offset, 6)
    assert score.sync_d == pytest.approx(3.0) and score.sync_c == pytest.approx(7.0)
    assert sync_score(table[:0]) is None


@pytest.mark.parametrize("audio_delay", [3, -2])
def test_known_shift_is_found(audio_delay):
    """Audio window i + d carries video window i: the best column is vshift + d, offset -d."""
    torch.manual_seed(0)
    lips = torch.randn(40, 32)
    sounds = torch.roll(lips, shifts=audio_delay, dims=0)
    score = sync_score(distance_table(lips, sounds, vshift=15))
    assert score.offset == -audio_delay and score.sync_c > 0


def test_stage_setup_names_the_missing_weights_parameter():
    with pytest.raises(ValueError, match="syncnet.model_path"):
        SyncNetStage(SyncNetParams()).setup()


@needs_data
def test_stage_scores_tracks_and_speaking_windows_and_filters(random_weights):
    """Track 0 speaks in frames 0-9 (6 of its 6 + 5 = 11 windows lie inside), track 1 never."""
    item, crops = golden_clip("video4", n_frames=16)
    item.meta["speakers"] = {"tracks": [{"id": 0, "segments": [[0.0, 0.4]]},
                                        {"id": 1, "segments": []}]}
    strict = SyncNetStage(SyncNetParams(model_path=random_weights, min_sync_conf=1e9))
    strict.setup()
    strict.process_item(item)
    tracks = {t["id"]: t for t in item.meta["syncnet"]["tracks"]}
    assert tracks[0]["n_windows"] == tracks[1]["n_windows"] == 11
    assert tracks[0]["speaking"]["n_windows"] == 6 and tracks[1]["speaking"] is None
    lips, sounds = embed_track(strict.model, crops[0], track_mfcc(read_wav16k(item.members["wav"]), 0, 16))
    own = sync_score(distance_table(lips, sounds)[:6])
    assert tracks[0]["speaking"]["offset"] == own.offset
    assert tracks[0]["speaking"]["sync_c"] == pytest.approx(own.sync_c, abs=1e-3)
    assert item.scores["syncnet.min_speaking_sync_c"] == tracks[0]["speaking"]["sync_c"]
    assert item.reject.reason == "low_sync"
    assert "track 0" in item.reject.detail and "track 1" not in item.reject.detail

    item.meta.pop("speakers")  # without `speakers`, every track counts with its whole-track value
    item.reject = None
    lenient = SyncNetStage(SyncNetParams(model_path=random_weights, min_sync_conf=-1e9))
    lenient.setup()
    lenient.process_item(item)
    assert item.kept
    assert item.scores["syncnet.min_speaking_sync_c"] == min(t["sync_c"] for t in tracks.values())
    assert item.scores["syncnet.max_sync_c"] == max(t["sync_c"] for t in tracks.values())


@needs_data
def test_stage_rejects_clips_without_audio_unless_told_not_to():
    item, _ = golden_clip("video4", n_frames=8)
    item.meta["clips"]["has_audio"] = False
    SyncNetStage(SyncNetParams(model_path="unused")).process_item(item)
    assert item.reject.reason == "no_audio"
    item.reject = None
    SyncNetStage(SyncNetParams(model_path="unused", reject_no_audio=False)).process_item(item)
    assert item.kept and item.meta["syncnet"]["tracks"] == []
