"""Evaluator metrics hands (HKC, HKV) and visual_quality: the formulas on constructed keypoints, the whole
path on real frames of video4.mp4 (two girls, one braiding the other's hair) with the real YOLOX-nano and a
tiny random whole-body SimCC model of the real interface, and the quality measures and LAION aesthetic
score (tiny random CLIP, real head) on the same frames. Nothing is downloaded.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import REALDATA, require_realdata
from stages.models.rtmpose import RTMPose
from stages.models.yolox import Detections
from stages.quality import clip_quality
from training.data import ClipSample
from training.evaluation import hands, visual_quality
from training.evaluation.common import GeneratedVideo, MetricUnavailable, sample_frame_indices
from training.evaluation.hands import (HandKeypointMetric, HandSettings, WholeBodyPose, hand_keypoint_confidence,
                                       hand_keypoint_variance, hands_in_view, hands_of)
from training.media import decode_video

YOLOX = REALDATA / "YOLOX-ONNX-TFLite-Sample/model/yolox_nano.onnx"
VIDEO4 = REALDATA / "data-juicer/tests/ops/data/video4.mp4"
HEAD = REALDATA / "improved-aesthetic-predictor/sac+logos+ava1-l14-linearMSE.pth"
QUALITY_KEYS = {"sharpness", "mean_luma", "clipped_dark", "clipped_bright", "colourfulness", "noise_sigma",
                "blockiness"}


# ---------------------------------------------------------------- helpers

def simcc_model(path: Path, n_keypoints: int = 133, seed: int = 0) -> Path:
    """A random SimCC pose model with RTMPose/DWPose's interface: input [1, 3, 256, 192] float, outputs
    simcc_x [1, K, 192 * 2] and simcc_y [1, K, 256 * 2]. The crop is average-pooled to a 4 x 3 grid of
    colours that linear maps turn into sigmoid bin scores, so locations and scores follow the image."""
    rng = np.random.default_rng(seed)
    features = 3 * 4 * 3
    initializers = [numpy_helper.from_array(array.astype(np.float32), name) for name, array in [
        ("weight_x", rng.normal(0, 0.2, (features, n_keypoints * 384))),
        ("weight_y", rng.normal(0, 0.2, (features, n_keypoints * 512))),
    ]] + [numpy_helper.from_array(np.array(shape, dtype=np.int64), name)
          for name, shape in [("shape_x", [1, n_keypoints, 384]), ("shape_y", [1, n_keypoints, 512])]]
    nodes = [helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[64, 64], strides=[64, 64]),
             helper.make_node("Flatten", ["pooled"], ["flat"])]
    for axis in ("x", "y"):
        nodes += [helper.make_node("MatMul", ["flat", f"weight_{axis}"], [f"logits_{axis}"]),
                  helper.make_node("Sigmoid", [f"logits_{axis}"], [f"bins_{axis}"]),
                  helper.make_node("Reshape", [f"bins_{axis}", f"shape_{axis}"], [f"simcc_{axis}"])]
    graph = helper.make_graph(
        nodes, "tiny_simcc", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 256, 192])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, n_keypoints, 384]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, n_keypoints, 512])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime this project supports
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def sample_of(frames: np.ndarray) -> ClipSample:
    return ClipSample(key="k", frames=frames, fps=30.0, audio=None, masks=None, conf=None, speak=None, refs=[],
                      faces=[], caption="", segments=None)


def hands_array(x: np.ndarray, y: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Hand keypoints [P, T, 2, 21, 3] from x, y, score arrays broadcast to [P, T, 2, 21]."""
    shape = np.broadcast_shapes(x.shape, y.shape, score.shape)
    return np.stack([np.broadcast_to(a, shape) for a in (x, y, score)], axis=-1).astype(np.float64)


@pytest.fixture(scope="module")
def video4_frames() -> np.ndarray:
    require_realdata()
    frames, _ = decode_video(VIDEO4.read_bytes(), max_frames=40)
    return frames


@pytest.fixture(scope="module")
def wholebody_path(tmp_path_factory) -> Path:
    return simcc_model(tmp_path_factory.mktemp("pose") / "tiny_wholebody.onnx")


# ---------------------------------------------------------------- HKC / HKV formulas

def test_hkc_is_the_mean_score_of_the_hands_in_view():
    scores = np.zeros((1, 3, 2, 21))
    scores[0, 0, 0], scores[0, 1, 0], scores[0, 2, 0] = 0.9, 0.6, 0.0  # left hand, three frames
    scores[0, :, 1] = 0.3  # right hand
    in_view = np.array([[[True, True], [True, False], [False, False]]])
    hkc = hand_keypoint_confidence(hands_array(np.zeros(1), np.zeros(1), scores), in_view)
    assert hkc == pytest.approx((0.9 + 0.3 + 0.6) / 3)  # frame 2's left hand and the later right hands left out
    assert np.isnan(hand_keypoint_confidence(hands_array(np.zeros(1), np.zeros(1), scores), np.zeros_like(in_view)))


