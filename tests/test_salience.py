"""Salient people the way the paper means them (large, clearly visible), drawn footage kept out of the
human rule, and face tracks that become identities without a body box.

The footage is cut and cropped from the real videos with ffmpeg by bench/people_footage.py (the same
builders its bench uses): face close-ups, a person scaled down to 1% of a large frame, the cartoon
video1, and degraded real clips that must still read as photographed.
"""
from __future__ import annotations

import io
import sys

import numpy as np
import pytest

from conftest import REALDATA, REPO_ROOT
from curation.frames import decode_frames
from curation.stage import Item
from stages.identities import Identities, IdentitiesParams
from stages.people import face_inside, faces_at
from stages.photographic import Photographic, PhotographicParams, frame_statistics

sys.path.insert(0, str(REPO_ROOT / "bench"))
import people_footage as footage  # noqa: E402

needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real footage and weights not found at {REALDATA}")
DATA = REALDATA / "data-juicer/tests/ops/data"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    if not REALDATA.is_dir():
        pytest.skip(f"real footage and weights not found at {REALDATA}")
    return tmp_path_factory.mktemp("salience")


@pytest.fixture(scope="module")
def people():
    if not REALDATA.is_dir():
        pytest.skip(f"real footage and weights not found at {REALDATA}")
    return footage.people_stage(face_model=True)


@pytest.fixture(scope="module")
def photographic():
    return Photographic(PhotographicParams())


def _item(path, stages) -> Item:
    clip = _clip_meta(path)
    specs = [spec for stage in stages for spec in stage.frame_specs()]
    return Item(source_id="x", source_path=str(path), key="x-0000", clip_index=0, start=0.0, end=clip["duration"],
                members={"mp4": path.read_bytes()}, meta={"clips": clip}, frames=decode_frames(str(path), specs))


def _clip_meta(path) -> dict:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        n_frames = sum(1 for _ in container.decode(stream))
        fps = float(stream.average_rate)
        return {"fps": fps, "n_frames": n_frames, "width": stream.codec_context.width,
                "height": stream.codec_context.height, "has_audio": False, "duration": n_frames / fps}


def _run(path, *stages) -> Item:
    item = _item(path, stages)
    for stage in stages:
        if item.kept:
            stage.process([item])
    return item


# ---------------------------------------------------------------- close-ups and background people

@needs_realdata
@pytest.mark.parametrize("name, source, start, seconds, crop", [
    ("video4_face", "video4.mp4", 12, 9, "crop=150:150:95:90,scale=480:480"),
    ("video5_face", "video5.mp4", 3, 7, "crop=140:140:120:40,scale=480:480"),
])
def test_a_face_close_up_is_one_person(people, folder, name, source, start, seconds, crop):
    """One person talking to camera, the face filling the frame (labelled by looking at the crops):
    MoveNet sees little but the head, so the old rule (5 visible keypoints) counted nobody."""
    path = footage.cut(DATA / source, start, seconds, folder / f"{name}.mp4", crop)
    item = _run(path, people)
    assert item.kept, item.reject
    assert item.scores["people.n_people"] == 1
    (person,) = item.meta["people"]["identities"]
    assert person["evidence"]["head"] + person["evidence"]["face"] > person["evidence"]["body"], person["evidence"]

    frames = item.frames[people.frame_specs()[0]]
    observed = [people._people_in(image, frames.scale, faces)
                for image, faces in zip(frames.images, people.faces_on(item, frames))]
    old = footage.counts_per_second(observed, frames.times, people.params, footage.RULES["old"], seconds)
    new = footage.counts_per_second(observed, frames.times, people.params, footage.RULES["new"], seconds)
    assert new == [1] * seconds
    assert old.count(1) < seconds / 2, old  # the bug, on the same detections


@needs_realdata
def test_a_small_background_person_is_not_salient(people, folder):
    """one-by-one's walker scaled to a third and padded into the frame (2% of it): YOLOX finds her
    (and MoveNet would see all her joints), but she is no salient person."""
    path = footage.small_person(folder / "small.mp4", 4)
    item = _run(path, people)
    assert item.reject is not None and item.reject.reason == "no_people"
    frames = item.frames[people.frame_specs()[0]]
    observed = [people._people_in(image, frames.scale, faces)
                for image, faces in zip(frames.images, people.faces_on(item, frames))]
    girl = [f.boxes[~f.large] for f in observed]
    area = frames.images.shape[1] * frames.images.shape[2] / frames.scale ** 2
    assert sum(len(boxes) for boxes in girl) >= len(observed) / 2, "YOLOX finds her: the rule leaves her out"
    assert all(np.prod(b[:, 2:] - b[:, :2], axis=1).max(initial=0) < people.params.min_box_area_fraction * area
               for b in girl)


