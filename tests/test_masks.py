"""masks stage: Grounding-DINO + SAM2 video identity masks, on real footage with tiny random checkpoints.

No Grounding-DINO or SAM2 weights are public where we can fetch them, so the models are miniature
transformers configurations with random weights (stages/models/checkpoint_configs.py), loaded from
folders like real checkpoints. Random weights give meaningless boxes and masks: the tests check the
real pre- and post-processing against transformers' own code, the shapes, types and ranges of what
the stage writes, and the matching, flagging and interpolation logic on constructed inputs. The
object-score head's bias is set to make a random SAM2 report every object visible ("seeing") or absent
("blind"), which is what the confidence and flagging tests rely on.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clip_cutting import cut_clip
from conftest import REALDATA
from curation.frames import decode_frames
from curation.stage import ClipFrames, FrameSpec, Item
from stages.masks import (CONFIDENT, Masks, MasksParams, left_to_right, match_mask_tracks_to_people,
                          object_phrases, spread_to_clip_frames)
from stages.models.boxes import box_iou
from stages.models.checkpoint_configs import save_random_grounding_dino, save_random_sam2_video
from stages.models.grounding import NO_PHRASE, Detections, GroundingDino, float32_matmul_precision
from stages.models.image_preprocessing import (IMAGENET_MEAN, IMAGENET_STD, Normalisation, grounding_dino_pixels,
                                              sam2_pixels)
from stages.models.sam2_video import (ABSENT_LOGIT, NEW_OBJECT, ClipToTrack, Sam2VideoTracker, TrackedObjects,
                                       mask_bounding_boxes)
from stages.people import People, PeopleParams

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BEDROOM = REALDATA / "sam2/notebooks/videos/bedroom.mp4"
VIDEO4 = REALDATA / "data-juicer/tests/ops/data/video4.mp4"
YOLOX = REALDATA / "YOLOX-ONNX-TFLite-Sample/model/yolox_nano.onnx"
MOVENET = REALDATA / "MoveNet-Python-Example/tflite/lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite"
ONE_GREY_LEVEL = 1 / 255 / min(IMAGENET_STD) + 1e-5  # largest normalised difference of a 1-level uint8 change

needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real footage and weights not found at {REALDATA}")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny models run hundreds of small ops per frame: one thread avoids OpenMP spinning against
    whatever else shares the two cores (7 s instead of 0.4 s per tracking run under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {"grounding": save_random_grounding_dino(root / "grounding", "test", shortest_edge=200, longest_edge=320),
            "seeing": save_random_sam2_video(root / "sam2-seeing", "test", object_score_bias=4.0),
            "blind": save_random_sam2_video(root / "sam2-blind", "test", object_score_bias=-4.0)}


@pytest.fixture(scope="module")
def bedroom():
    return cut_clip(BEDROOM, 0.0, 1.0)


@pytest.fixture(scope="module")
def video4():
    return cut_clip(VIDEO4, 2.0, 3.0)


def masks_stage(checkpoints, sam2: str = "seeing", **params) -> Masks:
    settings = dict(grounding_model_path=str(checkpoints["grounding"]), sam2_model_path=str(checkpoints[sam2]),
                    device="cpu", tracker_dtype="float32", box_threshold=0.0, max_objects=3, max_side=320)
    stage = Masks(MasksParams(**{**settings, **params}))
    stage.setup()
    return stage


def clip_item(clip, stages) -> Item:
    data, meta = clip
    specs = [spec for stage in stages for spec in stage.frame_specs()]
    return Item(source_id="x", source_path="clip.mp4", key="x-0000", clip_index=0, start=0.0, end=meta["duration"],
                members={"mp4": data}, meta={"clips": dict(meta)}, frames=decode_frames(data, specs))


def read_npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as arrays:
        return {name: arrays[name] for name in arrays.files}


def frames_of(clip, spec: FrameSpec) -> np.ndarray:
    return decode_frames(clip[0], [spec])[spec].images


# ---------------------------------------------------------------- preprocessing and post-processing

@needs_realdata
def test_grounding_dino_preprocessing_equals_transformers_pil_processor(video4):
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import GroundingDinoImageProcessorPil

    frames = frames_of(video4, FrameSpec(fps=2))  # 480x360: resized up to 1066x800 by the default config
    expected = GroundingDinoImageProcessorPil()(images=list(frames), return_tensors="np")["pixel_values"]
    mine = grounding_dino_pixels(frames, 800, 1333, Normalisation(), "cpu", torch.float32).numpy()
    assert mine.shape == expected.shape == (len(frames), 3, 800, 1066)
    difference = np.abs(mine - expected)
    assert difference.max() <= ONE_GREY_LEVEL
    assert (difference > 1e-5).mean() < 0.001  # torch's uint8 antialiased kernel is PIL's BILINEAR filter


@needs_realdata
def test_sam2_preprocessing_equals_its_documented_resize_and_normalisation(bedroom):
    frames = frames_of(bedroom, FrameSpec(fps=2))  # 960x540, squashed to 1024x1024
    mine = sam2_pixels(frames, 1024, Normalisation(), "cpu", torch.float32).numpy()
    # Sam2VideoVideoProcessor: resize to 1024x1024 with antialiased bilinear filtering (PIL's BILINEAR is
    # the reference filter), rescale by 1/255, normalise by ImageNet mean and std
    resized = np.stack([np.asarray(Image.fromarray(frame).resize((1024, 1024), Image.BILINEAR)) for frame in frames])
    expected = ((resized / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(0, 3, 1, 2)
    difference = np.abs(mine - expected)
    assert mine.shape == (len(frames), 3, 1024, 1024)
    assert difference.max() <= ONE_GREY_LEVEL
    assert (difference > 1e-5).mean() < 0.001


@needs_realdata
def test_grounding_dino_postprocessing_equals_transformers(checkpoints, video4):
    from transformers import AutoTokenizer, GroundingDinoProcessor
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import GroundingDinoImageProcessorPil

    folder = checkpoints["grounding"]
    detector = GroundingDino(folder, "cpu", torch.float32, box_threshold=0.3, text_threshold=0.25, nms_iou=1.0,
                             batch_size=2)
    prompt = detector.prompt(["Person", "girl with long. braids", "person"])
    assert prompt.phrases == ["person", "girl with long braids"]
    ids = prompt.encoding["input_ids"][0]
    assert [detector.tokenizer.decode(ids[tokens]) for tokens in prompt.phrase_tokens] == prompt.phrases

    frames = frames_of(video4, FrameSpec(fps=2, max_side=320))
    processor = GroundingDinoProcessor(GroundingDinoImageProcessorPil.from_pretrained(folder),
                                       AutoTokenizer.from_pretrained(folder))
    inputs = processor(images=list(frames), text=["person. girl with long braids."] * len(frames), return_tensors="pt")
    with torch.no_grad():
        outputs = detector.model(**inputs)
    expected = processor.post_process_grounded_object_detection(
        outputs, inputs["input_ids"], threshold=0.3, text_threshold=0.25, target_sizes=[frames.shape[1:3]] * len(frames))
    mine = detector.postprocess(outputs.logits, outputs.pred_boxes, prompt, frames.shape[1:3])
    limits = np.array([frames.shape[2], frames.shape[1]] * 2, dtype=np.float32)
    for theirs, ours in zip(expected, mine):
        their_boxes = np.clip(theirs["boxes"].numpy(), 0, limits)
        order, our_order = np.lexsort(their_boxes.T[::-1]), np.lexsort(ours.boxes.T[::-1])
        np.testing.assert_allclose(ours.boxes[our_order], their_boxes[order], atol=1e-3)
        np.testing.assert_allclose(ours.scores[our_order], theirs["scores"].numpy()[order], atol=1e-6)
        # our label is a phrase; transformers' is every token above the text threshold: ours is among them
        for phrase, words in zip(ours.phrases[our_order], np.array(theirs["text_labels"], dtype=object)[order]):
            if phrase != NO_PHRASE:
                assert set(prompt.phrases[phrase].split()) & set(re.split(r"[\s.]+", words))

    # and the detector's own pixels give the model the same input, up to one grey level on a few pixels
    ours_end_to_end = detector.detect(frames, prompt)
    assert [len(found.boxes) for found in ours_end_to_end] == [len(found["boxes"]) for found in expected]


# ---------------------------------------------------------------- the tracker

@needs_realdata
def test_tracker_reproduces_transformers_video_propagation(checkpoints, video4):
    """Batched encoding into the feature cache, streaming steps and pruning change nothing: the masks
    equal those of transformers' documented flow (whole video in the session, prompt, propagate)."""
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    frames = frames_of(video4, FrameSpec(max_side=240))[:20]
    height, width = frames.shape[1:3]
    boxes = np.array([[10, 20, 150, 170], [170, 10, 310, 175]], dtype=np.float32)
    tracker = Sam2VideoTracker(checkpoints["seeing"], "cpu", torch.float32, batch_size=8, new_object_iou=0.3,
                               max_objects=4)
    tracked = tracker.track(frames, {0: boxes}, out_size=(36, 48))

    model, side = tracker.model, tracker.image_size
    pixels = sam2_pixels(frames, side, tracker.norm, "cpu", torch.float32)
    session = Sam2VideoInferenceSession(video=pixels, video_height=height, video_width=width, dtype=torch.float32)
    for object_id, box in enumerate(boxes):
        corners = torch.tensor(box).reshape(1, 1, 2, 2) * torch.tensor([side / width, side / height])
        session.add_point_inputs(session.obj_id_to_idx(object_id), 0, {
            "point_coords": corners, "point_labels": torch.tensor([[[2, 3]]], dtype=torch.int32)})
    session.obj_with_new_inputs = [0, 1]
    model(inference_session=session, frame_idx=0)
    for output in model.propagate_in_video_iterator(session):
        expected = torch.nn.functional.interpolate(output.pred_masks.float(), size=(36, 48), mode="bilinear",
                                                   antialias=True)[:, 0].numpy()
        assert_same_logits(tracked.logits[:, output.frame_idx], expected)
        np.testing.assert_allclose(tracked.presence[:, output.frame_idx],
                                   output.object_score_logits.reshape(-1).sigmoid().numpy(), atol=1e-5)
    assert tracked.first_frame.tolist() == [0, 0]


