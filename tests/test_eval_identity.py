"""Evaluation identity metrics (training/evaluation/identity.py): CLIP-I, DINO-I, face similarity, CLIP-T.

No CLIP, DINOv2, Grounding-DINO or ArcFace weights can be fetched here, so the models are miniature
random configurations of the real architectures (a CLIP byte-level BPE tokenizer included), saved to
folders and loaded through `build` like downloaded checkpoints; ArcFace is a tiny ONNX graph with the
real interface (input [1, 3, 112, 112], output [1, 512]). Faces are found by the REAL YuNet weights.
Random embeddings say nothing about who is who: the tests check the plumbing on real frames of
video4 (two girls), shapes and ranges, that an image compared with itself scores 1, the alignment
geometry and the preprocessing against transformers' own processor.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from conftest import REALDATA, require_realdata
from stages.models.aesthetic_head import ClipPreprocess
from stages.models.checkpoint_configs import save_random_grounding_dino
from stages.models.image_preprocessing import IMAGENET_MEAN, IMAGENET_STD
from training.data import ClipSample
from training.evaluation.common import GeneratedVideo, MetricUnavailable
from training.evaluation.identity import (ARCFACE_TEMPLATE, ClipEmbedder, DinoEmbedder, IdentitySettings,
                                          align_face, arcface_pixels, best_match_similarity, build,
                                          similarity_transform, subject_crops, subject_similarity, text_similarity)

VIDEO4 = REALDATA / "data-juicer/tests/ops/data/video4.mp4"
YUNET_DYNAMIC = REALDATA / "libfacedetection.train/onnx/yunet_n_dynamic.onnx"
YUNET_FIXED = REALDATA / "libfacedetection.train/onnx/yunet_n_320_320.onnx"
CLIP_MEAN, CLIP_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
# openai/clip-vit-*'s preprocessor_config.json and facebook/dinov2-*'s
CLIP_PREPROCESSOR = {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                     "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
                     "resample": 3, "size": 224}
DINOV2_PREPROCESSOR = {"crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
                       "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": list(IMAGENET_MEAN),
                       "image_processor_type": "BitImageProcessor", "image_std": list(IMAGENET_STD), "resample": 3,
                       "rescale_factor": 1 / 255, "size": {"shortest_edge": 256}}
# frame 30 (1 s) of video4: each girl's body, and her head (YuNet's face box widened to the 1.8 face
# sizes the references stage crops), as x1, y1, x2, y2
BODIES = [(120, 140, 360, 360), (255, 150, 445, 360)]
HEADS = [(112, 117, 310, 315), (226, 142, 359, 276)]
LONG_CAPTION = "two girls talk in a bedroom, one with glasses in a green shirt, one in blue; " * 8


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run many small ops: one thread avoids OpenMP spinning against the other tests on two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- tiny checkpoints


def save_tiny_clip(folder: Path) -> Path:
    """A random two-tower CLIPModel with a CLIP BPE tokenizer (byte alphabet, a few merges) and
    openai's preprocessor config."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = [("g", "i"), ("gi", "r"), ("gir", "l</w>")]
    tokens = [*alphabet, *(char + "</w>" for char in alphabet), "gi", "gir", "girl</w>", "<|startoftext|>",
              "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={token: index for index, token in enumerate(tokens)}, merges=merges)
    tokenizer.save_pretrained(folder)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=224,
                  patch_size=32)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR))
    return folder


def save_tiny_dinov2(folder: Path) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
                             image_size=224, patch_size=14)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(DINOV2_PREPROCESSOR))
    return folder


