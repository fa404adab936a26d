"""The faces stage on real footage: YuNet detection (both runtimes), tracks, Light-ASD crops.

The golden Light-ASD run (../shared/golden/light-asd) detected faces with yunet_n_dynamic.onnx on
frames made by `ffmpeg -r 25` and saved as jpgs; where ffmpeg is installed, those frames are rebuilt
and the onnxruntime backend and the crops must reproduce the golden boxes and crops exactly. The stage
itself reads frames decoded by PyAV (curation.frames), which are not the same pictures: ffmpeg's
`-r 25` repeats the first frames, so its frame k shows the source about 1 (video3) to 2 (video4) frames
of 25 fps earlier than PyAV's frame k. Stage boxes are compared with the golden boxes at the shift
that fits them best.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from conftest import LIGHT_ASD_GOLDEN, REALDATA
from curation.frames import decode_frames
from curation.stage import ClipFrames, Item
from stages.faces import Faces, FacesParams, frames_at_fps
from stages.models.boxes import box_iou
from stages.models.face_tracking import crop_face, crop_parameters, gray_centre_112, track_faces
from stages.models.yunet import YuNetOnnx


CLIPS = REALDATA / "data-juicer" / "tests" / "ops" / "data"
YUNET_DIR = REALDATA / "libfacedetection.train" / "onnx"
DYNAMIC_MODEL = YUNET_DIR / "yunet_n_dynamic.onnx"
FIXED_MODEL = YUNET_DIR / "yunet_n_320_320.onnx"
GOLDEN_WINDOWS = {"video4": (1.0, 7.0), "video3": (24.0, 30.0)}  # golden README, "Which face is which"

needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason=f"real footage and weights not found at {REALDATA}")
needs_golden = pytest.mark.skipif(not LIGHT_ASD_GOLDEN.is_dir(), reason=f"golden Light-ASD outputs not found at {LIGHT_ASD_GOLDEN}")


def golden_tracks(clip: str) -> list[dict]:
    """The golden trackA (left) and trackB (right) of `clip`, frames in order."""
    tracks = json.loads((LIGHT_ASD_GOLDEN / "tracks.json").read_text())
    return [tracks[f"{clip}_track{name}"] for name in "AB"]


def golden_boxes(track: dict, key: str) -> np.ndarray:
    return np.array([track["frames"][frame][key] for frame in sorted(track["frames"], key=int)])


def cut_clip(path: Path, start: float, end: float) -> tuple[bytes, float]:
    """[start, end) of a video re-encoded to an H.264 mp4 at the source rate, as a clip would be."""
    out = io.BytesIO()
    with av.open(str(path)) as source, av.open(out, "w", format="mp4") as clip:
        video = source.streams.video[0]
        rate = video.average_rate
        encoder = clip.add_stream("libx264", rate=rate)
        encoder.width, encoder.height, encoder.pix_fmt = video.width, video.height, "yuv420p"
        encoder.options = {"crf": "12", "preset": "ultrafast"}
        source.seek(int(max(0.0, start - 1.0) / video.time_base), stream=video)
        written = 0
        for frame in source.decode(video):
            if frame.time < start - 1e-6:
                continue
            if frame.time >= end - 1e-6:
                break
            picture = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            picture.pts, picture.time_base = written, 1 / rate
            written += 1
            for packet in encoder.encode(picture):
                clip.mux(packet)
        for packet in encoder.encode():
            clip.mux(packet)
    return out.getvalue(), written / float(rate)


def run_faces(data: bytes, duration: float, **params) -> Item:
    stage = Faces(FacesParams(**params))
    stage.setup()
    item = Item(source_id="x", source_path="clip.mp4", key="x-0000", clip_index=0, start=0.0, end=duration,
                members={"mp4": data}, frames=decode_frames(data, stage.frame_specs()))
    item.meta["clips"] = {"duration": duration}
    stage.process([item])
    return item


@pytest.fixture(scope="module")
def golden_window_clips() -> dict[str, tuple[bytes, float]]:
    return {clip: cut_clip(CLIPS / f"{clip}.mp4", *window) for clip, window in GOLDEN_WINDOWS.items()}


def ffmpeg_golden_frames(clip: str, workdir: Path, n_frames: int) -> list[np.ndarray]:
    """Frames 0 .. n_frames-1 exactly as the golden run made them (README step 1), as BGR arrays."""
    avi = workdir / f"{clip}.avi"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(CLIPS / f"{clip}.mp4"), "-qscale:v", "2",
                    "-threads", "10", "-async", "1", "-r", "25", "-t", f"{n_frames / 25 + 0.2}", str(avi)], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(avi), "-qscale:v", "2", "-threads", "10",
                    "-frames:v", str(n_frames), "-f", "image2", str(workdir / f"{clip}_%06d.jpg")], check=True)
    return [cv2.imread(str(workdir / f"{clip}_{index + 1:06d}.jpg")) for index in range(n_frames)]


@needs_realdata
@needs_golden
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is needed to rebuild the golden frames")
@pytest.mark.parametrize("clip", ["video4", "video3"])
def test_onnxruntime_backend_and_crops_reproduce_golden_run(clip, tmp_path):
    tracks = golden_tracks(clip)
    first = tracks[0]["first_frame"]
    frames_bgr = ffmpeg_golden_frames(clip, tmp_path, first + 150)[first:]
    detector = YuNetOnnx(str(DYNAMIC_MODEL), score_threshold=0.5, nms_threshold=0.3)  # golden README, Deviation 1
    detections = [detector.detect(frame[None, :, :, ::-1])[0] for frame in frames_bgr]

    for track in tracks:  # every golden detection is one of ours, to its 4-decimal rounding
        for found, golden in zip(detections, golden_boxes(track, "det_box_x1y1x2y2")):
            assert np.abs(found.boxes - golden).max(axis=1).min() < 1e-3

    ours = track_faces([found.boxes for found in detections], [found.scores for found in detections],
                       iou_threshold=0.3, max_gap=10, min_detections=10)
    assert len(ours) == 2  # video4's occasional third box (9 frames) is too short to be a track
    for mine, golden in zip(ours, tracks):
        assert mine.frames.tolist() == list(range(150))
        np.testing.assert_allclose(mine.boxes, golden_boxes(golden, "track_box_x1y1x2y2"), atol=1e-3)

    videos = np.load(LIGHT_ASD_GOLDEN / "inputs.npz")
    for name, track in zip("AB", tracks):
        centre_x, centre_y, half_size = crop_parameters(golden_boxes(track, "track_box_x1y1x2y2"))
        np.testing.assert_array_equal(centre_x, golden_boxes(track, "crop_center_x"))
        np.testing.assert_array_equal(centre_y, golden_boxes(track, "crop_center_y"))
        np.testing.assert_array_equal(half_size, golden_boxes(track, "crop_half_size_s"))
        gray = np.stack([gray_centre_112(crop_face(frame[:, :, ::-1], x, y, s, crop_scale=0.4))
                         for frame, x, y, s in zip(frames_bgr, centre_x, centre_y, half_size)])
        np.testing.assert_array_equal(gray, videos[f"{clip}_track{name}_video"])


def best_shift_iou(track: dict, golden: dict) -> tuple[int, np.ndarray]:
    """IoU per frame between a stage track and the golden track of the same face, at the shift
    (golden frame = first golden frame + window frame + shift, 0 to 4) with the highest mean IoU."""
    golden_by_frame = {int(frame): values["det_box_x1y1x2y2"] for frame, values in golden["frames"].items()}
    best_shift, best_ious = -1, np.zeros(1)
    for shift in range(5):
        frames = [frame for frame in track["frames"] if golden["first_frame"] + frame + shift in golden_by_frame]
        ious = np.array([box_iou(np.array([track["boxes"][frame - track["frames"][0]]]),
                                 np.array([golden_by_frame[golden["first_frame"] + frame + shift]]))[0, 0]
                         for frame in frames])
        if ious.mean() > best_ious.mean():
            best_shift, best_ious = shift, ious
    return best_shift, best_ious


@needs_realdata
@needs_golden
@pytest.mark.parametrize("backend, model", [("onnxruntime", DYNAMIC_MODEL), ("opencv", FIXED_MODEL)])
@pytest.mark.parametrize("clip", ["video4", "video3"])
def test_stage_tracks_left_and_right_face_near_golden(clip, backend, model, golden_window_clips):
    data, duration = golden_window_clips[clip]
    item = run_faces(data, duration, backend=backend, model_path=str(model))

    assert item.kept
    tracks = item.meta["faces"]["tracks"]
    assert item.scores == {"faces.n_tracks": 2, "faces.max_faces_per_frame": 2}
    left, right = tracks
    assert np.mean(np.array(left["boxes"])[:, [0, 2]]) < np.mean(np.array(right["boxes"])[:, [0, 2]])
    for track, golden in zip(tracks, golden_tracks(clip)):
        assert len(track["frames"]) >= 120  # of the 150: video4's right girl hides her chin at the end
        assert track["frames"] == list(range(track["frames"][0], track["frames"][-1] + 1))
        rgb = item.arrays[f"faces.track{track['id']}.rgb224"]
        gray = item.arrays[f"faces.track{track['id']}.gray112"]
        assert rgb.shape == (len(track["frames"]), 224, 224, 3) and rgb.dtype == np.uint8
        assert gray.shape == (len(track["frames"]), 112, 112) and gray.dtype == np.uint8
        np.testing.assert_array_equal(gray[0], cv2.cvtColor(rgb[0], cv2.COLOR_RGB2GRAY)[56:168, 56:168])
        shift, ious = best_shift_iou(track, golden)
        assert ious.mean() > (0.9 if backend == "onnxruntime" else 0.8), (shift, ious.mean())
        assert ious.min() > 0.4, (shift, ious.min())


@needs_realdata
@pytest.mark.parametrize("path, start, end", [
    (CLIPS / "video1.mp4", 4.0, 9.0),  # cartoon: YuNet fires on a cartoon face (score about 0.6)
    (REALDATA / "sample-videos" / "one-by-one-person-detection.mp4", 25.0, 33.0),  # a man seen from behind
])
def test_clips_without_real_faces_are_rejected_with_a_reason(path, start, end):
    data, duration = cut_clip(path, start, end)
    item = run_faces(data, duration, model_path=str(FIXED_MODEL))

    assert item.reject is not None and item.reject.reason == "no_faces"
    assert "formed no track" in item.reject.detail  # the detector fired, the tracks were too weak
    assert item.meta["faces"] == {"tracks": []}
    assert item.scores == {"faces.n_tracks": 0, "faces.max_faces_per_frame": 0}
    assert not item.arrays


def grey_clip(n_frames: int) -> ClipFrames:
    return ClipFrames(images=np.full((n_frames, 96, 128, 3), 128, np.uint8),
                      times=np.arange(n_frames) / 25.0, scale=1.0)


@needs_realdata
def test_faceless_and_empty_clips():
    stage = Faces(FacesParams(model_path=str(FIXED_MODEL), reject_no_faces=False))
    stage.setup()
    spec = stage.frame_specs()[0]
    faceless = Item(source_id="x", source_path="x", frames={spec: grey_clip(20)}, meta={"clips": {"duration": 0.8}})
    empty = Item(source_id="y", source_path="y", frames={spec: grey_clip(0)}, meta={"clips": {"duration": 0.0}})
    stage.process([faceless, empty])

    assert faceless.kept and faceless.meta["faces"] == {"tracks": []}
    assert faceless.scores["faces.n_tracks"] == 0
    assert empty.reject is not None and empty.reject.reason == "no_frames"


@needs_realdata
def test_setup_names_the_parameter_to_fix():
    with pytest.raises(ValueError, match="model_path"):
        Faces(FacesParams()).setup()
    with pytest.raises(ValueError, match="backend"):
        Faces(FacesParams(backend="opencv", model_path=str(DYNAMIC_MODEL))).setup()


def moving_box(frame: int, x0: float) -> np.ndarray:
    return np.array([x0 + 2 * frame, 50.0, x0 + 2 * frame + 40, 90.0])


def test_tracking_fills_short_gaps_splits_long_ones_and_drops_short_tracks():
    n_frames = 40
    boxes = [[] for _ in range(n_frames)]
    scores = [[] for _ in range(n_frames)]
    for frame in range(n_frames):
        if not 10 <= frame < 15:  # face A: a 5-frame gap, bridged
            boxes[frame].append(moving_box(frame, 0.0)); scores[frame].append(0.9)
        if frame < 12 or frame >= 30:  # face B: an 18-frame gap, too long to bridge
            boxes[frame].append(moving_box(frame, 300.0)); scores[frame].append(0.8)
        if frame in (3, 4, 5):  # a flicker, too short to be a track
            boxes[frame].append(np.array([150.0, 150.0, 190.0, 190.0])); scores[frame].append(0.6)
    tracks = track_faces([np.array(b).reshape(-1, 4) for b in boxes], [np.array(s) for s in scores],
                         iou_threshold=0.3, max_gap=10, min_detections=10)

    assert [(t.frames[0], t.frames[-1]) for t in tracks] == [(0, 39), (0, 11), (30, 39)]
    face_a = tracks[0]
    np.testing.assert_allclose(face_a.boxes, [moving_box(f, 0.0) for f in range(n_frames)])  # linear
    assert np.isnan(face_a.scores[10:15]).all() and face_a.mean_score == pytest.approx(0.9)


def test_tracking_assigns_each_detection_to_one_track():
    # two faces side by side, each detection overlapping both tracks' last boxes a little
    left, right = np.array([0.0, 0.0, 40.0, 40.0]), np.array([30.0, 0.0, 70.0, 40.0])
    frames = [np.stack([left + [f, 0, f, 0], right + [f, 0, f, 0]]) for f in range(12)]
    tracks = track_faces(frames, [np.array([0.9, 0.8])] * 12, iou_threshold=0.1, max_gap=2, min_detections=10)
    assert len(tracks) == 2
    np.testing.assert_allclose(tracks[0].boxes[:, 0], np.arange(12))
    np.testing.assert_allclose(tracks[1].boxes[:, 0], 30 + np.arange(12))


def test_timeline_repeats_frames_of_sparser_sources():
    assert frames_at_fps(np.arange(25) / 25.0, 1.0, 25.0).tolist() == list(range(25))
    at_24 = frames_at_fps(np.arange(24) / 24.0, 1.0, 25.0)  # a 24 fps second: one frame shown twice
    assert len(at_24) == 25 and sorted(set(at_24.tolist())) == list(range(24))
    assert frames_at_fps(np.arange(10) / 10.0, 1.0, 25.0).tolist()[:6] == [0, 1, 1, 2, 2, 2]
