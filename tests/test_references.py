"""references stage: full-body and face reference images per identity, on real footage.

The real-footage tests use the real people (YOLOX + MoveNet) and faces (YuNet) stages on a window of
video4.mp4 (two girls, both faces visible per the README and the faces tests) with masks constructed
from the people stage's own boxes, so that the references can be checked against known regions; and
the whole chain people -> masks (tiny random Grounding-DINO and SAM2) -> references on bedroom.mp4.
"""
from __future__ import annotations

import io
import os

import cv2
import numpy as np
import pytest
import torch

from clip_cutting import cut_clip
from conftest import REALDATA
from curation.frames import decode_frames
from curation.stage import ClipFrames, Item
from stages.faces import Faces, FacesParams
from stages.masks import Masks, MasksParams
from stages.models.checkpoint_configs import save_random_grounding_dino, save_random_sam2_video
from stages.people import People, PeopleParams
from stages.references import (References, ReferencesParams, best_frame, face_boxes_at, full_body_reference,
                               head_from_keypoints)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VIDEO4 = REALDATA / "data-juicer/tests/ops/data/video4.mp4"
BEDROOM = REALDATA / "sam2/notebooks/videos/bedroom.mp4"
YOLOX = REALDATA / "YOLOX-ONNX-TFLite-Sample/model/yolox_nano.onnx"
MOVENET = REALDATA / "MoveNet-Python-Example/tflite/lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite"
YUNET = REALDATA / "libfacedetection.train/onnx/yunet_n_320_320.onnx"

needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real footage and weights not found at {REALDATA}")


def item_for(clip, stages) -> Item:
    data, meta = clip
    specs = [spec for stage in stages for spec in stage.frame_specs()]
    return Item(source_id="x", source_path="clip.mp4", key="x-0000", clip_index=0, start=0.0, end=meta["duration"],
                members={"mp4": data}, meta={"clips": dict(meta)}, frames=decode_frames(data, specs))


def box_masks(item: Item, mask_side: int = 128) -> bytes:
    """masks.npz with identity i's mask the people stage's box of person i at the nearest sample, conf 0.9."""
    clip = item.meta["clips"]
    scale = mask_side / max(clip["width"], clip["height"])
    h, w = round(clip["height"] * scale), round(clip["width"] * scale)
    boxes, frames = item.arrays["people.boxes"], item.arrays["people.frames"]
    masks = np.zeros((len(boxes), clip["n_frames"], h, w), dtype=np.uint8)
    for t in range(clip["n_frames"]):
        nearest = int(np.argmin(np.abs(frames - t)))
        for i, box in enumerate(boxes[:, nearest]):
            if np.isfinite(box[0]):
                x1, y1, x2, y2 = np.round(box * scale).astype(int)
                masks[i, t, y1:y2, x1:x2] = 1
    buffer = io.BytesIO()
    np.savez_compressed(buffer, masks=masks, conf=np.full(masks.shape[:2], 0.9, dtype=np.float16))
    return buffer.getvalue()