@needs_realdata
def test_batched_steps_equal_transformers_per_object_steps_over_two_clips(checkpoints, video4, bedroom):
    """Stepping the objects of two clips as one batch (a third object found later, so memories of
    two lengths) gives the masks of transformers' own step run one object at a time."""
    tracker = Sam2VideoTracker(checkpoints["seeing"], "cpu", torch.float32, batch_size=4, new_object_iou=2.0,
                               max_objects=3)  # IoU above 1: every box starts an object
    clips = [ClipToTrack(frames_of(video4, FrameSpec(max_side=240))[:10], {
                 0: np.array([[10, 20, 150, 170], [170, 10, 310, 175]], np.float32),
                 4: np.array([[60, 40, 200, 150]], np.float32)}, (36, 48)),
             ClipToTrack(frames_of(bedroom, FrameSpec(max_side=240))[:7], {
                 0: np.array([[20, 10, 110, 130], [120, 5, 230, 125]], np.float32)}, (27, 48))]
    batched = tracker.track_clips(clips)
    for clip, tracked in zip(clips, batched):
        logits, presence = per_object_steps(tracker, clip)
        assert tracked.first_frame.tolist() == sorted(frame for frame, boxes in clip.boxes_at.items() for _ in boxes)
        assert_same_logits(tracked.logits, logits)
        np.testing.assert_allclose(tracked.presence, presence, atol=1e-5)