def test_a_hand_is_in_view_when_its_wrist_is_visible():
    people = np.zeros((2, 1, 133, 3))
    people[0, 0, 9, 2], people[0, 0, 10, 2] = 0.8, 0.1  # left wrist visible, right not
    people[1, 0, 10, 2] = 0.3  # at the threshold counts
    np.testing.assert_array_equal(hands_in_view(people, 0.3), [[[True, False]], [[False, True]]])


def test_hands_of_takes_the_coco_wholebody_hand_ranges():
    people = np.zeros((1, 1, 133, 3))
    people[0, 0, :, 0] = np.arange(133)
    hand = hands_of(people)
    assert hand.shape == (1, 1, 2, 21, 3)
    np.testing.assert_array_equal(hand[0, 0, 0, :, 0], np.arange(91, 112))
    np.testing.assert_array_equal(hand[0, 0, 1, :, 0], np.arange(112, 133))


def test_hkv_is_the_mean_positional_variance_over_confident_frames():
    t = 5
    x = np.zeros((1, t, 2, 21))
    y = np.zeros((1, t, 2, 21))
    score = np.full((1, t, 2, 21), 0.9)
    x[0, :, 0, 0] = [0, 2, 4, 1000, 6]  # var over the confident frames 0, 2, 4, 6 is 5
    score[0, 3, 0, 0] = 0.1  # the outlier frame is not confident: excluded
    y[0, :, 0, 1] = [1, 1, 1, 3, 3]  # var 0.96 = 0.24 * 4
    x[0, :, 0, 1] = [0, 0, 0, 0, 4]  # var 2.56: x and y variances add
    score[0, :3, 1, 2] = 0.0  # confident in 2 frames only: below min_frames, left out
    x[0, 3:, 1, 2] = [0, 100]
    hkv = hand_keypoint_variance(hands_array(x, y, score), threshold=0.3, min_frames=3)
    # 42 keypoints, 41 with enough frames: two moving, the rest still
    assert hkv == pytest.approx((5.0 + 0.96 + 2.56) / 41)
    score[:] = 0.0
    assert np.isnan(hand_keypoint_variance(hands_array(x, y, score), threshold=0.3, min_frames=3))


