"""RAFT (stages/models/raft.py) and the motion stage's raft backend.

No RAFT weights are available here, so the models are randomly initialised: the tests prove the
state-dict layout equals torchvision's (so its released .pth files load strictly), the correlation
lookup and upsampling follow torchvision's definitions, and real frames of any size go through the
model and the stage to finite flows of the right shape. The flow values themselves are meaningless.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from test_motion_quality import BEDROOM, DJ, REALDATA, clip_item, frames_item

from curation.stage import ClipFrames
from stages.models.raft import (build_raft, correlation_pyramid, load_raft, lookup_pyramid, pixel_grid,
                                raft_flows, upsample_flow)
from stages.motion import Motion, MotionParams

pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real footage folder {REALDATA} is absent")

# From torchvision: num_params is Raft_{Large,Small}_Weights' meta (raft.py, and the model docs);
# keys and sha256 are of "key (shape)" lines, sorted, of raft_large() / raft_small() state dicts
# built by torchvision 0.26.0 (see `manifest` below).
TORCHVISION = {
    "large": {"num_params": 5_257_536, "keys": 169,
              "sha256": "23b50731fc53e26ae87cbca92e0532e4098a7c157a2269509c8f819e7860f434"},
    "small": {"num_params": 990_162, "keys": 106,
              "sha256": "b52844207e5a43c48b531e21242a63b775b5e556d38eb5545e847e2acf44dd88"},
}
# Shapes read off torchvision's raft.py builders: corr channels = 4 levels x (2r+1)^2 (r = 4 large,
# 3 small); the GRU input is the motion features plus the context part of the context encoder.
SHAPES = {
    "large": {
        "feature_encoder.convnormrelu.0.weight": (64, 3, 7, 7),
        "feature_encoder.layer2.0.downsample.0.weight": (96, 64, 1, 1),
        "feature_encoder.conv.weight": (256, 128, 1, 1),
        "context_encoder.convnormrelu.1.running_var": (64,),
        "context_encoder.layer3.1.convnormrelu2.1.weight": (128,),
        "update_block.motion_encoder.convcorr1.0.weight": (256, 324, 1, 1),
        "update_block.motion_encoder.convcorr2.0.weight": (192, 256, 3, 3),
        "update_block.motion_encoder.convflow1.0.weight": (128, 2, 7, 7),
        "update_block.motion_encoder.conv.0.weight": (126, 256, 3, 3),
        "update_block.recurrent_block.convgru1.convz.weight": (128, 384, 1, 5),
        "update_block.recurrent_block.convgru2.convq.weight": (128, 384, 5, 1),
        "update_block.flow_head.conv2.weight": (2, 256, 3, 3),
        "mask_predictor.convrelu.0.weight": (256, 128, 3, 3),
        "mask_predictor.conv.weight": (576, 256, 1, 1),
    },
    "small": {
        "feature_encoder.layer2.0.convnormrelu1.0.weight": (16, 32, 1, 1),
        "feature_encoder.layer2.0.convnormrelu3.0.weight": (64, 16, 1, 1),
        "feature_encoder.layer2.0.downsample.0.weight": (64, 32, 1, 1),
        "feature_encoder.conv.weight": (128, 96, 1, 1),
        "context_encoder.conv.weight": (160, 96, 1, 1),
        "update_block.motion_encoder.convcorr1.0.weight": (96, 196, 1, 1),
        "update_block.motion_encoder.conv.0.weight": (80, 128, 3, 3),
        "update_block.recurrent_block.convgru1.convr.weight": (96, 242, 3, 3),
        "update_block.flow_head.conv1.weight": (128, 96, 3, 3),
    },
}
# raft_small has no mask predictor, one GRU, one corr conv, and no norm in its context encoder
ABSENT = {"large": [], "small": ["mask_predictor.conv.weight", "update_block.recurrent_block.convgru2.convz.weight",
                                 "update_block.motion_encoder.convcorr2.0.weight",
                                 "context_encoder.convnormrelu.1.weight"]}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One thread: on a shared 2-core machine, torch's thread pool mostly waits on itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def manifest(state: dict[str, torch.Tensor]) -> str:
    return "\n".join(f"{key} {tuple(tensor.shape)}" for key, tensor in sorted(state.items()))


def random_weights(tmp_path, variant: str) -> str:
    torch.manual_seed(0)
    path = tmp_path / f"raft_{variant}_random.pth"
    torch.save(build_raft(variant).state_dict(), path)
    return str(path)


@pytest.mark.parametrize("variant", ["large", "small"])
def test_state_dict_layout_is_torchvisions(variant):
    model = build_raft(variant)
    state = model.state_dict()
    expected = TORCHVISION[variant]
    assert sum(p.numel() for p in model.parameters()) == expected["num_params"]
    assert len(state) == expected["keys"]
    for key, shape in SHAPES[variant].items():
        assert tuple(state[key].shape) == shape, key
    assert not set(ABSENT[variant]) & set(state)
    assert hashlib.sha256(manifest(state).encode()).hexdigest() == expected["sha256"]


def test_saved_weights_load_strictly_and_a_wrong_variant_names_raft_variant(tmp_path):
    path = random_weights(tmp_path, "small")
    saved = torch.load(path, weights_only=True)
    loaded = load_raft(path, "small").state_dict()
    assert all(torch.equal(saved[key], loaded[key]) for key in saved)
    with pytest.raises(ValueError, match="raft_variant"):
        load_raft(path, "large")


def test_correlation_lookup_orders_offsets_x_major_as_torchvision():
    """At zero flow, level 0's tap k of pixel (y, x) is <f1(y, x), f2(y + dy, x + dx)> / sqrt(C)
    with dx = k // 9 - 4, dy = k % 9 - 4 (radius 4): torchvision's meshgrid puts x offsets first."""
    generator = torch.Generator().manual_seed(0)
    f1, f2 = torch.randn(2, 1, 16, 6, 7, generator=generator)
    corr = lookup_pyramid(correlation_pyramid(f1, f2, levels=1), pixel_grid(1, 6, 7, torch.device("cpu")), radius=4)
    assert corr.shape == (1, 81, 6, 7)
    y, x = 3, 2
    for dx, dy in [(0, 0), (1, 0), (0, 1), (2, -3)]:
        expected = (f1[0, :, y, x] * f2[0, :, y + dy, x + dx]).sum() / 4.0
        assert corr[0, (dx + 4) * 9 + (dy + 4), y, x] == pytest.approx(expected.item(), abs=1e-5)
    assert corr[0, 0, y, x] == 0, "taps outside the image read zero"


