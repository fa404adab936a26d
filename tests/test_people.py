"""people stage: YOLOX + MoveNet on real footage, tracking, pose.npz, and the pose measures.

Real-data expectations come from ../shared/realdata/README.md (who is in each video); the windows
cut from the longer videos start at keyframes so that stream copy gives decodable clips.
"""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import REALDATA, REPO_ROOT
from curation.frames import decode_frames
from curation.stage import ClipFrames, Item
from stages.models.pose_metrics import (HUMAN_SIZES, amplitude_class, human_size_ranks, motion_amplitude,
                                        track_human_size)
from stages.models.rtmpose import RTMPose, decode_simcc
from stages.models.yolox import Detections, YoloxPersonDetector, anchor_grid, decode_person_boxes, nms
from stages.people import People, PeopleParams, link_tracks

sys.path.insert(0, str(REPO_ROOT / "bench"))
from people_bench import judge_everything, same_answer  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

YOLOX = REALDATA / "YOLOX-ONNX-TFLite-Sample/model/yolox_nano.onnx"
MOVENET = REALDATA / "MoveNet-Python-Example/tflite/lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite"
DATA_JUICER = REALDATA / "data-juicer/tests/ops/data"
BEDROOM = REALDATA / "sam2/notebooks/videos/bedroom.mp4"
ONE_BY_ONE = REALDATA / "sample-videos/one-by-one-person-detection.mp4"

needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real footage and weights not found at {REALDATA}")


# ---------------------------------------------------------------- helpers

def cut_clip(path: Path, start: float, end: float) -> tuple[bytes, dict]:
    """Stream-copy the video packets from the keyframe at or before `start` up to `end` into an mp4;
    returns it and the clip metadata the executor would provide."""
    buffer = io.BytesIO()
    with av.open(str(path)) as source, av.open(buffer, "w", format="mp4") as target:
        video = source.streams.video[0]
        copy = target.add_stream_from_template(video)
        source.seek(int(start / video.time_base), stream=video, backward=True)
        n_frames = 0
        for packet in source.demux(video):
            if packet.pts is None:
                continue
            if packet.pts * video.time_base >= end:
                break
            packet.stream = copy
            target.mux(packet)
            n_frames += 1
        fps = float(video.average_rate)
        width, height = video.codec_context.width, video.codec_context.height
    clip = {"fps": fps, "n_frames": n_frames, "width": width, "height": height, "has_audio": False,
            "duration": n_frames / fps}
    return buffer.getvalue(), clip


def run_on(stage: People, path: Path, start: float = 0.0, end: float = 1e9) -> Item:
    data, clip = cut_clip(path, start, end)
    item = Item(source_id="x", source_path=str(path), key="x-0000", clip_index=0, start=0.0,
                end=clip["duration"], members={"mp4": data}, meta={"clips": clip},
                frames=decode_frames(data, stage.frame_specs()))
    stage.process([item])
    return item


def pose_arrays(item: Item) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(item.members["pose.npz"])) as npz:
        return {name: npz[name] for name in npz.files}