def assert_same_logits(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Equal up to rounding (random weights give logits of ~1e-3, so the bound scales with them), and
    so the same masks but for pixels whose logit rounds across 0."""
    ours = ours.astype(np.float32)
    assert np.abs(ours - theirs).max() <= 1e-3 * np.abs(theirs).max()
    assert ((ours > 0) != (theirs > 0)).mean() < 1e-3


def per_object_steps(tracker: Sam2VideoTracker, clip: ClipToTrack) -> tuple[np.ndarray, np.ndarray]:
    """Logits [O, T, h, w] and presence [O, T] from Sam2VideoModel's per-object step and memory encoder,
    one object at a time, tracked objects before the objects a frame's boxes start."""
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    model, side = tracker.model, tracker.image_size
    height, width = clip.frames.shape[1:3]
    pixels = sam2_pixels(clip.frames, side, tracker.norm, "cpu", torch.float32)
    session = Sam2VideoInferenceSession(video=pixels, video_height=height, video_width=width, dtype=torch.float32)
    n_objects = sum(len(boxes) for boxes in clip.boxes_at.values())
    logits = np.full((n_objects, len(clip.frames), *clip.out_size), ABSENT_LOGIT, np.float32)
    presence = np.zeros((n_objects, len(clip.frames)), np.float32)

    def step(obj: int, index: int, points: dict | None) -> None:
        out = model._run_single_frame_inference(session, index, obj, 1, points is not None, points, None, False,
                                                streaming=True)
        session.store_output(obj, index, output_value=out, is_conditioning_frame=points is not None)
        model._batch_encode_memories(session, index, [obj], [out["high_res_masks"]], [out["object_score_logits"]],
                                     [points is not None])
        logits[obj, index] = torch.nn.functional.interpolate(out["pred_masks"], size=clip.out_size, mode="bilinear",
                                                             antialias=True)[0, 0].numpy()
        presence[obj, index] = out["object_score_logits"].sigmoid().item()

    with torch.inference_mode():
        for index in range(len(clip.frames)):
            for obj in range(session.get_obj_num()):
                step(obj, index, None)
            for box in clip.boxes_at.get(index, []):
                corners = torch.tensor(box).reshape(1, 1, 2, 2) * torch.tensor([side / width, side / height])
                step(session.obj_id_to_idx(session.get_obj_num()), index, {
                    "point_coords": corners, "point_labels": torch.tensor([[[2, 3]]], dtype=torch.int32)})
    return logits, presence


@needs_realdata
def test_tracker_starts_new_objects_on_later_key_frames_up_to_the_limit(checkpoints, video4):
    frames = frames_of(video4, FrameSpec(max_side=240))[:8]
    first = np.array([[10, 20, 150, 170]], np.float32)
    later = np.array([[12, 22, 150, 170], [170, 10, 310, 175]], np.float32)
    # an IoU threshold above 1: every box starts an object, until max_objects is reached
    tracker = Sam2VideoTracker(checkpoints["seeing"], "cpu", torch.float32, batch_size=4, new_object_iou=2.0,
                               max_objects=2)
    tracked = tracker.track(frames, {0: first, 5: later}, out_size=(18, 24))
    assert tracked.first_frame.tolist() == [0, 5]
    assert tracked.detection_objects[0].tolist() == [0]
    assert tracked.detection_objects[5].tolist() == [1, NEW_OBJECT]
    assert (tracked.presence[1, :5] == 0).all() and (tracked.presence[1, 5:] > CONFIDENT).all()
    assert tracked.logits.shape == (2, 8, 18, 24) and tracked.logits.dtype == np.float16

    # threshold 0: every later box continues a tracked object, none starts one
    tracker.new_object_iou = 0.0
    tracked = tracker.track(frames, {0: first, 5: later}, out_size=(18, 24))
    assert tracked.first_frame.tolist() == [0]
    assert tracked.detection_objects[5].tolist() == [0, 0]


# ---------------------------------------------------------------- the stage on real footage

@needs_realdata
def test_identities_follow_the_people_stage_on_bedroom(checkpoints, bedroom):
    people = People(PeopleParams(detector_path=str(YOLOX), pose_model_path=str(MOVENET)))
    people.setup()
    # random masks rarely overlap real people, so any overlap is accepted here: the matching itself is
    # tested on constructed tracks below
    masks = masks_stage(checkpoints, min_match_iou=0.0)
    item = clip_item(bedroom, [people, masks])
    item.meta["phrases"] = {"subjects": [{"phrase": "girl in a red dress", "kind": "person"},
                                         {"phrase": "bed", "kind": "object"}]}
    people.process([item])
    n_people = item.scores["people.n_people"]
    assert n_people == 2, "bedroom.mp4 shows two children"
    masks.process([item])

    assert item.kept, item.reject
    written = read_npz(item.members["masks.npz"])
    clip = item.meta["clips"]
    assert written["masks"].shape == (n_people, clip["n_frames"], 72, 128)  # 960x540 -> longer side 128
    assert written["masks"].dtype == np.uint8 and set(np.unique(written["masks"])) <= {0, 1}
    assert written["conf"].shape == (n_people, clip["n_frames"]) and written["conf"].dtype == np.float16
    assert ((written["conf"] >= 0) & (written["conf"] <= 1)).all()

    meta = item.meta["masks"]
    tracks = [identity["track"] for identity in meta["identities"]]
    assert [identity["id"] for identity in meta["identities"]] == list(range(n_people))
    assert None not in tracks and len(set(tracks)) == n_people <= meta["tracks"] <= 3
    assert {identity["phrase"] for identity in meta["identities"]} <= {"person", "girl in a red dress", None}
    # identity i is person i: the recorded match IoU is person i's boxes against identity i's masks
    people_boxes, people_frames = item.arrays["people.boxes"], item.arrays["people.frames"]
    for i, identity in enumerate(meta["identities"]):
        mask_boxes = mask_bounding_boxes(written["masks"][i, people_frames] > 0, (clip["height"], clip["width"]))
        mask_boxes[written["conf"][i, people_frames] < CONFIDENT] = np.nan
        present = np.isfinite(people_boxes[i, :, 0])
        ious = [box_iou(m[None], p[None])[0, 0] if np.isfinite(m[0]) else 0.0
                for m, p in zip(mask_boxes[present], people_boxes[i, present])]
        assert identity["match_iou"] == pytest.approx(np.mean(ious), abs=1e-3)
    low = (written["conf"] < CONFIDENT).mean()
    assert item.scores["masks.low_conf_fraction"] == pytest.approx(low, abs=1e-4)


@needs_realdata
def test_without_people_identities_are_the_tracks_left_to_right(checkpoints, video4):
    masks = masks_stage(checkpoints, key_frame_interval_s=0.2, track_fps=10.0)
    item = clip_item(video4, [masks])
    masks.process([item])
    assert item.kept, item.reject
    written = read_npz(item.members["masks.npz"])
    meta = item.meta["masks"]
    assert len(written["masks"]) == len(meta["identities"]) == item.scores["masks.n_identities"]
    assert 1 <= len(meta["identities"]) <= meta["tracks"] == 3
    assert meta["key_frames"] == 5  # 1 s at 30 fps, tracked every 3rd frame (10 fps), a key frame every 0.2 s
    centres = [np.nanmean(mask_bounding_boxes(m > 0, (360, 480))[:, [0, 2]]) for m in written["masks"]]
    assert centres == sorted(centres)


@needs_realdata
def test_frames_under_half_confidence_are_flagged_and_a_clip_without_any_is_rejected(checkpoints, video4):
    masks = masks_stage(checkpoints, sam2="blind", min_match_iou=0.0)
    item = clip_item(video4, [masks])
    # one person of the people stage, seen on the first and the middle frame (constructed boxes)
    item.arrays["people.boxes"] = np.array([[[20, 30, 200, 350], [24, 30, 204, 350]]], dtype=np.float32)
    item.arrays["people.frames"] = np.array([0, 15], dtype=np.int32)
    masks.process([item])
    written = read_npz(item.members["masks.npz"])
    assert written["conf"].shape == (1, 30)
    assert (written["conf"] < CONFIDENT).all() and written["conf"].max() > 0  # SAM2 scored it, low
    assert item.scores["masks.low_conf_fraction"] == 1.0
    assert item.meta["masks"]["identities"][0]["low_conf_fraction"] == 1.0
    assert item.reject.reason == "no_masks"

    without_people = clip_item(video4, [masks])
    masks.process([without_people])
    assert read_npz(without_people.members["masks.npz"])["masks"].shape == (0, 30, 96, 128)
    assert without_people.reject.reason == "no_masks"


@needs_realdata
def test_bad_inputs_get_reasons(checkpoints, video4):
    masks = masks_stage(checkpoints, box_threshold=1.0)  # no box can score above 1
    item = clip_item(video4, [masks])
    masks.process([item])
    assert item.reject.reason == "no_detections" and "masks.npz" not in item.members

    empty = clip_item(video4, [])
    empty.frames = {masks.frame_specs()[0]: ClipFrames(np.zeros((0, 240, 320, 3), np.uint8), np.zeros(0), 1.0)}
    masks.process([empty])
    assert empty.reject.reason == "no_frames"


def test_setup_names_the_parameter_to_set(tmp_path, checkpoints):
    with pytest.raises(ValueError, match="grounding_model_path"):
        Masks(MasksParams(device="cpu")).setup()
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="sam2_model_path"):
        Masks(MasksParams(grounding_model_path=str(tmp_path), device="cpu")).setup()
    with pytest.raises(ValueError, match="sam2_model_path"):
        Masks(MasksParams(grounding_model_path=str(tmp_path), sam2_model_path=str(tmp_path / "missing"),
                          device="cpu")).setup()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device"):
            Masks(MasksParams(grounding_model_path=str(checkpoints["grounding"]),
                              sam2_model_path=str(checkpoints["seeing"]))).setup()  # device defaults to cuda