def save_tiny_arcface(path: Path, side: int = 112) -> Path:
    """ArcFace's interface (input [1, 3, side, side] float, side 112 as in insightface's models; output
    [1, 512]) on a tiny random graph: 8x8 average pooling, flatten, a dense layer."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).normal(size=(3 * (side // 8) ** 2, 512)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Gemm", ["flat", "weights", "bias"], ["embedding"])],
        "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 512])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(np.zeros(512, np.float32), "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("identity-checkpoints")
    return {"clip_path": str(save_tiny_clip(root / "clip")),
            "dino_path": str(save_tiny_dinov2(root / "dinov2")),
            "grounding_path": str(save_random_grounding_dino(root / "grounding", "test", shortest_edge=200,
                                                             longest_edge=320)),
            "arcface_path": str(save_tiny_arcface(root / "arcface.onnx"))}


@pytest.fixture(scope="module")
def full_section(checkpoints) -> dict:
    require_realdata()
    # box_threshold 0: random Grounding-DINO scores are low, and the crops must exist to be scored
    return {**checkpoints, "face_detector_path": str(YUNET_DYNAMIC), "box_threshold": 0.0, "max_subjects": 3}


# ---------------------------------------------------------------- real frames


@pytest.fixture(scope="module")
def video4_frames() -> np.ndarray:
    """Seconds 1 to 3 of video4 (480x360, 30 fps): 60 frames RGB uint8."""
    require_realdata()
    with av.open(str(VIDEO4)) as container:
        frames = [frame.to_ndarray(format="rgb24") for _, frame in zip(range(90), container.decode(video=0))]
    return np.stack(frames[30:90])


def cut(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x1, y1, x2, y2 = box
    return np.ascontiguousarray(frame[y1:y2, x1:x2])


def sample_of(frames: np.ndarray, caption: str = LONG_CAPTION) -> ClipSample:
    """A test sample with both girls' references cut from the first frame."""
    return ClipSample(key="video4", frames=frames, fps=30.0, audio=None, masks=None, conf=None, speak=None,
                      refs=[cut(frames[0], box) for box in BODIES], faces=[cut(frames[0], box) for box in HEADS],
                      caption=caption, segments=None)


def generated_of(frames: np.ndarray) -> GeneratedVideo:
    return GeneratedVideo(key="video4", frames=frames, fps=30.0, audio=None, trace=None)


# ---------------------------------------------------------------- configuration


def test_unknown_settings_are_errors():
    with pytest.raises(ValueError, match="box_treshold"):
        IdentitySettings(box_treshold=0.3)


def test_nothing_configured_names_every_missing_key():
    with pytest.raises(MetricUnavailable) as unavailable:
        build(IdentitySettings(), "cpu")
    for key in ("clip_path", "dino_path", "arcface_path"):
        assert key in str(unavailable.value)


@pytest.mark.parametrize("configured, skipped_reasons", [
    (["clip_path"], {"clip_i": "grounding_path", "dino_i": "dino_path", "face_similarity": "arcface_path"}),
    (["dino_path", "grounding_path", "arcface_path"], {"clip_i": "clip_path", "face_similarity": "face_detector_path",
                                                       "clip_t": "clip_path"}),
])
def test_each_skipped_value_names_its_missing_key(checkpoints, configured, skipped_reasons):
    metric = build(IdentitySettings(**{key: checkpoints[key] for key in configured}), "cpu")
    assert set(metric.skipped) == set(skipped_reasons)
    for name, key in skipped_reasons.items():
        assert metric.skipped[name].startswith(f"{name}: set {key}")


def test_a_path_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(MetricUnavailable, match=r"clip_path=.*does not exist"):
        build(IdentitySettings(clip_path=str(tmp_path / "absent")), "cpu")


# ---------------------------------------------------------------- the whole metric on real frames


def test_scores_on_real_frames_are_cosines(full_section, video4_frames):
    metric = build(IdentitySettings(**full_section), "cpu")
    assert metric.skipped == {}
    scores = metric.score(generated_of(video4_frames), sample_of(video4_frames))
    assert set(scores) == {"clip_i", "dino_i", "face_similarity", "clip_t"}
    for name, value in scores.items():
        assert math.isfinite(value) and -1.0 <= value <= 1.0, (name, value)
    assert metric.summary() == pytest.approx(scores)


def test_subjects_are_crops_of_the_frames(full_section, video4_frames):
    metric = build(IdentitySettings(**{key: full_section[key] for key in ("clip_path", "grounding_path", "box_threshold")}), "cpu")
    frames = video4_frames[:2]
    crops = metric.subjects.crops(frames)
    assert len(crops) == 2 and all(frame_crops for frame_crops in crops)
    for frame_crops in crops:
        for crop in frame_crops:
            assert crop.dtype == np.uint8 and crop.ndim == 3 and min(crop.shape[:2]) >= 16