def test_upsampling_keeps_a_uniform_flow_in_full_resolution_pixels():
    coarse = torch.tensor([1.5, -0.5]).view(1, 2, 1, 1).expand(1, 2, 5, 6).contiguous()
    bilinear = upsample_flow(coarse, None)
    assert bilinear.shape == (1, 2, 40, 48)
    assert torch.allclose(bilinear, 8 * coarse[:, :, :1, :1].expand_as(bilinear))
    convex = upsample_flow(coarse, torch.randn(1, 576, 5, 6))
    interior = convex[:, :, 8:-8, 8:-8]  # border pixels mix in the zero padding of the 3x3 window
    assert torch.allclose(interior, 8 * coarse[:, :, :1, :1].expand_as(interior), atol=1e-5)


@pytest.mark.parametrize("variant", ["large", "small"])
@pytest.mark.parametrize("path,max_side", [pytest.param(DJ / "video4.mp4", 128, id="video4-128x96"),
                                           pytest.param(BEDROOM, 100, id="bedroom-100x56")])
def test_flow_on_real_frames_has_the_frames_shape(variant, path, max_side):
    """video4 (480x360) at 128x96 and bedroom (960x540) at 100x56: neither side a multiple of 8
    and both under 128, so the frames are padded for RAFT and the flow cropped back."""
    torch.manual_seed(0)
    model = build_raft(variant).eval()
    stage = Motion(MotionParams(method="raft", max_side=max_side))
    frames = clip_item(stage, path, 1.0, 1.1).frames[stage.frame_specs()[0]].images
    flows = raft_flows(model, frames[:1], frames[1:2], iterations=12, device="cpu")
    assert flows.shape == (1, *frames.shape[1:3], 2)
    assert flows.dtype == np.float32 and np.isfinite(flows).all()


@pytest.mark.parametrize("variant", ["large", "small"])
def test_motion_stage_with_raft_records_finite_scores_on_a_real_clip(tmp_path, variant):
    stage = Motion(MotionParams(method="raft", raft_variant=variant, raft_weights=random_weights(tmp_path, variant),
                                max_side=128, pairs_per_second=2.0, raft_batch_pairs=3))
    stage.setup()
    item = clip_item(stage, DJ / "video4.mp4", 2.0, 4.0)  # two girls, one talking (README)
    stage.process([item])
    meta = item.meta["motion"]
    assert meta["method"] == "raft"
    assert len(meta["pair_flow"]) == len(meta["pair_times"]) == 4  # 2 s at 2 pairs/s: two RAFT batches
    assert np.isfinite(item.scores["motion.mean_flow"]) and np.isfinite(item.scores["motion.peak_flow"])
    assert item.scores["motion.peak_flow"] >= item.scores["motion.mean_flow"] >= 0


@pytest.mark.parametrize("weights", [None, "/nonexistent/raft_large_C_T_SKHT_V2-ff5fadd5.pth"], ids=["unset", "missing"])
def test_raft_without_a_weight_file_names_raft_weights(weights):
    with pytest.raises(ValueError, match="raft_weights"):
        Motion(MotionParams(method="raft", raft_weights=weights)).setup()


def test_raft_reads_rgb_reserves_a_gpu_share_on_cuda_and_rejects_a_single_frame(tmp_path):
    on_gpu = Motion(MotionParams(method="raft", device="cuda"))
    assert on_gpu.resources().gpus > 0 and not on_gpu.frame_specs()[0].gray
    assert Motion(MotionParams()).frame_specs()[0].gray and Motion(MotionParams()).resources().gpus == 0
    small = random_weights(tmp_path, "small")
    stage = Motion(MotionParams(method="raft", raft_variant="small", raft_weights=small))
    stage.setup()
    one = ClipFrames(images=np.zeros((1, 90, 160, 3), np.uint8), times=np.zeros(1), scale=1.0)
    item = frames_item({stage.frame_specs()[0]: one})
    stage.process([item])
    assert item.reject.reason == "no_frame_pairs"