# ---------------------------------------------------------------- logic on constructed inputs

def test_masks_between_tracked_frames_are_interpolated():
    logits = np.array([[[[4.0]], [[-4.0]], [[2.0]]]], dtype=np.float16)  # one object, tracked on frames 0, 2, 4
    presence = np.array([[0.9, 0.6, 0.3]], dtype=np.float32)
    masks, conf = spread_to_clip_frames(np.array([0, 2, 4]), logits, presence, n_frames=7)
    assert masks[0, :, 0, 0].tolist() == [1, 0, 0, 0, 1, 1, 1]  # midway 0 between 4 and -4; held after the end
    np.testing.assert_allclose(conf[0], [0.9, 0.6, 0.6, 0.3, 0.3, 0.3, 0.3])  # the lower neighbour between


def test_tracks_are_matched_to_people_by_mean_box_iou():
    nan = [np.nan] * 4
    people = np.array([[[0, 0, 10, 10], [0, 0, 10, 10], nan],          # person 0 on the left
                       [[20, 0, 30, 10], [21, 0, 31, 10], [22, 0, 32, 10]]], dtype=np.float32)
    tracks = np.array([[[20, 0, 30, 10], [21, 0, 31, 10], [22, 0, 32, 10]],   # person 1 exactly
                       [[0, 0, 10, 10], nan, [50, 50, 60, 60]],               # person 0 on half its frames
                       [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]],      # person 0 exactly
                       [[40, 40, 50, 50]] * 3], dtype=np.float32)
    chosen, iou = match_mask_tracks_to_people(tracks, people, min_iou=0.3)
    assert chosen == [2, 0] and iou == [1.0, 1.0]
    chosen, iou = match_mask_tracks_to_people(tracks[[1, 3]], people, min_iou=0.3)
    assert chosen == [0, None] and iou == [0.5, 0.0]  # the half-seen track, and nobody for person 1