def check_pose_npz(item: Item, stage: People) -> dict[str, np.ndarray]:
    """pose.npz has the documented shapes and types, and is consistent with itself and the meta."""
    pose = pose_arrays(item)
    clip = item.meta["clips"]
    n_people = item.scores["people.n_people"]
    n_samples = len(item.frames[stage.frame_specs()[0]].images)
    assert pose["kpts"].dtype == np.float16 and pose["kpts"].shape == (n_people, n_samples, 17, 3)
    assert pose["frames"].dtype == np.int32 and pose["frames"].shape == (n_samples,)
    assert pose["boxes"].dtype == np.float32 and pose["boxes"].shape == (n_people, n_samples, 4)
    assert np.all(np.diff(pose["frames"]) > 0) and 0 <= pose["frames"][0] and pose["frames"][-1] < clip["n_frames"]
    # about sample_fps samples per second of clip
    assert abs(pose["frames"][1] - pose["frames"][0] - clip["fps"] / stage.params.sample_fps) <= 1
    absent = np.isnan(pose["boxes"][..., 0])
    assert np.array_equal(absent, np.isnan(pose["kpts"][..., 0, 0].astype(np.float32)))
    assert np.all(pose["kpts"][absent][..., 2] == 0)
    visible = pose["kpts"][..., 2].astype(np.float32) >= stage.params.keypoint_threshold
    xy = pose["kpts"][..., :2].astype(np.float32)[visible]
    assert np.all((xy >= 0) & (xy <= [clip["width"], clip["height"]]))
    boxes = pose["boxes"][~absent]
    size = [clip["width"], clip["height"], clip["width"], clip["height"]]
    assert np.all(boxes[:, :2] < boxes[:, 2:]) and np.all((boxes >= 0) & (boxes <= np.add(size, 1)))
    return pose


def check_identities(item: Item) -> list[dict]:
    identities = item.meta["people"]["identities"]
    assert [person["id"] for person in identities] == list(range(item.scores["people.n_people"]))
    for person in identities:
        assert person["human_size"] in HUMAN_SIZES
        assert person["motion_class"] == amplitude_class(person["motion_amplitude"])
        assert len(person["mean_box"]) == 4 and 0 < person["presence"] <= 1
    centres = [(person["mean_box"][0] + person["mean_box"][2]) / 2 for person in identities]
    assert centres == sorted(centres), "identities are ordered left to right"
    return identities


@pytest.fixture(scope="module")
def stage() -> People:
    if not REALDATA.is_dir():
        pytest.skip(f"real footage and weights not found at {REALDATA}")
    people = People(PeopleParams(detector_path=str(YOLOX), pose_model_path=str(MOVENET)))
    people.setup()
    return people


# ---------------------------------------------------------------- real footage

@needs_realdata
@pytest.mark.parametrize("video, start, end", [("video3.mp4", 4.3, 10.0), ("video4.mp4", 0.0, 10.6)])
def test_two_people_talking(stage, video, start, end):
    """README: 2 women at a table (video3); 2 girls, one braiding the other's hair (video4)."""
    item = run_on(stage, DATA_JUICER / video, start, end)
    assert item.kept, item.reject
    assert item.scores["people.n_people"] == 2
    assert item.scores["people.max_people_per_frame"] == 2
    check_pose_npz(item, stage)
    check_identities(item)
    assert item.scores["people.human_size"] in HUMAN_SIZES
    assert np.array_equal(item.arrays["people.boxes"], pose_arrays(item)["boxes"], equal_nan=True)