def test_subject_crops_round_outwards_clip_and_drop_small_boxes():
    frame = np.arange(100 * 80 * 3, dtype=np.uint8).reshape(100, 80, 3)
    crops = subject_crops(frame, np.array([[10.5, 20.2, 40.1, 70.9], [-5, -5, 90, 120], [0, 0, 10, 50]]), 16)
    assert [crop.shape[:2] for crop in crops] == [(51, 31), (100, 80)]
    assert np.array_equal(crops[0], frame[20:71, 10:41])


def test_video_without_caption_or_references_scores_nan(full_section, video4_frames):
    metric = build(IdentitySettings(**{key: full_section[key] for key in ("clip_path", "grounding_path", "box_threshold")}), "cpu")
    sample = sample_of(video4_frames, caption=" ")
    sample.refs = [None, None]
    scores = metric.score(generated_of(video4_frames), sample)
    assert math.isnan(scores["clip_i"]) and math.isnan(scores["clip_t"])
    assert metric.summary() == {}


# ---------------------------------------------------------------- embedding path


def test_a_reference_against_itself_scores_one(checkpoints, video4_frames):
    references = [cut(video4_frames[0], box) for box in BODIES]
    for embedder in (ClipEmbedder(checkpoints["clip_path"], "cpu"), DinoEmbedder(checkpoints["dino_path"], "cpu")):
        # every frame shows exactly the two references: each identity's best match is itself
        assert subject_similarity(embedder, references, [references] * 5) == pytest.approx(1.0, abs=1e-5)
        embeddings = embedder.images(references)
        assert embeddings.dtype == np.float32 and np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)


def test_best_match_takes_each_identitys_closest_candidate_in_frames_that_have_any():
    references = np.eye(3, dtype=np.float32)[:2]  # identities along x and y
    frame_with_both = np.array([[1, 0, 0], [0, 0.6, 0.8]], np.float32)
    frame_with_x = np.array([[0.6, 0, 0.8]], np.float32)
    empty = np.zeros((0, 3), np.float32)
    # x: (1 + 0.6) / 2, y: (0.6 + 0) / 2
    assert best_match_similarity(references, [frame_with_both, empty, frame_with_x]) == pytest.approx(0.55)
    assert math.isnan(best_match_similarity(references, [empty]))
    assert math.isnan(best_match_similarity(references[:0], [frame_with_both]))


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    from transformers import ViTConfig, ViTModel

    # DINO v1 (facebook/dino-vits16) is a ViTModel: loaded as Dinov2Model its weights would be random
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       patch_size=16)).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(DINOV2_PREPROCESSOR))
    with pytest.raises(ValueError, match="is not a Dinov2Model checkpoint"):
        DinoEmbedder(str(tmp_path), "cpu")


def test_dinov2_preprocessing_equals_transformers_processor(tmp_path, video4_frames):
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(DINOV2_PREPROCESSOR))
    person = cut(video4_frames[0], BODIES[1])  # taller than wide: the centre crop cuts top and bottom
    ours = ClipPreprocess.from_file(tmp_path / "preprocessor_config.json")(person)
    settings = {key: value for key, value in DINOV2_PREPROCESSOR.items() if key != "image_processor_type"}
    theirs = BitImageProcessorPil(**settings)(person, return_tensors="np")["pixel_values"][0]
    assert ours.shape == (3, 224, 224)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_clip_t_truncates_long_captions_to_77_tokens(checkpoints, video4_frames):
    clip = ClipEmbedder(checkpoints["clip_path"], "cpu")
    assert len(clip.tokenizer(LONG_CAPTION)["input_ids"]) > 77
    value = text_similarity(clip, video4_frames[:2], LONG_CAPTION)
    assert math.isfinite(value) and -1 <= value <= 1
    # everything past the 77th token is ignored
    assert text_similarity(clip, video4_frames[:2], LONG_CAPTION + " girl") == pytest.approx(value, abs=1e-6)


# ---------------------------------------------------------------- faces