def png(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def video4_with_people_and_faces():
    people = People(PeopleParams(detector_path=str(YOLOX), pose_model_path=str(MOVENET)))
    faces = Faces(FacesParams(model_path=str(YUNET)))
    references = References(ReferencesParams())
    people.setup()
    faces.setup()
    item = item_for(cut_clip(VIDEO4, 2.0, 3.0), [people, faces, references])
    people.process([item])
    faces.process([item])
    assert item.kept and item.scores["people.n_people"] == 2 and item.scores["faces.n_tracks"] == 2
    item.members["masks.npz"] = box_masks(item)
    return item


@needs_realdata
def test_references_of_the_two_girls_with_face_tracks(video4_with_people_and_faces):
    item = video4_with_people_and_faces
    stage = References(ReferencesParams())
    stage.process([item])
    assert item.kept, item.reject
    meta = item.meta["references"]["identities"]
    assert [identity["face_source"] for identity in meta] == ["faces", "faces"]
    assert item.scores["references.n_references"] == item.scores["references.n_face_references"] == 2
    frames = item.frames[stage.frame_specs()[0]]
    for i, identity in enumerate(meta):
        reference, face = png(item.members[f"ref_{i}.png"]), png(item.members[f"face_{i}.png"])
        assert [reference.shape[1], reference.shape[0]] == identity["ref_size"]
        assert [face.shape[1], face.shape[0]] == identity["face_size"]
        # the mask is person i's box: the reference is that box of the frame (plus a white margin)
        box = item.arrays["people.boxes"][i, int(np.argmin(np.abs(item.arrays["people.frames"] - identity["frame"])))]
        assert reference.shape[0] <= 1.2 * (box[3] - box[1]) + 2 and reference.shape[1] <= 1.2 * (box[2] - box[0]) + 2
        assert (reference[0, 0] == 255).all() or (reference[-1, -1] == 255).all()
        # the face crop is around a face track's box on the reference frame, inside person i's box
        sample = int(np.argmin(np.abs(np.round(frames.times * 30) - identity["frame"])))
        on_frame = face_boxes_at(item.meta["faces"]["tracks"], frames.times[sample:sample + 1])[0]
        centres = (on_frame[:, :2] + on_frame[:, 2:]) / 2
        inside = ((centres > box[:2]) & (centres < box[2:])).all(axis=1)
        assert inside.any()
        assert face.shape[0] == pytest.approx(min(1.8 * np.max(on_frame[inside][:, 2:] - on_frame[inside][:, :2]),
                                                  frames.images.shape[1]), abs=40)


@needs_realdata
def test_without_faces_the_head_comes_from_the_pose(video4_with_people_and_faces):
    item = video4_with_people_and_faces
    item.meta = {name: value for name, value in item.meta.items() if name != "faces"}
    for name in [name for name in item.members if name.startswith(("ref_", "face_"))]:
        del item.members[name]
    References(ReferencesParams()).process([item])
    assert item.kept, item.reject
    sources = [identity["face_source"] for identity in item.meta["references"]["identities"]]
    assert "pose" in sources and set(sources) <= {"pose", None}
    assert all(f"face_{i}.png" in item.members for i, source in enumerate(sources) if source)


@needs_realdata
def test_people_masks_references_chain_on_bedroom(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # hundreds of tiny ops per frame: no OpenMP spinning against other processes
    try:
        people = People(PeopleParams(detector_path=str(YOLOX), pose_model_path=str(MOVENET)))
        grounding = save_random_grounding_dino(tmp_path / "gd", "test", shortest_edge=200, longest_edge=320)
        masks = Masks(MasksParams(
            grounding_model_path=str(grounding),
            sam2_model_path=str(save_random_sam2_video(tmp_path / "sam2", "test", object_score_bias=4.0)),
            device="cpu", tracker_dtype="float32", box_threshold=0.0, max_objects=3, max_side=320, min_match_iou=0.0))
        references = References(ReferencesParams())
        people.setup()
        masks.setup()
        item = item_for(cut_clip(BEDROOM, 0.0, 1.0), [people, masks, references])
        for stage in (people, masks, references):
            stage.process([item])
    finally:
        torch.set_num_threads(threads)
    assert item.kept, item.reject
    for i in range(item.scores["masks.n_identities"]):
        reference = png(item.members[f"ref_{i}.png"])
        assert reference.ndim == 3 and reference.shape[0] <= 540 and reference.shape[1] <= 960
    assert item.scores["references.n_references"] == item.scores["people.n_people"] == 2


def test_missing_masks_and_frames_are_reasons():
    stage = References(ReferencesParams())
    item = Item(source_id="x", source_path="clip.mp4", key="x-0000",
                frames={stage.frame_specs()[0]: ClipFrames(np.zeros((0, 36, 48, 3), np.uint8), np.zeros(0), 1.0)})
    stage.process([item])
    assert item.reject.reason == "no_masks"
    item.reject, item.members["masks.npz"] = None, b"unread"
    stage.process([item])
    assert item.reject.reason == "no_frames"


# ---------------------------------------------------------------- constructed inputs

def test_best_frame_prefers_a_visible_face_then_a_confident_large_mask():
    conf = np.array([0.9, 0.95, 0.4, 0.9])
    area = np.array([0.2, 0.1, 0.9, 0.0])
    assert best_frame(conf, area, None) == 0  # 0.18 beats 0.095; the 0.4 and the empty mask do not count
    assert best_frame(conf, area, np.array([False, True, True, True])) == 1  # the only usable one with a face
    assert best_frame(conf, area, np.array([False, False, True, False])) == 0  # no usable face: best mask
    assert best_frame(np.full(4, 0.3), area, None) is None


def test_head_from_keypoints_uses_the_widest_visible_measure():
    keypoints = np.zeros((17, 3), np.float32)
    keypoints[[0, 1, 2, 3, 4, 5, 6], :2] = [[50, 52], [46, 48], [54, 48], [40, 50], [60, 50], [20, 90], [80, 90]]
    keypoints[[0, 1, 2], 2] = 0.9  # nose and eyes only: 2.5 x the eye distance
    np.testing.assert_allclose(head_from_keypoints(keypoints, 0.3), [50, 49.333, 20], atol=1e-3)
    keypoints[[3, 4], 2] = 0.9  # ears too: their distance, the wider estimate
    np.testing.assert_allclose(head_from_keypoints(keypoints, 0.3)[2], 20)
    keypoints[[5, 6], 2] = 0.9  # shoulders 60 apart: 0.4 x 60 = 24
    np.testing.assert_allclose(head_from_keypoints(keypoints, 0.3)[2], 24)
    keypoints[:5, 2] = 0.0
    keypoints[0, 2] = 0.9
    assert head_from_keypoints(keypoints, 0.3) is None  # one head point cannot place the head


def test_face_tracks_are_read_at_the_sampled_times():
    tracks = [{"id": 0, "frames": [0, 1, 12, 13],
               "boxes": [[0, 0, 10, 10], [1, 0, 11, 10], [5, 5, 15, 15], [6, 5, 16, 15]]},
              {"id": 1, "frames": [12], "boxes": [[50, 50, 60, 60]]}]
    boxes = face_boxes_at(tracks, np.array([0.0, 0.5, 1.0]))  # shown by 25 fps frames 0, 12 (at 0.48 s), 25
    assert [len(b) for b in boxes] == [1, 2, 0]
    np.testing.assert_array_equal(boxes[1], [[5, 5, 15, 15], [50, 50, 60, 60]])


def test_full_body_reference_is_the_masked_pixels_on_white():
    image = np.random.default_rng(0).integers(0, 255, (100, 80, 3), dtype=np.uint8)
    mask = np.zeros((100, 80), bool)
    mask[20:60, 30:50] = True
    mask[20:30, 30:35] = False
    reference = full_body_reference(image, mask, margin=0.1)  # 40 px tall: 4 px margin
    assert reference.shape == (48, 28, 3)
    np.testing.assert_array_equal(reference[4:44, 4:24][mask[20:60, 30:50]], image[mask])
    assert (reference[4:14, 4:9] == 255).all() and (reference[:4] == 255).all()
