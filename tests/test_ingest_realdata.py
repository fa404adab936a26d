"""All real videos through `ingest` under both executors: the same corpus, shots where the footage
cuts, clip lengths within bounds, and shards that plain webdataset and `datasets` read back."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from corpus_reading import member_hashes, sample_jsons, shard_paths
from curation.pipeline import load_pipeline
from curation.run import RunOptions, run_pipeline
from conftest import ADAPTIVE_SHOTS, REALDATA_VIDEOS, require_realdata

pytestmark = pytest.mark.slow


def _ingest(inputs, output, executor):
    return run_pipeline(load_pipeline("ingest", overrides=[ADAPTIVE_SHOTS]), RunOptions(str(inputs), str(output), executor, progress=False))


@pytest.fixture(scope="module")
def realdata_list(tmp_path_factory):
    require_realdata()
    listing = tmp_path_factory.mktemp("lists") / "videos.txt"
    listing.write_text("\n".join(str(p) for p in REALDATA_VIDEOS) + "\n")
    return listing


@pytest.fixture(scope="module")
def local_corpus(realdata_list, tmp_path_factory):
    output = tmp_path_factory.mktemp("local")
    return output, _ingest(realdata_list, output, "local")


@pytest.fixture(scope="module")
def ray_corpus(realdata_list, tmp_path_factory):
    import ray

    output = tmp_path_factory.mktemp("ray")
    record = _ingest(realdata_list, output, "ray")
    ray.shutdown()
    return output, record


def test_every_real_video_becomes_clips(local_corpus):
    output, record = local_corpus
    sources = pq.read_table(output / "index" / "sources.parquet").to_pylist()
    assert len(sources) == len(REALDATA_VIDEOS) == record["counts"]["processed"]
    assert all(s["status"] == "ok" and s["n_kept"] >= 1 for s in sources), sources
    clips = pq.read_table(output / "index" / "clips.parquet").to_pylist()
    kept = [c for c in clips if c["status"] == "kept"]
    assert all(4.0 <= c["duration"] <= 30.0 + 1e-6 for c in kept)
    assert all(c["reject_reason"] == "too_short" and c["duration"] < 4.0 for c in clips if c["status"] != "kept")
    # the 139 s walking video is one shot, split into 5 clips of equal frame counts: 27.9 s each, to
    # within its one frame (10 fps)
    walking = [c for c in kept if c["source_path"].endswith("one-by-one-person-detection.mp4")]
    assert len(walking) == 5 and all(abs(c["duration"] - 139.4 / 5) <= 0.1 + 1e-6 for c in walking)


def test_clip_members_match_their_metadata(local_corpus):
    output, _ = local_corpus
    import av, io

    for key, doc in sample_jsons(output).items():
        clip = doc["clip"]
        assert clip["n_frames"] == round(clip["duration"] * clip["fps"])
        assert doc["lineage"]["pipeline"] == "ingest" and doc["source"]["id"] == key.split("-")[0]
    hashes = member_hashes(output)
    no_audio = [k for k, d in sample_jsons(output).items() if not d["clip"]["has_audio"]]
    assert no_audio and all("wav" not in hashes[k] for k in no_audio)  # bedroom and walking clips
    assert all("wav" in hashes[k] for k in hashes if k not in no_audio)


def test_local_and_ray_executors_write_the_same_corpus(local_corpus, ray_corpus):
    local_out, _ = local_corpus
    ray_out, ray_record = ray_corpus
    assert ray_record["executor"] == "ray"
    local_hashes, ray_hashes = member_hashes(local_out), member_hashes(ray_out)
    assert local_hashes and local_hashes == ray_hashes  # same keys, and every member byte-identical
    local_index = pq.read_table(local_out / "index" / "clips.parquet").drop(["shard", "run_id"])
    ray_index = pq.read_table(ray_out / "index" / "clips.parquet").drop(["shard", "run_id"])
    assert local_index.sort_by("key").to_pylist() == ray_index.sort_by("key").to_pylist()


def test_shots_found_where_the_footage_cuts(demo_inputs, tmp_path):
    truth = json.loads((demo_inputs / "truth.json").read_text())
    _ingest(demo_inputs, tmp_path, "local")
    for doc in sample_jsons(tmp_path).values():
        name = doc["source"]["path"].split("/")[-1]
        found = doc["stages"]["shots"]["cuts"]
        assert len(found) == len(truth[name]["cuts"]), (name, found)
        assert all(abs(a - b) <= 1 / 25 + 1e-6 for a, b in zip(found, truth[name]["cuts"])), (name, found)


def test_shards_read_back_with_datasets(local_corpus):
    """The `datasets` webdataset builder reads the shards. Its default Audio/Video features need
    torchcodec (no build for this torch), so the media members are read as bytes."""
    datasets = pytest.importorskip("datasets")
    import pyarrow as pa

    output, _ = local_corpus
    docs = sample_jsons(output)
    json_feature = datasets.Features.from_arrow_schema(pa.Table.from_pylist([{"json": d} for d in docs.values()]).schema)
    features = datasets.Features({"__key__": datasets.Value("string"), "__url__": datasets.Value("string"),
                                  "json": json_feature["json"], "mp4": datasets.Value("binary"),
                                  "wav": datasets.Value("binary")})
    loaded = datasets.load_dataset("webdataset", data_files={"train": shard_paths(output)}, split="train",
                                   features=features, cache_dir=str(output / "hf-cache"))
    assert sorted(loaded["__key__"]) == sorted(docs)
    for row in loaded:
        assert row["json"]["clip"] == docs[row["__key__"]]["clip"] and row["mp4"][4:8] == b"ftyp"