def test_alignment_maps_the_template_to_itself():
    identity = np.array([[1, 0, 0], [0, 1, 0]], np.float64)
    np.testing.assert_allclose(similarity_transform(ARCFACE_TEMPLATE, ARCFACE_TEMPLATE), identity, atol=1e-6)
    # landmarks of a face turned by 30 degrees, twice as large and elsewhere map back onto the template
    angle = np.deg2rad(30)
    turn = 2.0 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = ARCFACE_TEMPLATE @ turn.T + [300, 40]
    matrix = similarity_transform(moved, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(moved @ matrix[:, :2].T + matrix[:, 2], ARCFACE_TEMPLATE, atol=1e-4)
    # on real, not exactly similar landmarks (YuNet's, the left girl on frame 30) it is the least-squares
    # similarity: u = a x - b y + tx, v = b x + a y + ty solved as a linear system gives the same matrix
    landmarks = np.array([[183, 196], [216, 200], [186, 216], [181, 238], [209, 240]], np.float64)
    x, y = landmarks.T
    ones, zeros = np.ones(5), np.zeros(5)
    system = np.concatenate([np.stack([x, -y, ones, zeros], 1), np.stack([y, x, zeros, ones], 1)])
    (a, b, tx, ty), *_ = np.linalg.lstsq(system, np.concatenate(ARCFACE_TEMPLATE.T.astype(np.float64)), rcond=None)
    np.testing.assert_allclose(similarity_transform(landmarks, ARCFACE_TEMPLATE), [[a, -b, tx], [b, a, ty]],
                               atol=1e-6)
    # a 112x112 image whose landmarks already sit on the template comes out unchanged
    image = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    assert np.array_equal(align_face(image, ARCFACE_TEMPLATE), image)


def test_an_arcface_model_of_another_input_size_is_refused(tmp_path):
    require_realdata()
    section = {"arcface_path": str(save_tiny_arcface(tmp_path / "arcface128.onnx", side=128)),
               "face_detector_path": str(YUNET_DYNAMIC)}
    with pytest.raises(ValueError, match=r"arcface_path=.*arcface128.onnx.* takes input \[1, 3, 128, 128\]"):
        build(IdentitySettings(**section), "cpu")


def test_arcface_input_is_rgb_scaled_to_plus_minus_one():
    red = np.zeros((112, 112, 3), np.uint8)
    red[..., 0] = 255
    pixels = arcface_pixels(red)
    assert pixels.shape == (3, 112, 112) and pixels.dtype == np.float32
    assert np.all(pixels[0] == 1.0) and np.all(pixels[1:] == -1.0)


@pytest.mark.parametrize("detector", [YUNET_DYNAMIC, YUNET_FIXED], ids=["onnxruntime", "opencv"])
def test_real_yunet_finds_both_girls_and_their_reference_faces(full_section, video4_frames, detector):
    metric = build(IdentitySettings(arcface_path=full_section["arcface_path"], face_detector_path=str(detector)), "cpu")
    found = metric.faces.detector.detect(video4_frames[::15])
    assert [len(faces.scores) for faces in found] == [2, 2, 2, 2]
    for index, box in enumerate(HEADS):
        face, was_found = metric.faces.reference_face(cut(video4_frames[0], box), "video4", index)
        assert was_found and face.shape == (112, 112, 3) and face.dtype == np.uint8


def test_a_face_reference_without_a_face_falls_back_to_the_resized_crop(full_section, caplog):
    metric = build(IdentitySettings(**{key: full_section[key] for key in ("arcface_path", "face_detector_path")}), "cpu")
    white = np.full((150, 150, 3), 255, np.uint8)
    face, was_found = metric.faces.reference_face(white, "blank", 0)
    assert not was_found and face.shape == (112, 112, 3) and np.all(face == 255)
    assert "no face found in blank's face_0.png" in caplog.text


def test_a_face_against_itself_scores_one(full_section, video4_frames):
    metric = build(IdentitySettings(**{key: full_section[key] for key in ("arcface_path", "face_detector_path")}), "cpu")
    head = cut(video4_frames[0], HEADS[0])
    sample = sample_of(video4_frames)
    sample.faces = [head]
    # the "generated" video is the reference head crop itself: same detections, same aligned face
    scores = metric.score(generated_of(np.stack([head] * 5)), sample)
    assert scores["face_similarity"] == pytest.approx(1.0, abs=1e-5)
