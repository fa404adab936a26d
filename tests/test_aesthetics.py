"""aesthetics: the real LAION head loads strictly and scores; CLIP's preprocessing is reproduced
without torchvision; the whole CLIP + head path runs on real frames with a tiny random CLIP."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clip_cutting import cut_clip
from conftest import REALDATA
from curation.frames import decode_frames
from curation.stage import FrameSpec, Item
from stages.aesthetics import Aesthetics, AestheticsParams
from stages.models.aesthetic_head import ClipPreprocess, load_aesthetic_head

DJ = REALDATA / "data-juicer" / "tests" / "ops" / "data"
HEAD = REALDATA / "improved-aesthetic-predictor" / "sac+logos+ava1-l14-linearMSE.pth"
pytestmark = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real footage folder {REALDATA} is absent")

# preprocessor_config.json of openai/clip-vit-large-patch14 (the CLIP the head was trained on)
CLIP_L14_PREPROCESSOR = {
    "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3, "size": 224,
}


def clip_item(stage, path: Path, start: float, end: float) -> Item:
    data, clip = cut_clip(path, start, end)
    return Item(source_id="x", source_path=str(path), key="x-0000", clip_index=0, start=0.0,
                end=clip["duration"], members={"mp4": data}, meta={"clips": clip},
                frames=decode_frames(data, stage.frame_specs()))


def real_frame(path: Path) -> np.ndarray:
    data, _ = cut_clip(path, 1.0, 1.1)
    return decode_frames(data, [FrameSpec()])[FrameSpec()].images[0]


def test_real_head_loads_strictly_and_scores_an_embedding():
    head = load_aesthetic_head(HEAD)
    checkpoint = torch.load(HEAD, map_location="cpu", weights_only=True)
    loaded = head.state_dict()
    assert set(loaded) == set(checkpoint) == {f"layers.{i}.{w}" for i in (0, 2, 4, 6, 7) for w in ("weight", "bias")}
    assert all(torch.equal(loaded[k], checkpoint[k]) for k in checkpoint)
    embedding = torch.nn.functional.normalize(torch.randn(3, 768, generator=torch.Generator().manual_seed(0)), dim=-1)
    scores = head(embedding)
    assert scores.shape == (3,) and torch.isfinite(scores).all()
    # eval mode: dropout off, so the same embedding always gets the same score
    assert torch.equal(head(embedding), scores)


def test_head_refuses_a_checkpoint_with_a_missing_key(tmp_path):
    checkpoint = torch.load(HEAD, map_location="cpu", weights_only=True)
    del checkpoint["layers.7.bias"]
    torch.save(checkpoint, tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match="layers.7.bias"):
        load_aesthetic_head(tmp_path / "partial.pth")


@pytest.mark.parametrize("video", ["video4.mp4", "video3.mp4"])  # landscape 480x360, portrait 362x640
def test_preprocessing_matches_the_documented_clip_preprocessing(tmp_path, video):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(CLIP_L14_PREPROCESSOR))
    frame = real_frame(DJ / video)
    ours = ClipPreprocess.from_file(tmp_path / "preprocessor_config.json")(frame)

    # the documented steps, written out: shorter side to 224 with PIL bicubic (resample 3; longer
    # side truncated), centre crop 224 (offsets floored), /255, minus mean, over std
    height, width = frame.shape[:2]
    short, long = min(height, width), max(height, width)
    new_long = int(224 * long / short)
    new_size = (224, new_long) if width <= height else (new_long, 224)
    resized = np.asarray(Image.fromarray(frame).resize(new_size, Image.Resampling.BICUBIC), dtype=np.float64)
    top, left = (resized.shape[0] - 224) // 2, (resized.shape[1] - 224) // 2
    crop = resized[top:top + 224, left:left + 224] / 255.0
    expected = ((crop - CLIP_L14_PREPROCESSOR["image_mean"]) / CLIP_L14_PREPROCESSOR["image_std"]).transpose(2, 0, 1)

    assert ours.shape == (3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def tiny_clip(folder: Path) -> Path:
    """A randomly initialised CLIP vision tower, small but with the real 768-wide projection."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=224, patch_size=32, projection_dim=768)
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    preprocessor = {**CLIP_L14_PREPROCESSOR, "size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224},
                    "rescale_factor": 1 / 255}  # the newer layout of the same config
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


def test_clip_and_head_score_real_frames(tmp_path):
    from transformers import CLIPVisionModelWithProjection

    clip_folder = tiny_clip(tmp_path / "clip")
    stage = Aesthetics(AestheticsParams(clip_path=str(clip_folder), head_path=str(HEAD), min_score=-1e9))
    stage.setup()
    items = [clip_item(stage, DJ / "video5.mp4", 2.0, 6.0), clip_item(stage, DJ / "video4.mp4", 0.0, 2.5)]
    stage.process(items)
    for item in items:
        assert item.reject is None
        frame_scores = item.meta["aesthetics"]["frame_scores"]
        assert len(frame_scores) == len(item.frames[stage.frame_specs()[0]].images) == 2
        assert np.isfinite(item.scores["aesthetics.score"])

    # the same number, computed step by step: preprocess, CLIP image_embeds, L2-normalise, head
    frames = items[0].frames[stage.frame_specs()[0]].images
    preprocess = ClipPreprocess.from_file(clip_folder / "preprocessor_config.json")
    model = CLIPVisionModelWithProjection.from_pretrained(clip_folder).eval()
    with torch.no_grad():
        embeds = model(pixel_values=torch.from_numpy(np.stack([preprocess(f) for f in frames]))).image_embeds
        expected = load_aesthetic_head(HEAD)(embeds / embeds.norm(dim=-1, keepdim=True)).mean().item()
    assert items[0].scores["aesthetics.score"] == pytest.approx(expected, rel=1e-4)

    strict = Aesthetics(AestheticsParams(clip_path=str(clip_folder), head_path=str(HEAD), min_score=1e9))
    strict.setup()
    item = clip_item(strict, DJ / "video5.mp4", 2.0, 4.0)
    strict.process([item])
    assert item.reject.reason == "low_aesthetic"


@pytest.mark.parametrize("params,missing", [
    ({}, "clip_path"),
    ({"clip_path": "/nonexistent/clip"}, "clip_path"),
    ({"clip_path": str(REALDATA)}, "head_path"),
    ({"backend": "qalign"}, "qalign_path"),
])
def test_missing_weights_name_the_parameter(params, missing):
    with pytest.raises(ValueError, match=missing):
        Aesthetics(AestheticsParams(**params)).setup()
