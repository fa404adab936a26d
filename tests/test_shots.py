"""Shots on footage with known answers: generated sequences of real clips joined by cuts, fades to
black and to white, dissolves, 8-frame shots, dim letterboxed scenes and title cards
(bench/shot_footage.py), and the real clips' labelled cuts. Clips are cut frame-exact."""
from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from bench.shot_footage import (KINDS, LabelledVideo, build, real_video, score_transitions, shot_frames_kept,
                                transition_frames_in_shots, transitions_between)
from conftest import require_realdata
from curation.pipeline import load_pipeline
from curation.run import RunOptions, run_pipeline
from curation.frames import decode_window
from curation.stage import FrameSpec, Item
from stages.clips import Clips, ClipsParams
from stages.encode import Encode, EncodeParams
from stages.probe import Probe, ProbeParams
from stages.shots import Shots, ShotsParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shots_stage():
    stage = Shots(ShotsParams())
    stage.setup()
    return stage


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    require_realdata()
    folder = tmp_path_factory.mktemp("shot-footage")
    return {kind: build(kind, folder) for kind in KINDS}


_DETECTED: dict[str, Item] = {}


def _shots_of(stage: Shots, video: LabelledVideo) -> Item:
    """The source item after probe and shots (each video is analysed once per test run)."""
    if str(video.path) not in _DETECTED:
        item = Item(source_id=video.name, source_path=str(video.path))
        Probe(ProbeParams()).process([item])
        stage.process([item])
        assert item.reject is None, item.reject
        _DETECTED[str(video.path)] = item
    return _DETECTED[str(video.path)]


@pytest.mark.parametrize("kind", KINDS)
def test_transitions_are_found_and_cut_out(shots_stage, footage, kind):
    video = footage[kind]
    meta = _shots_of(shots_stage, video).meta["shots"]
    shots = [tuple(frames) for frames in meta["shot_frames"]]
    score = score_transitions(video.transitions, transitions_between(shots))
    assert score.f1 >= 0.9, (kind, score, meta["segments"])
    # no fade, dissolve or title-card frame stays inside a shot; the shots themselves are kept
    assert transition_frames_in_shots(video, shots) <= 2, (kind, meta["segments"])
    assert shot_frames_kept(video, shots) >= 0.93, (kind, meta["segments"])


def test_segment_kinds_say_what_was_cut_out(shots_stage, footage):
    kinds = {name: {segment["kind"] for segment in _shots_of(shots_stage, footage[name]).meta["shots"]["segments"]}
             for name in ("fade_black", "title_cards", "dissolve", "short_shots")}
    assert {"fade", "blank"} <= kinds["fade_black"]
    assert "title_card" in kinds["title_cards"]
    assert "dissolve" in kinds["dissolve"]
    assert kinds["short_shots"] == {"shot"}  # 8-frame shots are shots of their own, not merged away


def test_real_cuts_are_found(shots_stage):
    require_realdata()
    found = [score_transitions(video.transitions, transitions_between(
        [tuple(f) for f in _shots_of(shots_stage, video).meta["shots"]["shot_frames"]]))
        for video in map(real_video, ("data-juicer/tests/ops/data/video1.mp4", "data-juicer/tests/ops/data/video3.mp4",
                                      "data-juicer/tests/ops/data/video5.mp4", "sam2/notebooks/videos/bedroom.mp4"))]
    true_positives = sum(s.true_positives for s in found)
    errors = sum(s.false_positives + s.false_negatives for s in found)
    assert 2 * true_positives / (2 * true_positives + errors) >= 0.85, found
    assert sum(s.false_positives for s in found) == 0, found


@pytest.mark.parametrize("name", ["cuts", "video3"])
def test_clips_hold_exactly_their_shots_frames(shots_stage, footage, name, tmp_path):
    """The frames the analysis stages read from a clip's window of the source, and the frames of the
    encoded clip, are both exactly the shot's frames."""
    video = footage[name] if name in footage else real_video(f"data-juicer/tests/ops/data/{name}.mp4")
    source = copy.deepcopy(_shots_of(shots_stage, video))
    clips = [clip for clip in Clips(ClipsParams(min_clip_s=1.0, max_clip_s=30.0)).process([source]) if clip.kept]
    source_frames = _small_frames(video.path.read_bytes())
    assert clips
    windows = {clip.key: _gray(decode_window(str(video.path), clip.window, [WINDOW_SPEC])[WINDOW_SPEC].images)
               for clip in clips}
    Encode(EncodeParams(preset="ultrafast")).process(clips)
    for clip in clips:
        assert clip.kept, clip.reject
        first, end = clip.meta["clips"]["source_frames"]
        for clip_frames in (windows[clip.key], _small_frames(clip.members["mp4"])):
            assert len(clip_frames) == end - first == clip.meta["clips"]["n_frames"]
            # each end frame is the source frame it should be, not its neighbour across the boundary
            for got, index, neighbour in ((clip_frames[0], first, first - 1), (clip_frames[-1], end - 1, end)):
                right = _distance(got, source_frames[index])
                if 0 <= neighbour < len(source_frames):
                    assert right < _distance(got, source_frames[neighbour]), (clip.key, index)
                assert right < 6.0, (clip.key, index, right)


WINDOW_SPEC = FrameSpec(gray=True)


def _gray(images: np.ndarray) -> list[np.ndarray]:
    return [cv2.resize(image, (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32) for image in images]


def _small_frames(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [cv2.resize(frame.to_ndarray(format="gray"), (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32)
                for frame in container.decode(video=0)]


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


def test_long_sources_are_scored_in_chunks_with_the_same_answer(shots_stage, footage):
    """TransNetV2 holds one chunk of thumbnails at a time; chunk edges do not move a boundary."""
    whole = _shots_of(shots_stage, footage["dissolve"]).meta["shots"]["segments"]
    chunked = Shots(ShotsParams(transnet_chunk_frames=200))
    chunked.setup()
    item = Item(source_id="dissolve", source_path=str(footage["dissolve"].path))
    Probe(ProbeParams()).process([item])
    chunked.process([item])
    assert item.meta["shots"]["segments"] == whole


def test_the_index_keeps_every_sources_segments_even_when_no_clip_is_kept(footage, tmp_path):
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"{footage['short_shots'].path}\n{footage['title_cards'].path}\n")
    run_pipeline(load_pipeline("ingest", overrides=["encode.preset=ultrafast"]),
                 RunOptions(str(listing), str(tmp_path / "out"), progress=False))
    sources = {Path(row["path"]).stem: row for row in pq.read_table(tmp_path / "out/index/sources.parquet").to_pylist()}
    short = sources["short_shots"]  # every shot is under 4 s: no clip, and still its shot list
    assert (short["status"], short["reject_reason"]) == ("rejected", "no_clips")
    assert [segment["kind"] for segment in json.loads(short["shots.segments"])] == ["shot"] * 8
    cards = json.loads(sources["title_cards"]["shots.segments"])
    assert [segment["kind"] for segment in cards] == ["shot", "title_card", "shot", "title_card", "shot", "title_card", "shot"]