def test_face_evidence_needs_the_face_inside_and_large_enough():
    person = np.array([[100, 100, 300, 500]], np.float32)  # 400 px tall
    assert face_inside(person, np.array([[150, 110, 250, 230]], np.float32), 0.7, 0.1).tolist() == [True]
    assert face_inside(person, np.array([[280, 110, 400, 230]], np.float32), 0.7, 0.1).tolist() == [False]  # mostly outside
    assert face_inside(person, np.array([[150, 110, 180, 140]], np.float32), 0.7, 0.1).tolist() == [False]  # a far face
    assert face_inside(person, None, 0.7, 0.1).tolist() == [False]
    # an earlier faces stage's tracks (25 fps frames, clip pixels) give the faces of a sample
    tracks = [{"frames": [0, 1, 2], "boxes": [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]},
              {"frames": [2, 3], "boxes": [[0, 0, 5, 5], [1, 1, 6, 6]]}]
    assert faces_at(tracks, 2).tolist() == [[9, 10, 11, 12], [0, 0, 5, 5]] and faces_at(tracks, 7).shape == (0, 4)


# ---------------------------------------------------------------- drawn footage

@needs_realdata
@pytest.mark.parametrize("start", [0.0, 4.0, 8.0])
def test_the_cartoon_is_rejected_by_the_human_chain(people, photographic, folder, start):
    """video1 is a cartoon: every 4 s window of it is rejected by the photographic filter then the
    people rule (the human chain's order), and never as a clip of real people."""
    path = footage.cut(DATA / "video1.mp4", start, 4, folder / f"video1_{start:g}.mp4")
    item = _run(path, photographic, people)
    assert item.reject is not None and item.reject.stage in ("photographic", "people"), item.reject
    # measured: the filter itself catches every window (the last one, muted and compressed, by its
    # hue count alone); the people rule would count one of its cats as a person there
    assert item.reject.stage == "photographic" and item.reject.reason == "drawn"
    beyond = [name for name, limit in (("vivid_fraction", photographic.params.max_vivid_fraction),
                                       ("hue_count", photographic.params.max_hue_count),
                                       ("step_edge_share", photographic.params.max_step_edge_share),
                                       ("smooth_fill_share", photographic.params.max_smooth_fill_share))
              if item.scores[f"photographic.{name}"] >= limit]
    assert beyond and all(name in item.reject.detail for name in beyond)


@needs_realdata
@pytest.mark.parametrize("name, source, start, vf, crf", [
    ("video2", DATA / "video2.mp4", 0, None, 20),
    ("video3", DATA / "video3.mp4", 4.3, None, 20),
    ("video4", DATA / "video4.mp4", 0, None, 20),
    ("video5", DATA / "video5.mp4", 6, None, 20),
    ("bedroom", footage.BEDROOM, 0, None, 20),
    ("one_by_one", footage.ONE_BY_ONE, 40, None, 20),
    ("video4_dim", DATA / "video4.mp4", 0, "lutrgb=r=val*0.3:g=val*0.3:b=val*0.3", 20),
    ("bedroom_low_contrast", footage.BEDROOM, 0, "eq=contrast=0.3", 20),
    ("video5_pillarboxed", DATA / "video5.mp4", 0, "pad=1138:640:388:0:black", 20),
    ("video4_letterboxed", DATA / "video4.mp4", 0, "scale=480:270,pad=480:360:0:45:black", 20),
    ("bedroom_crf45", footage.BEDROOM, 0, None, 45),
    ("video4_grey", DATA / "video4.mp4", 0, "hue=s=0", 20),
])
def test_real_footage_passes_the_drawn_footage_filter(photographic, folder, name, source, start, vf, crf):
    path = footage.cut(source, start, 3, folder / f"real_{name}.mp4", vf, crf)
    item = _run(path, photographic)
    assert item.kept, item.reject
    assert item.scores["photographic.drawn"] is False