@needs_realdata
def test_two_children_jumping_in_clip_pixels(stage):
    """README: 2 children jumping on a bed (960x540, analysed at 640x360): boxes come back in clip
    pixels, matching a detection on the native-size frame; jumping is large motion."""
    item = run_on(stage, BEDROOM)
    assert item.kept, item.reject
    assert item.scores["people.n_people"] == 2
    pose = check_pose_npz(item, stage)
    check_identities(item)
    assert item.scores["people.max_motion_amplitude"] >= 0.2  # significant or extreme
    with av.open(str(BEDROOM)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    native = YoloxPersonDetector(str(YOLOX)).detect(first).boxes
    at_start = pose["boxes"][:, 0][~np.isnan(pose["boxes"][:, 0, 0])]
    best_iou = [max(_iou(box, other) for other in native) for box in at_start]
    assert len(at_start) and min(best_iou) > 0.7, best_iou


@needs_realdata
def test_nobody_then_one_person_at_a_time(stage):
    """README: people walk past one at a time, often nobody in frame. The first 5 s are empty;
    from 7 s one person walks through."""
    empty = run_on(stage, ONE_BY_ONE, 0.0, 5.0)
    assert empty.reject is not None and empty.reject.reason == "no_people"
    assert empty.scores["people.n_people"] == 0 and "pose.npz" not in empty.members

    walking = run_on(stage, ONE_BY_ONE, 0.0, 12.0)
    assert walking.kept, walking.reject
    assert walking.scores["people.n_people"] == 1 and walking.scores["people.max_people_per_frame"] == 1
    boxes = check_pose_npz(walking, stage)["boxes"][0]
    times = walking.frames[stage.frame_specs()[0]].times
    assert np.all(np.isnan(boxes[times < 5.0, 0])), "nobody in the first 5 s"
    assert np.all(np.isfinite(boxes[times >= 8.0, 0])), "the walker is tracked as one identity"


@needs_realdata
@pytest.mark.parametrize("video, start, end", [("video2.mp4", 0.0, 10.4), ("video5.mp4", 0.0, 12.0)])
def test_one_person(stage, video, start, end):
    """README: 1 person (video2 is a close-up torso where a hand is sometimes detected as a person
    of its own: it must not become a second identity)."""
    item = run_on(stage, DATA_JUICER / video, start, end)
    assert item.kept, item.reject
    assert item.scores["people.n_people"] == 1
    check_pose_npz(item, stage)
    (person,) = check_identities(item)
    assert person["human_size"] == item.scores["people.human_size"]


@needs_realdata
def test_cartoon_is_handled(stage):
    """README: video1 is a cartoon with no real people: whatever YOLOX sees, the stage records a
    verdict without crashing."""
    item = run_on(stage, DATA_JUICER / "video1.mp4", 0.0, 6.0)
    assert isinstance(item.scores["people.n_people"], int)
    if item.kept:
        check_pose_npz(item, stage)
    else:
        assert item.reject.reason in ("no_people", "too_many_people")


@needs_realdata
def test_empty_clip_is_rejected(stage):
    spec = stage.frame_specs()[0]
    empty = ClipFrames(images=np.zeros((0, 360, 640, 3), np.uint8), times=np.zeros(0), scale=1.0)
    item = Item(source_id="x", source_path="none", key="x-0000", clip_index=0, frames={spec: empty},
                meta={"clips": {"fps": 25.0, "n_frames": 0, "width": 640, "height": 360, "has_audio": False,
                                "duration": 0.0}})
    stage.process([item])
    assert item.reject.reason == "no_frames"


# ---------------------------------------------------------------- skipping what cannot change the answer

class CountingPose:
    """Wraps a PoseEstimator and counts the boxes it is asked to pose."""

    def __init__(self, pose):
        self.pose = pose
        self.boxes_posed = 0

    def estimate(self, image_rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        self.boxes_posed += len(boxes)
        return self.pose.estimate(image_rgb, boxes)


class ScriptedDetector:
    """A PersonDetector that returns script[t] for sample t (its index is written in pixel 0, 0), and
    counts its calls."""

    def __init__(self, script: list[list[list[float]]]):
        self.script = script
        self.calls = 0

    def detect(self, image_rgb: np.ndarray) -> Detections:
        self.calls += 1
        boxes = np.array(self.script[int(image_rgb[0, 0, 0])], dtype=np.float32).reshape(-1, 4)
        return Detections(boxes, np.ones(len(boxes), np.float32))


class VisibleBodyPose:
    """A pose model that sees every joint of every box (spread along its diagonal, score 0.9)."""

    def estimate(self, image_rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        along = (np.arange(17) + 1) / 18
        keypoints = np.full((len(boxes), 17, 3), 0.9, dtype=np.float32)
        keypoints[..., 0] = boxes[:, None, 0] + along * (boxes[:, None, 2] - boxes[:, None, 0])
        keypoints[..., 1] = boxes[:, None, 1] + along * (boxes[:, None, 3] - boxes[:, None, 1])
        return keypoints


def scripted_runs(script: list[list[list[float]]]) -> tuple[Item, Item, People, People]:
    """The stage as it runs, and judging everything, on 640x360 samples at 2 fps whose person boxes
    are `script` (one list of xyxy boxes per sample); returns both items and both stages."""
    runs = []
    for process in (lambda stage, item: stage.process([item]), judge_everything):
        stage = People(PeopleParams())
        stage.detector, stage.pose, stage.face_detector = ScriptedDetector(script), CountingPose(VisibleBodyPose()), None
        images = np.zeros((len(script), 360, 640, 3), np.uint8)
        images[:, 0, 0, 0] = np.arange(len(script))
        frames = ClipFrames(images=images, times=np.arange(len(script)) / 2.0, scale=1.0)
        item = Item(source_id="x", source_path="none", key="x-0000", clip_index=0,
                    frames={stage.frame_specs()[0]: frames},
                    meta={"clips": {"fps": 10.0, "n_frames": 5 * len(script), "width": 640, "height": 360,
                                    "has_audio": False, "duration": len(script) / 2.0}})
        process(stage, item)
        runs.append((item, stage))
    (item, stage), (everything, full) = runs
    return item, everything, stage, full


def test_pose_is_skipped_where_the_boxes_decide():
    """10 samples: a track must be salient, so large (3% of the frame), in 3 of them. A large box seen
    in 2 samples and a small one in all can never be: no pose is asked for, detection stops once the
    2 samples left could not make any track qualify, and the answer is the one judging everything gives."""
    large, small = [50, 50, 150, 250], [500, 100, 540, 180]  # 20000 and 3200 px of 230400
    item, everything, stage, full = scripted_runs([[large, small]] * 2 + [[small]] * 8)
    assert item.reject.reason == everything.reject.reason == "no_people"
    assert same_answer(everything, item)
    assert stage.pose.boxes_posed == 0 and full.pose.boxes_posed == 2
    assert stage.detector.calls == 8 and full.detector.calls == 10
    assert item.meta["people"]["detected_frames"] == 8 and item.meta["people"]["posed_boxes"] == 0
    assert item.meta["people"]["sampled_frames"] == 10


def test_pose_is_skipped_for_a_track_too_brief_to_count():
    """One person large in all 10 samples, another large in only 2: only the first is posed, and the
    kept clip's scores, identities, arrays and pose.npz are those of judging everything."""
    person, passer_by = [50, 50, 150, 250], [400, 50, 500, 250]
    script = [[person, passer_by] if t in (4, 5) else [person] for t in range(10)]
    item, everything, stage, full = scripted_runs(script)
    assert item.kept and item.scores["people.n_people"] == 1
    assert same_answer(everything, item)
    assert stage.pose.boxes_posed == 10 and full.pose.boxes_posed == 12
    assert stage.detector.calls == full.detector.calls == 10


@needs_realdata
@pytest.mark.parametrize("video, needs_pose", [(DATA_JUICER / "video1.mp4", False), (BEDROOM, True)],
                         ids=["cartoon", "bedroom"])
def test_skipping_keeps_the_answer_on_real_footage(stage, video, needs_pose):
    """The cartoon (no_people: YOLOX boxes its characters, but no track is large in enough samples)
    needs no pose at all; bedroom's two children keep all theirs. Both answers equal judging everything."""
    counting = CountingPose(stage.pose)
    skipping, everything = People(stage.params), People(stage.params)
    for run in (skipping, everything):
        run.detector, run.pose, run.face_detector = stage.detector, counting, None
    data, clip = cut_clip(video, 0.0, 1e9)
    frames = decode_frames(data, stage.frame_specs())
    items = []
    for process in (lambda item: skipping.process([item]), lambda item: judge_everything(everything, item)):
        item = Item(source_id="x", source_path=str(video), key="x-0000", clip_index=0, start=0.0, end=clip["duration"],
                    meta={"clips": clip}, frames=frames)
        counting.boxes_posed = 0
        process(item)
        items.append((item, counting.boxes_posed))
    (item, posed_boxes), (judged, all_posed) = items
    assert same_answer(judged, item)
    assert posed_boxes == item.meta["people"]["posed_boxes"] and all_posed == judged.meta["people"]["posed_boxes"]
    assert 0 < posed_boxes <= all_posed if needs_pose else posed_boxes == 0 < all_posed


def test_setup_names_the_missing_parameter(tmp_path):
    with pytest.raises(ValueError, match="detector_path"):
        People(PeopleParams(pose_model_path="x")).setup()
    detector = tmp_path / "detector.onnx"
    detector.write_bytes(b"")
    with pytest.raises(ValueError, match="pose_model_path"):
        People(PeopleParams(detector_path=str(detector), pose_backend="rtmpose",
                            pose_model_path=str(tmp_path / "missing.onnx"))).setup()


# ---------------------------------------------------------------- human size and motion amplitude

def _scores(*visible_joints: int) -> np.ndarray:
    scores = np.full(17, 0.05, dtype=np.float32)
    scores[[0, 1, 2, 3, 4, 5, 6]] = 0.9  # head and shoulders: always in view
    scores[list(visible_joints)] = 0.9
    return scores


@pytest.mark.parametrize("joints, size", [
    ((), "portrait"),
    ((8,), "chest"),
    ((7, 8, 9), "chest"),
    ((7, 8, 11), "waist"),
    ((7, 8, 11, 12, 14), "knees"),
    ((7, 8, 11, 12, 13, 14, 16), "full_body"),
    ((15,), "full_body"),  # an ankle in view implies the whole body is framed
])
def test_human_size_from_visible_keypoints(joints, size):
    assert HUMAN_SIZES[int(human_size_ranks(_scores(*joints), threshold=0.3))] == size


def test_human_size_threshold_and_track_median():
    scores = _scores(11, 12)
    scores[[11, 12]] = 0.35
    assert HUMAN_SIZES[int(human_size_ranks(scores, 0.3))] == "waist"
    assert HUMAN_SIZES[int(human_size_ranks(scores, 0.4))] == "portrait"
    # one pose with hallucinated ankles among waist-framed poses does not make the person full body
    track = np.stack([_scores(7, 11)] * 4 + [_scores(7, 11, 15, 16)])
    assert track_human_size(track, 0.3) == "waist"


def _shoulders_track(chest_x: list[float], width: float = 40.0) -> np.ndarray:
    keypoints = np.zeros((len(chest_x), 17, 3), dtype=np.float32)
    for t, x in enumerate(chest_x):
        keypoints[t, 5] = (x - width / 2, 100.0, 0.9)
        keypoints[t, 6] = (x + width / 2, 100.0, 0.9)
    return keypoints


@pytest.mark.parametrize("shift, expected_class", [
    (2.0, "slight"), (4.0, "moderate"), (6.0, "moderate"), (10.0, "significant"), (14.0, "extreme"),
])
def test_motion_amplitude_classes(shift, expected_class):
    # chest at 200, 200, 200, 200 + shift: largest displacement from the median (200) is `shift`,
    # shoulder width 40, so the amplitude is shift / 40 (0.05, 0.1, 0.15, 0.25, 0.35)
    keypoints = _shoulders_track([200.0, 200.0, 200.0, 200.0 + shift])
    amplitude = motion_amplitude(keypoints, threshold=0.3)
    assert amplitude == pytest.approx(shift / 40.0)
    assert amplitude_class(amplitude) == expected_class


def test_motion_amplitude_uses_median_and_visible_shoulders():
    # an early outlier pose does not inflate the displacement of the others
    assert motion_amplitude(_shoulders_track([230.0, 200.0, 201.0, 202.0, 201.0]), 0.3) == pytest.approx(29 / 40)
    keypoints = _shoulders_track([200.0, 300.0, 201.0])
    keypoints[1, 5, 2] = 0.1  # the pose with the jump has a shoulder out of view: ignored
    assert motion_amplitude(keypoints, 0.3) == pytest.approx(0.5 / 40)
    assert motion_amplitude(keypoints[:2], 0.3) is None and amplitude_class(None) is None


# ---------------------------------------------------------------- detector decode, tracking, RTMPose

def test_yolox_decode_and_nms():
    grid, strides = anchor_grid(416)
    assert len(grid) == 3549 == 52 * 52 + 26 * 26 + 13 * 13
    raw = np.zeros((3549, 85), dtype=np.float32)
    anchor = 52 * 52 + 26 * 3 + 5  # stride 16, row 3, column 5
    raw[anchor, :4] = [0.5, 0.25, np.log(4.0), np.log(8.0)]  # centre (5.5, 3.25) cells, 4 x 8 cells
    raw[anchor, 4], raw[anchor, 5], raw[anchor, 6] = 0.9, 0.8, 0.1
    boxes, scores = decode_person_boxes(raw, grid, strides)
    cx, cy, w, h = 5.5 * 16, 3.25 * 16, 64, 128
    np.testing.assert_allclose(boxes[anchor], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rtol=1e-6)
    assert scores[anchor] == pytest.approx(0.72) and scores.argmax() == anchor
    candidates = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=np.float32)
    assert nms(candidates, np.array([0.5, 0.9, 0.7]), 0.45).tolist() == [1, 2]


def test_tracking_keeps_people_apart():
    params = PeopleParams()
    close_up = np.array([[0, 10, 480, 630]], dtype=np.float32)
    hand_inside = np.array([[360, 320, 480, 480]], dtype=np.float32)
    both = np.concatenate([close_up, hand_inside])
    tracks = link_tracks([close_up, hand_inside, both, close_up], np.array([0.0, 0.5, 1.0, 1.5]), params)
    assert tracks[0] == {0: 0, 2: 0, 3: 0}, "the close-up person keeps one id across the hand-only frame"
    # one person half behind another; one box covers both; then the one behind has moved right
    # (video4): the clear match keeps the front person's id, rather than two poor matches swapping ids
    behind, front = [0, 0, 100, 200], [80, 0, 260, 200]
    frames = [np.array([behind, front], np.float32), np.array([[40, 0, 280, 200]], np.float32),
              np.array([[40, 0, 220, 200], [200, 0, 380, 200]], np.float32)]
    tracks = link_tracks(frames, np.array([0.0, 0.5, 1.0]), params)
    assert tracks[1] == {0: 1, 1: 0, 2: 0} and tracks[0] == {0: 0} and tracks[2] == {2: 1}


def test_rtmpose_simcc_decode():
    input_size = np.array([192.0, 256.0])
    simcc_x, simcc_y = np.zeros((17, 384), np.float32), np.zeros((17, 512), np.float32)
    simcc_x[:, 100], simcc_y[:, 300] = 0.8, 0.6
    simcc_x[3] = -1.0  # no response anywhere
    centre, scale = np.array([500.0, 400.0]), np.array([150.0, 200.0])
    keypoints = decode_simcc(simcc_x, simcc_y, centre, scale, input_size)
    # bin 100 at 2 bins per pixel is input x 50 of 192; the input spans the 150 x 200 box around the centre
    np.testing.assert_allclose(keypoints[0], [500 - 75 + 50 / 192 * 150, 400 - 100 + 150 / 256 * 200, 0.6], rtol=1e-6)
    assert keypoints[3, 2] == 0.0


def test_rtmpose_round_trip_with_a_constructed_model():
    """A stand-in SimCC model that puts every keypoint on the brightest input pixel: the backend's
    crop, normalisation and decode must bring it back onto the bright dot in the frame."""
    def brightest_pixel_model(blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, _, height, width = blob.shape
        y, x = np.unravel_index(blob[0].sum(axis=0).argmax(), (height, width))
        simcc_x, simcc_y = np.zeros((1, 17, width * 2), np.float32), np.zeros((1, 17, height * 2), np.float32)
        simcc_x[0, :, 2 * x], simcc_y[0, :, 2 * y] = 1.0, 1.0
        return simcc_x, simcc_y

    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    frame[300:304, 200:204] = 255  # a 4x4 dot centred at (202, 302)
    pose = RTMPose(brightest_pixel_model, input_width=192, input_height=256)
    keypoints = pose.estimate(frame, np.array([[150, 180, 260, 420], [100, 250, 400, 350]], dtype=np.float32))
    assert keypoints.shape == (2, 17, 3)
    np.testing.assert_allclose(keypoints[:, :, :2], np.broadcast_to([202, 302], (2, 17, 2)), atol=3.0)
    assert np.all(keypoints[..., 2] == 1.0)


def write_constant_simcc_onnx(path: Path, width: int = 192, height: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """A tiny ONNX pose model in RTMPose's export layout (input [1, 3, H, W]; outputs simcc_x
    [1, 17, 2W], simcc_y [1, 17, 2H]) whose SimCC peaks are fixed: keypoint k at input pixel
    (10 + 5k, 20 + 10k), x peak 0.9, y peak 0.7. Returns those input-pixel positions [17, 2]."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    positions = np.stack([10 + 5 * np.arange(17), 20 + 10 * np.arange(17)], axis=1).astype(np.float64)
    simcc_x, simcc_y = np.zeros((1, 17, 2 * width), np.float32), np.zeros((1, 17, 2 * height), np.float32)
    simcc_x[0, np.arange(17), 2 * positions[:, 0].astype(int)] = 0.9
    simcc_y[0, np.arange(17), 2 * positions[:, 1].astype(int)] = 0.7
    nodes = [  # outputs = constants + 0 * mean(input), so that the input feeds the graph
        helper.make_node("ReduceMean", ["input"], ["mean"], axes=[0, 1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "peaks_x"], ["simcc_x"]),
        helper.make_node("Add", ["nothing", "peaks_y"], ["simcc_y"]),
    ]
    graph = helper.make_graph(
        nodes, "constant_simcc",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, 17, 2 * width]),
         helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, 17, 2 * height])],
        [numpy_helper.from_array(np.zeros(1, np.float32), "zero"), numpy_helper.from_array(simcc_x, "peaks_x"),
         numpy_helper.from_array(simcc_y, "peaks_y")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return positions


def test_rtmpose_onnx_backend(tmp_path):
    """The ONNX path: input size read from the graph, outputs decoded and mapped into the frame."""
    positions = write_constant_simcc_onnx(tmp_path / "pose.onnx")
    pose = RTMPose.from_onnx(str(tmp_path / "pose.onnx"))
    box = np.array([100, 50, 260, 290], dtype=np.float32)  # 160 x 240, padded 200 x 300, at 3:4 225 x 300
    keypoints = pose.estimate(np.zeros((480, 640, 3), np.uint8), box[None])[0]
    expected = positions / [192, 256] * [225, 300] + [180, 170] - [112.5, 150]
    np.testing.assert_allclose(keypoints[:, :2], expected, rtol=1e-5)
    np.testing.assert_allclose(keypoints[:, 2], 0.7)


@needs_realdata
def test_stage_runs_with_the_rtmpose_backend(tmp_path):
    write_constant_simcc_onnx(tmp_path / "pose.onnx")
    stage = People(PeopleParams(detector_path=str(YOLOX), pose_backend="rtmpose",
                                pose_model_path=str(tmp_path / "pose.onnx")))
    stage.setup()
    item = run_on(stage, DATA_JUICER / "video5.mp4", 0.0, 3.0)
    assert item.kept, item.reject
    assert item.scores["people.n_people"] == 1
    check_pose_npz(item, stage)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return float(inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter))
