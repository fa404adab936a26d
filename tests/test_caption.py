"""caption: Qwen-VL video preprocessing without torchvision equals transformers' PIL processor on real
frames; the stage captions real clips in one batched generate with tiny random Qwen2.5-VL and
Qwen2-VL checkpoints (the real architectures, random weights), and handles bad input."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

from clip_cutting import cut_clip
from conftest import REALDATA
from curation.frames import decode_frames
from curation.stage import ClipFrames, FrameSpec, Item
from stages.caption import Caption, CaptionParams
from stages.models.vlm import Patching, video_patches
from tiny_hf import save_tiny_qwen_vl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DJ = REALDATA / "data-juicer" / "tests" / "ops" / "data"
pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real footage folder {REALDATA} is absent")

# small per-frame pixel budget so that the tiny model sees a few hundred patches per clip
TINY = dict(device="cpu", dtype="float32", max_new_tokens=12, sample_fps=1.0, max_frames=3,
            max_side=320, min_pixels=16 * 28 * 28, max_pixels=64 * 28 * 28)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-qwen-vl")
    return {family: save_tiny_qwen_vl(root / family, family) for family in ("qwen2_5_vl", "qwen2_vl")}


def real_frames(video: str, start: float, count: int) -> np.ndarray:
    data, _ = cut_clip(DJ / video, start, start + 0.5)
    return decode_frames(data, [FrameSpec()])[FrameSpec()].images[:count]


@functools.cache
def cut_window(video: str, start: float, end: float) -> tuple[bytes, dict]:
    return cut_clip(DJ / video, start, end)


def clip_item(stage: Caption, video: str, start: float, end: float) -> Item:
    data, clip = cut_window(video, start, end)
    return Item(source_id="x", source_path=str(DJ / video), key="x-0000", clip_index=0, start=0.0,
                end=clip["duration"], members={"mp4": data}, meta={"clips": dict(clip)},
                frames=decode_frames(data, stage.frame_specs()))


def ready_stage(checkpoint: Path, family: str, **overrides) -> Caption:
    stage = Caption(CaptionParams(model_path=str(checkpoint), family=family, **{**TINY, **overrides}))
    stage.setup()
    return stage


@pytest.mark.parametrize("video", ["video4.mp4", "video3.mp4"])  # landscape 480x360, portrait 362x640
@pytest.mark.parametrize("min_pixels,max_pixels", [(56 * 56, 64 * 28 * 28), (512 * 28 * 28, 768 * 28 * 28)],
                         ids=["downscaled", "upscaled"])
def test_patches_equal_the_transformers_pil_image_processor_on_a_real_frame(video, min_pixels, max_pixels):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    frame = real_frames(video, 1.0, 1)
    reference = Qwen2VLImageProcessorPil(size={"shortest_edge": min_pixels, "longest_edge": max_pixels})(
        images=[frame], return_tensors="np")
    # one frame is padded to the temporal patch by repeating it, as the image processor does
    ours, grid = video_patches(frame, Patching(), min_pixels=min_pixels, max_pixels=max_pixels)
    assert list(grid) == reference["image_grid_thw"][0].tolist()
    np.testing.assert_allclose(ours, reference["pixel_values"], rtol=0, atol=1e-6)


def test_two_frames_fill_the_two_temporal_slots_of_each_patch():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    frames = real_frames("video4.mp4", 1.0, 2)
    assert not np.array_equal(frames[0], frames[1])
    processor = Qwen2VLImageProcessorPil(size={"shortest_edge": 56 * 56, "longest_edge": 64 * 28 * 28})
    ours, grid = video_patches(frames, Patching(), min_pixels=56 * 56, max_pixels=64 * 28 * 28)
    assert grid[0] == 1
    # a patch vector is (channel, time, 14, 14): time slot t holds frame t's pixels
    ours = ours.reshape(len(ours), 3, 2, 14, 14)
    for t in range(2):
        reference = processor(images=[frames[t]], return_tensors="np")["pixel_values"]
        np.testing.assert_allclose(ours[:, :, t], reference.reshape(len(reference), 3, 2, 14, 14)[:, :, 0], atol=1e-6)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl"])
def test_batch_of_two_real_clips_gets_captions_equal_to_one_clip_at_a_time(checkpoints, family):
    stage = ready_stage(checkpoints[family], family, clips_per_batch=2)
    assert stage.items_per_batch() == 2
    windows = [("video4.mp4", 1.0, 4.5), ("video3.mp4", 2.0, 9.0)]
    batch = [clip_item(stage, *window) for window in windows]
    stage.process(batch)
    for item in batch:
        caption = item.meta["caption"]
        assert item.kept and set(caption) == {"text", "model", "frames"}
        assert isinstance(caption["text"], str) and caption["text"].strip()
        assert caption["model"] == str(checkpoints[family])
        assert item.scores["caption.n_words"] == len(caption["text"].split())
    # 3.5 s at 1 fps: 4 frames, thinned to max_frames 3 (first, middle, last); 7 s: 7 thinned to 3
    assert batch[0].meta["caption"]["frames"] == pytest.approx([0.0, 2.0, 3.0], abs=0.05)
    assert batch[1].meta["caption"]["frames"] == pytest.approx([0.0, 3.0, 6.0], abs=0.05)
    # left padding and per-row 3-D positions: each clip's greedy caption is the same alone
    for item, window in zip(batch, windows):
        alone = clip_item(stage, *window)
        stage.process([alone])
        assert alone.meta["caption"]["text"] == item.meta["caption"]["text"]
    assert batch[0].meta["caption"]["text"] != batch[1].meta["caption"]["text"]


def test_generate_gets_one_video_token_per_merged_patch_and_the_frames_real_spacing(checkpoints):
    stage = ready_stage(checkpoints["qwen2_5_vl"], "qwen2_5_vl", clips_per_batch=2)
    seen = {}
    generate = stage._captioner.model.generate

    def spying_generate(**inputs):
        seen.update(inputs)
        return generate(**inputs)

    stage._captioner.model.generate = spying_generate
    stage.process([clip_item(stage, "video4.mp4", 1.0, 4.5), clip_item(stage, "video3.mp4", 2.0, 9.0)])
    grids = seen["video_grid_thw"]
    # 3 frames padded to 4: 2 temporal patches; sides of the frames' smart_resize over 14
    assert grids[:, 0].tolist() == [2, 2]
    video_tokens = (seen["mm_token_type_ids"] == 2).sum(dim=1)
    assert video_tokens.tolist() == (grids.prod(dim=1) // 4).tolist()
    assert len(seen["pixel_values_videos"]) == int(grids.prod(dim=1).sum())
    # frames 1.5 s and 3 s apart; a temporal patch spans 2 frames
    assert seen["second_per_grid_ts"].tolist() == pytest.approx([3.0, 6.0], abs=0.1)


def test_clip_without_frames_is_rejected_and_the_rest_of_the_batch_captioned(checkpoints):
    stage = ready_stage(checkpoints["qwen2_5_vl"], "qwen2_5_vl", clips_per_batch=2)
    good = clip_item(stage, "video4.mp4", 1.0, 3.0)
    empty = clip_item(stage, "video4.mp4", 1.0, 3.0)
    spec = stage.frame_specs()[0]
    empty.frames[spec] = ClipFrames(images=np.zeros((0, 240, 320, 3), np.uint8), times=np.zeros(0), scale=1.0)
    stage.process([empty, good])
    assert empty.reject is not None and empty.reject.reason == "no_frames"
    assert good.kept and good.meta["caption"]["text"]


def test_setup_names_the_parameter_to_fix(checkpoints, tmp_path):
    with pytest.raises(ValueError, match=r"caption\.model_path"):
        Caption(CaptionParams()).setup()
    with pytest.raises(ValueError, match=r"caption\.model_path.*allow_hub"):
        Caption(CaptionParams(model_path="Qwen/Qwen2.5-VL-7B-Instruct")).setup()
    with pytest.raises(ValueError, match=r"caption\.family is 'qwen2_vl'.*'qwen2_5_vl' checkpoint"):
        Caption(CaptionParams(model_path=str(checkpoints["qwen2_5_vl"]), family="qwen2_vl", **TINY)).setup()


def test_resources_and_batch_follow_the_params():
    on_gpu = Caption(CaptionParams(model_path="/m", device="cuda", gpus=0.5, clips_per_batch=8))
    assert on_gpu.resources().gpus == 0.5 and on_gpu.items_per_batch() == 8
    assert Caption(CaptionParams(model_path="/m", device="cpu")).resources().gpus == 0.0
    assert on_gpu.frame_specs() == [FrameSpec(fps=1.0, max_side=640)]
