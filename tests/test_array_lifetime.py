"""Arrays live only until their last reader: measured on video4.mp4 through `talking`, split into the
segments a GPU cluster runs (the CPU chain, speakers, syncnet, identities), the bytes of each item
that crosses a segment boundary (pickled, as Ray sends it) and the arrays it carries there."""
from __future__ import annotations

import pickle

import pytest
import torch

from conftest import ADAPTIVE_SHOTS, REALDATA, require_realdata
from curation.pipeline import load_pipeline
from curation.runner import SegmentRunner, plan_segments
from curation.stage import Item, matches_any
from stages.models.syncnet import SyncNet

pytestmark = pytest.mark.slow
VIDEO4 = REALDATA / "data-juicer/tests/ops/data/video4.mp4"
MIB = 2**20


def _on_cpu(config):
    """The stage as planned for a GPU (so the plan has a segment per GPU stage), run on the CPU."""
    if "device" not in type(config.params).model_fields:
        return config
    config.params = config.params.model_copy(update={"device": "cpu"})
    return config


@pytest.fixture(scope="module")
def boundaries(tmp_path_factory):
    require_realdata()
    syncnet = tmp_path_factory.mktemp("syncnet") / "random.model"
    torch.manual_seed(0)
    torch.save(SyncNet().state_dict(), syncnet)  # no SyncNet weights are public: random ones run its code
    pipeline = load_pipeline("talking", overrides=[
        "encode.preset=ultrafast", ADAPTIVE_SHOTS, f"syncnet.model_path={syncnet}", "syncnet.min_sync_conf=-1000",
        "speakers.device=cuda", "syncnet.device=cuda"])
    segments = plan_segments(pipeline)
    items = [Item(source_id="video4", source_path=str(VIDEO4))]
    crossing = []
    for segment in segments:
        segment.stages = [_on_cpu(config) for config in segment.stages]
        items = SegmentRunner(segment)(items)
        crossing.append({"after": segment.label, "read_later": segment.read_later,
                         "peak_bytes": max(len(pickle.dumps(item)) for item in items),
                         "arrays": [sorted(item.arrays) for item in items],
                         "member_bytes": max(sum(map(len, item.members.values())) for item in items),
                         "kept": sum(item.kept for item in items)})
    for boundary in crossing:
        print(f"after {boundary['after']:<36} peak {boundary['peak_bytes'] / MIB:7.2f} MiB per item, "
              f"members {boundary['member_bytes'] / MIB:5.2f} MiB, arrays {boundary['arrays'][0]}")
    return crossing


def test_the_plan_splits_at_each_gpu_stage(boundaries):
    assert [b["after"] for b in boundaries] == ["probe+shots+clips+photographic+faces+people+audio+speech", "speakers", "syncnet",
                                                 "identities+encode"]
    assert all(b["kept"] for b in boundaries)  # the clip reaches the end, so every boundary was crossed


def test_only_arrays_a_later_stage_reads_cross_a_boundary(boundaries):
    for boundary in boundaries:
        for names in boundary["arrays"]:
            assert all(matches_any(name, boundary["read_later"]) for name in names), boundary["after"]
    after_faces, after_speakers, after_syncnet, after_identities = (b["arrays"][0] for b in boundaries)
    assert any(n.endswith(".rgb224") for n in after_faces) and any(n.endswith(".gray112") for n in after_faces)
    assert not any(n.endswith(".gray112") for n in after_speakers)  # speakers was its last reader
    assert any(n.endswith(".rgb224") for n in after_speakers)  # syncnet still reads the crops
    assert not any(n.startswith("faces.") for n in after_syncnet)
    assert after_identities == []  # nothing but members reaches the writer


def test_peak_bytes_per_item_fall_to_the_members_once_the_crops_are_read(boundaries):
    first, last = boundaries[0], boundaries[-1]
    assert first["peak_bytes"] > 20 * MIB  # two face tracks' crops at 25 fps, 224x224 RGB plus 112x112 gray
    assert last["peak_bytes"] < last["member_bytes"] + 1 * MIB  # the clip, its wav, speak.npz and metadata
    assert last["peak_bytes"] < first["peak_bytes"] / 5