def test_tracks_ordered_left_to_right_and_labelled_by_their_detections():
    nan = [np.nan] * 4
    boxes = np.array([[[50, 0, 60, 10], nan], [nan, nan], [[0, 0, 10, 10], [2, 0, 12, 10]]], dtype=np.float32)
    assert left_to_right(boxes) == [2, 0]  # the never-confident track 1 is no identity

    objects = TrackedObjects(np.zeros((3, 1, 1, 1), np.float16), np.zeros((3, 1), np.float32), np.array([0, 0, 4]),
                             {0: np.array([0, 1, NEW_OBJECT]), 4: np.array([0, 2, 0])})
    detections = {0: Detections(np.zeros((3, 4)), np.ones(3), np.array([2, 0, 1])),
                  4: Detections(np.zeros((3, 4)), np.ones(3), np.array([2, NO_PHRASE, 1]))}
    phrases = ["person", "woman in white", "girl with braids"]
    # track 0: "girl with braids" twice beats the other phrase once; track 1: only "person"; track 2: unlabelled
    assert object_phrases(objects, detections, phrases) == ["girl with braids", "person", None]


def test_detector_tf32_is_scoped_to_its_calls_and_off_on_cpu(checkpoints):
    previous = torch.get_float32_matmul_precision()
    with float32_matmul_precision("high"):
        assert torch.get_float32_matmul_precision() == "high"
    assert torch.get_float32_matmul_precision() == previous
    with float32_matmul_precision(None):
        assert torch.get_float32_matmul_precision() == previous
    detector = GroundingDino(checkpoints["grounding"], "cpu", torch.float32, 0.0, 0.0, 0.5, 2, tf32=True)
    assert not detector.tf32  # CPU matmuls stay plain float32