def test_drawn_frames_and_photographs_on_constructed_images():
    """Flat fills with sharp edges (a drawing) trip step_edge_share; a smooth gradient trips
    smooth_fill_share; a saturated palette trips vivid_fraction; textured noise trips none."""
    params = PhotographicParams()
    rng = np.random.default_rng(0)
    drawing = np.full((240, 320, 3), 230, np.uint8)
    drawing[40:200, 60:160] = (40, 90, 200)
    drawing[100:180, 180:300] = (200, 60, 40)
    ys, xs = np.mgrid[0:240, 0:320].astype(np.float32)
    gradient = np.repeat(((xs + ys) * 255 / 560).astype(np.uint8)[..., None], 3, axis=2)
    vivid = np.clip(rng.normal(0, 8, (240, 320, 3)) + (250, 210, 0), 0, 255).astype(np.uint8)  # cartoon yellow
    textured = np.clip(rng.normal(120, 25, (240, 320, 3)), 0, 255).astype(np.uint8)
    stats = {name: frame_statistics(image, params) for name, image in
             (("drawing", drawing), ("gradient", gradient), ("vivid", vivid), ("textured", textured))}
    assert stats["drawing"]["step_edge_share"] >= params.max_step_edge_share
    assert stats["gradient"]["smooth_fill_share"] >= params.max_smooth_fill_share
    assert stats["vivid"]["vivid_fraction"] >= params.max_vivid_fraction
    assert all(stats["textured"][name] < limit for name, limit in (
        ("vivid_fraction", params.max_vivid_fraction), ("hue_count", params.max_hue_count),
        ("step_edge_share", params.max_step_edge_share), ("smooth_fill_share", params.max_smooth_fill_share)))
    letterboxed = np.zeros((360, 320, 3), np.uint8)
    letterboxed[60:300] = textured
    assert frame_statistics(letterboxed, params)["smooth_fill_share"] == stats["textured"]["smooth_fill_share"]
    assert frame_statistics(np.zeros((240, 320, 3), np.uint8), params) is None  # a black frame tells nothing
    # a gradient in colour alone (every row of one luma): its rows are not bars, and it is measured
    hue_gradient = np.stack([np.broadcast_to(np.linspace(40, 200, 240)[:, None], (240, 320)),
                             np.full((240, 320), 120.0), np.broadcast_to(np.linspace(200, 40, 240)[:, None], (240, 320))],
                            axis=2).astype(np.uint8)
    assert frame_statistics(hue_gradient, params)["smooth_fill_share"] >= params.max_smooth_fill_share


# ---------------------------------------------------------------- identities without a body box

@needs_realdata
def test_a_face_track_without_a_person_becomes_an_identity(folder):
    """A face close-up in which the people stage found no person (made to miss it here by demanding
    every keypoint, and kept with min_people 0): the face track is still an identity, with its
    speaking scores and segments; a track shorter than min_face_only_seconds is only listed as
    unmatched."""
    from stages.faces import Faces, FacesParams
    from stages.people import People, PeopleParams

    path = footage.cut(DATA / "video4.mp4", 12, 4, folder / "identity_closeup.mp4", "crop=150:150:95:90,scale=480:480")
    strict = People(PeopleParams(detector_path=str(footage.YOLOX), pose_model_path=str(footage.MOVENET),
                                 min_visible_keypoints=17, min_head_keypoints=5, head_keypoint_threshold=1.0,
                                 min_people=0))
    strict.setup()
    faces = Faces(FacesParams(backend="onnxruntime", model_path=str(footage.YUNET)))
    faces.setup()
    item = _run(path, strict, faces)
    assert item.kept and item.scores["people.n_people"] == 0 and item.scores["faces.n_tracks"] >= 1
    tracks = item.meta["faces"]["tracks"]
    # what a speakers stage hands on: per-track scores on the track's 25 fps frames, and segments
    item.meta["speakers"] = {"tracks": [{"id": t["id"], "segments": [[0.5, 2.0]]} for t in tracks]}
    for t in tracks:
        item.arrays[f"speakers.track{t['id']}.score"] = np.linspace(-1, 1, len(t["frames"]), dtype=np.float32)

    stage = Identities(IdentitiesParams())
    stage.process([item])
    meta = item.meta["identities"]
    long_enough = [t["id"] for t in tracks if (t["frames"][-1] - t["frames"][0] + 1) / 25 >= stage.params.min_face_only_seconds]
    assert long_enough
    assert [i["face_tracks"] for i in meta["identities"]] == [[t] for t in long_enough]
    assert all(i["source"] == "face" and i["speaking_segments"] == [[0.5, 2.0]] for i in meta["identities"])
    assert item.scores["identities.n_face_only_identities"] == len(long_enough)
    speak = np.load(io.BytesIO(item.members["speak.npz"]))["score"]
    assert speak.shape == (len(long_enough), item.meta["clips"]["n_frames"]) and np.isfinite(speak[0]).any()

    longest = max((t["frames"][-1] - t["frames"][0] + 1) / 25 for t in tracks)
    brief = Identities(IdentitiesParams(min_face_only_seconds=longest + 1))
    brief.process([item])
    assert item.meta["identities"]["identities"] == []
    assert item.meta["identities"]["unmatched_face_tracks"] == sorted(t["id"] for t in tracks)