class MovingHandsStub:
    """Detector and pose stand-ins for two people whose left hands sweep sideways; the right hands'
    wrists are hidden. Coordinates scale with the frame, as a resized video's would."""

    def __init__(self):
        self.frame = 0

    def detect(self, image: np.ndarray) -> Detections:
        height, width = image.shape[:2]
        boxes = np.array([[0.05, 0.1, 0.45, 0.9], [0.55, 0.1, 0.95, 0.9]]) * [width, height, width, height]
        return Detections(boxes=boxes.astype(np.float32), scores=np.ones(2, dtype=np.float32))

    def estimate(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        height = image.shape[0]
        keypoints = np.zeros((len(boxes), 133, 3), dtype=np.float32)
        keypoints[:, :, 0] = boxes[:, :1] + 10 * height / 100  # everything at a fixed place ...
        keypoints[:, :, 1] = height / 2
        keypoints[:, 91:112, 0] += (self.frame % 2) * 4 * height / 100  # ... but left hands alternate by 4 %
        keypoints[:, :, 2] = 0.5
        keypoints[:, 10, 2] = 0.0
        self.frame += 1
        return keypoints


@pytest.mark.parametrize("height", [100, 300])
def test_measure_tracks_people_and_scales_positions_to_the_reference_height(height):
    stub = MovingHandsStub()
    settings = HandSettings(reference_height=100.0)
    metric = HandKeypointMetric(stub, stub, settings)
    frames = np.zeros((6, height, height * 4 // 3, 3), dtype=np.uint8)
    values = metric.score(GeneratedVideo("k", frames, 25.0, None, None), sample_of(frames))
    assert values["people"] == 2.0
    assert values["hands_in_view"] == pytest.approx(0.5)  # left hands only
    assert values["hkc"] == pytest.approx(0.5)
    # left-hand x alternates by 4 reference pixels: variance 4; the 21 still right-hand keypoints add 0
    assert values["hkv"] == pytest.approx(4.0 * 21 / 42, rel=1e-5)
    assert metric.summary() == pytest.approx(values)


# ---------------------------------------------------------------- hands on real frames

def test_hands_on_real_frames_with_yolox_and_a_wholebody_model(video4_frames, wholebody_path):
    section = {"wholebody_pose_path": str(wholebody_path), "person_detector_path": str(YOLOX), "frame_stride": 2}
    metric = hands.build(HandSettings(**section), "cpu")
    values = metric.score(GeneratedVideo("video4", video4_frames, 30.0, None, None), sample_of(video4_frames))
    assert set(values) == {"hkc", "hkv", "hands_in_view", "people"}
    assert values["people"] == 2.0  # the two girls
    assert 0.0 <= values["hands_in_view"] <= 1.0
    assert 0.0 <= values["hkc"] <= 1.0  # sigmoid scores
    assert np.isfinite(values["hkv"]) and values["hkv"] >= 0.0
    assert set(metric.summary()) == set(values)


def test_wholebody_pose_keeps_all_keypoints_and_agrees_with_rtmpose_on_the_body(video4_frames, wholebody_path):
    require_realdata()
    image = video4_frames[0]
    boxes = np.array([[20, 10, 250, 350], [230, 30, 470, 359]], dtype=np.float32)
    wholebody = WholeBodyPose.from_onnx(str(wholebody_path), padding=1.25, num_threads=1).estimate(image, boxes)
    body = RTMPose.from_onnx(str(wholebody_path), padding=1.25).estimate(image, boxes)
    assert wholebody.shape == (2, 133, 3)
    np.testing.assert_array_equal(wholebody[:, :17], body)


def test_missing_or_wrong_models_make_hands_unavailable_naming_the_key(tmp_path, wholebody_path):
    require_realdata()
    with pytest.raises(MetricUnavailable, match="wholebody_pose_path"):
        hands.build(HandSettings(person_detector_path=str(YOLOX)), "cpu")
    with pytest.raises(MetricUnavailable, match="wholebody_pose_path"):
        hands.build(HandSettings(wholebody_pose_path=str(tmp_path / "absent.onnx"), person_detector_path=str(YOLOX)), "cpu")
    with pytest.raises(MetricUnavailable, match="person_detector_path"):
        hands.build(HandSettings(wholebody_pose_path=str(wholebody_path)), "cpu")
    body_only = simcc_model(tmp_path / "body17.onnx", n_keypoints=17)
    with pytest.raises(MetricUnavailable, match=r"wholebody_pose_path.*17 keypoints.*133"):
        hands.build(HandSettings(wholebody_pose_path=str(body_only), person_detector_path=str(YOLOX)), "cpu")
    with pytest.raises(ValueError, match="frame_strid"):
        hands.build(HandSettings(wholebody_pose_path=str(wholebody_path), person_detector_path=str(YOLOX),
                                 frame_strid=2), "cpu")


# ---------------------------------------------------------------- visual quality

def test_quality_measures_on_real_frames_and_skip_reasons(video4_frames):
    metric = visual_quality.build(visual_quality.QualitySettings(frames=4), "cpu")
    assert "clip_path" in metric.skipped["laion_aesthetic"] and "qalign_path" in metric.skipped["qalign"]
    values = metric.score(GeneratedVideo("video4", video4_frames, 30.0, None, None), sample_of(video4_frames))
    assert set(values) == QUALITY_KEYS and all(np.isfinite(v) for v in values.values())
    # the stage's own function on the same frames (480x360 is under analysis_side: no resize)
    chosen = video4_frames[sample_frame_indices(len(video4_frames), 4)]
    luma = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in chosen])
    assert values == pytest.approx(clip_quality(chosen, luma, 8, 247))
    blurred = np.stack([cv2.GaussianBlur(frame, (9, 9), 3) for frame in video4_frames])
    assert metric.measure(blurred)["sharpness"] < values["sharpness"] / 2
    assert metric.summary() == pytest.approx(values)


def test_large_frames_are_shrunk_to_the_analysis_side():
    frame = np.zeros((720, 1280, 3), dtype=np.uint8)
    assert visual_quality.fit_longer_side(frame, 512).shape == (288, 512, 3)
    assert visual_quality.fit_longer_side(frame, 2000) is frame


def tiny_clip(folder: Path) -> Path:
    """A random CLIP vision tower, small but with the real 768-wide projection the LAION head reads."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=224, patch_size=32, projection_dim=768)
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": 224, "size": 224, "resample": 3, "do_center_crop": True, "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    return folder


def test_laion_aesthetic_with_a_tiny_clip_and_the_real_head(tmp_path, video4_frames):
    from stages.models.aesthetic_head import LaionAestheticScorer

    clip_folder = tiny_clip(tmp_path / "clip")
    section = {"clip_path": str(clip_folder), "aesthetic_head_path": str(HEAD), "frames": 3}
    metric = visual_quality.build(visual_quality.QualitySettings(**section), "cpu")
    assert set(metric.skipped) == {"qalign"}
    values = metric.measure(video4_frames)
    chosen = list(video4_frames[sample_frame_indices(len(video4_frames), 3)])
    expected = LaionAestheticScorer(clip_folder, HEAD, "cpu")(chosen).mean()
    assert values["laion_aesthetic"] == pytest.approx(float(expected), rel=1e-5)
    assert set(values) == QUALITY_KEYS | {"laion_aesthetic"}

    headless = visual_quality.build(visual_quality.QualitySettings(clip_path=str(clip_folder)), "cpu")
    assert "aesthetic_head_path" in headless.skipped["laion_aesthetic"]
    assert "laion_aesthetic" not in headless.measure(video4_frames[:2])
