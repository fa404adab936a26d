"""The `human` pipeline on the real footage: who is in each clip, subtitle changes, pose in the
shards, the corpus analysis, the same results under Ray, and one decode per clip."""
from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest

from corpus_reading import member_hashes, sample_jsons, shard_paths
from conftest import ADAPTIVE_SHOTS, REALDATA_VIDEOS, require_realdata
from curation.pipeline import load_pipeline
from curation.run import RunOptions, run_pipeline
from curation.runner import SegmentRunner, plan_segments
from curation.stage import Item
from curation.status import corpus_status

pytestmark = pytest.mark.slow
FAST_CUTS = ["encode.preset=ultrafast", ADAPTIVE_SHOTS]  # encoding and shot detection are not what these tests measure
RAY_SUBSET = ("video2.mp4", "video4.mp4", "bedroom.mp4")


def _human(videos, folder, executor):
    listing = folder / "inputs.txt"
    listing.write_text("\n".join(map(str, videos)))
    output = folder / "out"
    run_pipeline(load_pipeline("human", overrides=FAST_CUTS),
                 RunOptions(str(listing), str(output), executor, progress=False))
    return output


def _rows_by_video(output):
    rows = pq.read_table(output / "index" / "clips.parquet").to_pylist()
    by_video: dict[str, list[dict]] = {}
    for row in rows:
        by_video.setdefault(row["source_path"].split("/")[-1], []).append(row)
    return by_video


@pytest.fixture(scope="module")
def local_human(tmp_path_factory):
    require_realdata()
    return _human(REALDATA_VIDEOS, tmp_path_factory.mktemp("human-local"), "local")


@pytest.fixture(scope="module")
def ray_human(tmp_path_factory):
    import ray

    videos = [v for v in REALDATA_VIDEOS if v.name in RAY_SUBSET]
    try:
        return _human(videos, tmp_path_factory.mktemp("human-ray"), "ray")
    finally:
        ray.shutdown()


def test_people_counts_follow_the_footage(local_human):
    clips = _rows_by_video(local_human)
    analysed = lambda name: [r for r in clips[name] if r["reject_stage"] != "clips"]
    assert all(r["people.n_people"] >= 2 for r in analysed("video3.mp4"))       # two women at a table
    assert [r["people.n_people"] for r in analysed("video4.mp4")] == [2]         # two girls
    assert [r["people.n_people"] for r in analysed("bedroom.mp4")] == [2]        # two children
    assert [r["people.n_people"] for r in analysed("video2.mp4")] == [1]
    assert [r["people.n_people"] for r in analysed("video5.mp4")] == [1]
    walking = analysed("one-by-one-person-detection.mp4")
    assert len(walking) == 5 and all(r["people.max_people_per_frame"] <= 1 for r in walking)
    cartoon = analysed("video1.mp4")  # drawn characters are not people: no cartoon clip is kept
    assert cartoon and all(r["status"] == "rejected" and r["reject_reason"] in ("drawn", "no_people", "subtitle_change")
                           for r in cartoon)
    every = [r for rows in clips.values() for r in rows]
    assert not [r for r in every if r["reject_reason"] == "error"], "no stage may fail on real footage"


def test_changing_subtitles_drop_video3_but_a_static_title_does_not_drop_video2(local_human):
    clips = _rows_by_video(local_human)
    video3 = [r for r in clips["video3.mp4"] if r["reject_stage"] != "clips"]
    assert video3 and all(r["reject_reason"] == "subtitle_change" for r in video3)
    assert all(r["subtitles.language"] == "zh" for r in video3)  # burned-in Chinese subtitles
    (video2,) = clips["video2.mp4"]
    assert video2["status"] == "kept" and video2["subtitles.n_text_changes"] == 0


def test_pose_sizes_and_amplitudes_land_in_shards_and_index(local_human):
    documents = sample_jsons(local_human)
    assert documents
    import webdataset as wds

    for sample in wds.WebDataset(shard_paths(local_human), shardshuffle=False):
        doc = documents[sample["__key__"]]
        pose = np.load(io.BytesIO(sample["pose.npz"]))
        n_people = len(doc["identities"])
        assert pose["kpts"].shape == (n_people, len(pose["frames"]), 17, 3) and pose["kpts"].dtype == np.float16
        assert pose["boxes"].shape == (n_people, len(pose["frames"]), 4)
        assert n_people == doc["scores"]["people.n_people"] >= 1
        for person in doc["identities"]:
            assert person["human_size"] in ("portrait", "chest", "waist", "knees", "full_body")
            assert person["motion_amplitude"] is None or person["motion_class"] in (
                "slight", "moderate", "significant", "extreme")
    kept = [r for rows in _rows_by_video(local_human).values() for r in rows if r["status"] == "kept"]
    assert all(r["people.human_size"] and r["quality.sharpness"] > 0 and r["motion.mean_flow"] >= 0 for r in kept)


def test_status_and_report_show_the_corpus_analysis(local_human):
    analysis = corpus_status(local_human)["analysis"]
    assert set(analysis) == {"human_size", "motion_amplitude", "language"}  # no captioner ran: no scene
    kept = corpus_status(local_human)["clips"]["kept"]
    assert all(sum(counts.values()) == kept for counts in analysis.values())
    assert "full_body" in analysis["human_size"] and "zh" in analysis["language"]
    assert "Corpus analysis (kept clips)" in (local_human / "report.html").read_text()


def test_ray_gives_the_same_clips_and_scores(local_human, ray_human):
    ray_rows = {r["key"]: r for rows in _rows_by_video(ray_human).values() for r in rows}
    local_rows = {r["key"]: r for rows in _rows_by_video(local_human).values() for r in rows}
    drop = ("shard", "run_id")
    assert ray_rows and all({k: v for k, v in row.items() if k not in drop}
                            == {k: v for k, v in local_rows[key].items() if k not in drop}
                            for key, row in ray_rows.items())
    local_members = member_hashes(local_human)
    assert all(local_members[key] == members for key, members in member_hashes(ray_human).items())


def test_all_human_stages_share_one_decode_per_clip(realdata):
    pipeline = load_pipeline("human", overrides=FAST_CUTS)
    (segment,) = plan_segments(pipeline)
    runner = SegmentRunner(segment)
    video = realdata / "data-juicer/tests/ops/data/video4.mp4"
    clips = runner([Item(source_id="v4", source_path=str(video))])
    assert runner.decodes == len(clips) == 1
    assert {"quality", "motion", "people", "subtitles"} <= set(clips[0].timings)
