"""The flagship `interacthuman` pipeline, loaded from the repository's pipelines.yaml, run end to end on
a real two-person clip under both executors: every member the sample format (docs/sample-format.md)
promises is in the shards with its shapes and dtypes, identity i is the same count everywhere, and the
local and Ray corpora hold the same samples byte for byte.

The models whose weights are not public here are tiny configurations of the real architectures:
Grounding-DINO, SAM2, CLIP (for the real LAION head) and SyncNet with random weights; the caption VLM
and the phrases LM with random layers but an embedding and output head set so that greedy decoding
always gives a fixed reply (tests/tiny_hf.py): a random caption need not name people (the
human_caption_rule would drop the clip) and random phrases never parse as JSON (the phrases stage
would), so nothing after them would run. Random models give arbitrary scores and masks: the
assertions are on structure, not content.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from scipy.io import wavfile

from conftest import REALDATA, require_realdata
from corpus_reading import member_hashes, shard_paths
from curation.pipeline import load_pipeline
from curation.run import RunOptions, run_pipeline
from curation.sources import content_id
from curation.stage import matches_any
from stages.models.checkpoint_configs import save_random_grounding_dino, save_random_sam2_video
from stages.models.syncnet import SyncNet
from tiny_hf import save_scripted_causal_lm, save_scripted_qwen_vl, save_tiny_clip_vision

# a run that cannot go on (Ray waiting for resources it will never get) fails instead of hanging
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PIPELINE = "interacthuman"
# video4: two girls, one talks and laughs to camera while the other braids her hair; no subtitles, one
# shot over its first seconds, mono AAC audio
VIDEO = REALDATA / "data-juicer/tests/ops/data/video4.mp4"
WINDOW_S = (0.0, 6.0)
CAPTION = ("Two girls sit in a bedroom: a girl in a white shirt talks and laughs at the camera while a girl "
           "with long hair braids her hair.")
SUBJECTS = [{"phrase": "girl in a white shirt", "appearance": "white shirt, talking and laughing", "kind": "person"},
            {"phrase": "girl with long hair", "appearance": "long hair, braiding", "kind": "person"}]
KEY = re.compile(r"^[0-9a-f]{16}-\d{4}$")
MEMBER = re.compile(r"^(mp4|wav|json|masks\.npz|speak\.npz|pose\.npz|ref_\d+\.png|face_\d+\.png)$")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Six seconds of video4 re-encoded (the whole 22.5 s file would take the test over its budget)."""
    require_realdata()
    target = tmp_path_factory.mktemp("source") / "video4_0-6s.mp4"
    start, end = WINDOW_S
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", str(start), "-t", str(end - start),
                    "-i", str(VIDEO), "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(target)],
                   check=True)
    return target


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("interacthuman-models")
    syncnet = root / "syncnet_random.model"
    torch.manual_seed(0)
    torch.save(SyncNet().state_dict(), syncnet)
    return {
        "clip": save_tiny_clip_vision(root / "clip"),
        "syncnet": syncnet,
        "caption": save_scripted_qwen_vl(root / "qwen2_5_vl", CAPTION),
        "phrases": save_scripted_causal_lm(root / "chat-lm", json.dumps({"subjects": SUBJECTS})),
        "grounding": save_random_grounding_dino(root / "grounding", "test", shortest_edge=200, longest_edge=320),
        "sam2": save_random_sam2_video(root / "sam2", "test", object_score_bias=4.0),  # sees every object
    }


def overrides(models) -> list[str]:
    """--set overrides: the local paths of the weights pipelines.yaml leaves null, and only what running
    on CPU with random weights needs; everything else is the flagship's own configuration."""
    return [
        # no CLIP ViT-L/14 here: a tiny random CLIP (768-wide projection) feeds the real LAION head,
        # whose score on random embeddings means nothing, so no clip may fail on it
        f"aesthetics.clip_path={models['clip']}",
        "aesthetics.min_score=-1e9",
        # no public SyncNet weights: random ones, whose Sync-C is noise, so the sync filter is off
        f"syncnet.model_path={models['syncnet']}",
        "syncnet.min_sync_conf=-1e9",
        # no Qwen2.5-VL-7B: the tiny scripted one, on the CPU in float32 (the default is cuda, bfloat16)
        f"caption.model_path={models['caption']}",
        "caption.device=cpu",
        "caption.dtype=float32",
        # no LLM endpoint: the local backend with the tiny scripted chat LM, on the CPU in float32
        "phrases.backend=local",
        f"phrases.local_model_path={models['phrases']}",
        "phrases.device=cpu",
        "phrases.dtype=float32",
        # no Grounding-DINO / SAM2.1 weights: tiny random ones, on the CPU in float32 (the default
        # tracker dtype is bfloat16, for GPUs)
        f"masks.grounding_model_path={models['grounding']}",
        f"masks.sam2_model_path={models['sam2']}",
        "masks.device=cpu",
        "masks.tracker_dtype=float32",
        # random Grounding-DINO scores are all far below the default 0.35, and random masks rarely
        # overlap the real people the people stage found: accept any box and any overlap
        "masks.box_threshold=0.0",
        "masks.min_match_iou=0.0",
    ]


def _run(executor: str, models, source, folder) -> dict:
    listing = folder / "inputs.txt"
    listing.write_text(str(source))
    pipeline = load_pipeline(PIPELINE, overrides=overrides(models))
    threads = torch.get_num_threads()
    try:
        record = run_pipeline(pipeline, RunOptions(str(listing), str(folder / "out"), executor,
                                                   workers=1 if executor == "ray" else None, progress=False))
    finally:
        torch.set_num_threads(threads)  # stages set torch's (process-wide) thread count in setup
        if executor == "ray":
            import ray

            ray.shutdown()
    return {"output": folder / "out", "record": record, "pipeline": pipeline}


@pytest.fixture(scope="module")
def local_corpus(models, source, tmp_path_factory):
    return _run("local", models, source, tmp_path_factory.mktemp("interacthuman-local"))


@pytest.fixture(scope="module")
def ray_corpus(models, source, tmp_path_factory):
    return _run("ray", models, source, tmp_path_factory.mktemp("interacthuman-ray"))


@pytest.fixture(params=["local", "ray"])
def corpus(request):
    return request.getfixturevalue(f"{request.param}_corpus")


def samples(output) -> dict[str, dict[str, bytes]]:
    import webdataset as wds

    found = {}
    for sample in wds.WebDataset(shard_paths(output), shardshuffle=False, empty_check=False):
        assert sample["__key__"] not in found, f"duplicate sample {sample['__key__']}"
        found[sample["__key__"]] = {name: data for name, data in sample.items() if not name.startswith("__")}
    return found


def npz(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data)) as arrays:
        return {name: arrays[name] for name in arrays.files}


def test_the_clip_is_kept_by_every_stage(corpus):
    clips = pq.read_table(corpus["output"] / "index/clips.parquet").to_pylist()
    (source,) = pq.read_table(corpus["output"] / "index/sources.parquet").to_pylist()
    assert source["status"] == "ok" and source["n_clips"] == len(clips) >= 1
    rejected = [(c["key"], c["reject_stage"], c["reject_reason"], c["reject_detail"]) for c in clips
                if c["status"] != "kept"]
    assert not rejected, rejected
    assert set(samples(corpus["output"])) == {c["key"] for c in clips}


def test_every_promised_member_is_there(corpus):
    for key, members in samples(corpus["output"]).items():
        assert KEY.match(key), key
        unexpected = [name for name in members if not MEMBER.match(name)]
        assert not unexpected, f"{key}: members outside the sample format {unexpected}"
        declared = {pattern for stage in corpus["pipeline"].stages for pattern in stage.cls.adds_members} | {"json"}
        undeclared = [name for name in members if not matches_any(name, declared)]
        assert not undeclared, f"{key}: members no stage declares in adds_members {undeclared}"
        assert {"mp4", "wav", "json", "masks.npz", "speak.npz", "pose.npz"} <= set(members), sorted(members)
        doc = json.loads(members["json"])
        n_id = len(doc["identities"])
        assert n_id >= 1
        # every identity has a full-body reference (references.reject_missing is on, and the clip was
        # kept); a face reference exactly where the references stage found a head for it
        references = {r["id"]: r for r in doc["stages"]["references"]["identities"]}
        assert sorted(references) == list(range(n_id))
        expected = ({f"ref_{i}.png" for i in range(n_id)}
                    | {f"face_{i}.png" for i in range(n_id) if references[i]["face_source"] is not None})
        assert {name for name in members if name.endswith(".png")} == expected


def test_mp4_and_wav_follow_the_format(corpus):
    for key, members in samples(corpus["output"]).items():
        clip = json.loads(members["json"])["clip"]
        with av.open(io.BytesIO(members["mp4"])) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
            width, height = video.codec_context.width, video.codec_context.height
            assert width % 2 == 0 and height % 2 == 0 and (width, height) == (clip["width"], clip["height"])
            assert float(video.average_rate) == clip["fps"] == 25.0  # clips.fps: 25 in the flagship
            assert audio.codec_context.name == "aac"
            n_frames = sum(1 for _ in container.decode(video=0))
        assert n_frames == clip["n_frames"]
        rate, wav = wavfile.read(io.BytesIO(members["wav"]))
        assert rate == 16000 and wav.dtype == np.int16 and wav.ndim == 1
        assert abs(len(wav) / rate - clip["duration"]) < 0.1


def test_json_has_caption_identities_scores_stages_and_lineage(corpus):
    pipeline = corpus["pipeline"]
    names = [stage.name for stage in pipeline.stages]
    index = {row["key"]: row for row in pq.read_table(corpus["output"] / "index/clips.parquet").to_pylist()}
    for key, members in samples(corpus["output"]).items():
        doc = json.loads(members["json"])
        assert {"key", "source", "clip", "caption", "identities", "scores", "stages", "lineage"} <= set(doc)
        assert doc["key"] == key and doc["source"]["id"] == key.split("-")[0]
        source_bytes = open(doc["source"]["path"], "rb").read()
        assert doc["source"]["sha256"] == hashlib.sha256(source_bytes).hexdigest()
        assert doc["source"]["id"] == content_id(doc["source"]["path"], len(source_bytes))
        assert {"duration", "fps", "width", "height", "has_audio"} <= set(doc["source"]["probe"])
        clip = doc["clip"]
        assert {"index", "start", "end", "duration", "fps", "n_frames", "width", "height", "has_audio"} <= set(clip)
        assert clip["index"] == int(key.split("-")[1]) and clip["has_audio"] is True
        assert 0 <= clip["start"] < clip["end"] and clip["duration"] > 0 and clip["n_frames"] > 0
        assert isinstance(doc["caption"], str) and doc["caption"]
        for i, identity in enumerate(doc["identities"]):
            assert {"id", "human_size", "motion_amplitude", "motion_class", "mean_box", "phrase",
                    "speaking_segments"} <= set(identity), sorted(identity)
            assert identity["id"] == i
            assert identity["human_size"] in ("portrait", "chest", "waist", "knees", "full_body", None)
            assert len(identity["mean_box"]) == 4
            assert identity["phrase"] is None or isinstance(identity["phrase"], str)
            segments = identity["speaking_segments"]
            assert isinstance(segments, list)
            for start, end in segments:
                assert 0 <= start < end <= clip["duration"] + 1e-6
            assert segments == sorted(segments)
        # scores: flat scalars named <stage>.<score>, the same names and values as the index columns
        row = index[key]
        assert doc["scores"] and all(name.split(".")[0] in names for name in doc["scores"])
        in_index = {name: row.get(name, "absent from the index") for name in doc["scores"]}
        assert json.dumps(in_index, sort_keys=True) == json.dumps(doc["scores"], sort_keys=True)  # NaN-safe
        # each stage that ran left its metadata (probe and clips have their own places in the json)
        assert set(names) - {"probe", "clips", "audio", "encode", "write"} <= set(doc["stages"]), sorted(doc["stages"])
        assert doc["lineage"] == json.loads(json.dumps(pipeline.lineage()))
        assert doc["lineage"]["pipeline"] == PIPELINE and [s["name"] for s in doc["lineage"]["stages"]] == names


def test_arrays_have_the_promised_shapes_and_dtypes(corpus):
    for key, members in samples(corpus["output"]).items():
        doc = json.loads(members["json"])
        clip, n_id = doc["clip"], len(doc["identities"])
        n_frames = clip["n_frames"]

        masks = npz(members["masks.npz"])
        assert masks["masks"].dtype == np.uint8 and masks["masks"].ndim == 4
        assert masks["masks"].shape[:2] == (n_id, n_frames) and max(masks["masks"].shape[2:]) == 128
        h, w = masks["masks"].shape[2:]
        assert abs(w / h - clip["width"] / clip["height"]) < 0.05  # the clip's aspect ratio
        assert set(np.unique(masks["masks"])) <= {0, 1}
        assert masks["conf"].dtype == np.float16 and masks["conf"].shape == (n_id, n_frames)
        conf = masks["conf"].astype(np.float32)
        assert ((conf >= 0) & (conf <= 1)).all()

        speak = npz(members["speak.npz"])
        assert speak["score"].dtype == np.float16 and speak["score"].shape == (n_id, n_frames)

        pose = npz(members["pose.npz"])
        n_pose = len(pose["frames"])
        assert pose["frames"].dtype == np.int32 and n_pose >= 1
        assert ((pose["frames"] >= 0) & (pose["frames"] < n_frames)).all() and (np.diff(pose["frames"]) >= 0).all()
        assert pose["kpts"].dtype == np.float16 and pose["kpts"].shape == (n_id, n_pose, 17, 3)
        assert pose["boxes"].dtype == np.float32 and pose["boxes"].shape == (n_id, n_pose, 4)
        absent = np.isnan(pose["boxes"][..., 0])
        assert (pose["kpts"][..., 2][absent] == 0).all() and np.isnan(pose["kpts"][..., :2][absent]).all()

        for name in members:
            if name.endswith(".png"):
                image = Image.open(io.BytesIO(members[name]))
                assert image.format == "PNG" and image.mode == "RGB" and min(image.size) >= 1, (name, image.mode)


def test_identity_count_agrees_across_members(corpus):
    for key, members in samples(corpus["output"]).items():
        doc = json.loads(members["json"])
        n_id = len(doc["identities"])
        counts = {"masks.npz": len(npz(members["masks.npz"])["masks"]),
                  "speak.npz": len(npz(members["speak.npz"])["score"]),
                  "pose.npz": len(npz(members["pose.npz"])["kpts"]),
                  "people.n_people": doc["scores"]["people.n_people"],
                  "masks.n_identities": doc["scores"]["masks.n_identities"],
                  "identities.n_identities": doc["scores"]["identities.n_identities"],
                  "references.n_references": doc["scores"]["references.n_references"]}
        assert counts == dict.fromkeys(counts, n_id), (key, n_id, counts)
        assert 1 <= n_id <= 3  # people: min_people 1, max_people 3 (the flagship's defaults)


def test_local_and_ray_corpora_agree(local_corpus, ray_corpus):
    # shard boundaries may differ between executors: compare sample by sample
    local, distributed = member_hashes(local_corpus["output"]), member_hashes(ray_corpus["output"])
    assert local and set(local) == set(distributed)
    differing = {key: sorted(name for name in set(local[key]) | set(distributed[key])
                             if local[key].get(name) != distributed[key].get(name))
                 for key in local}
    assert not any(differing.values()), differing
    assert _index_rows(local_corpus) == _index_rows(ray_corpus)


def _index_rows(corpus) -> dict[str, str]:
    """key -> the clip's index row as JSON text (NaN compares equal as text): what became of it and its
    scores, without what names the run (run id, shard and commit names)."""
    rows = pq.read_table(corpus["output"] / "index/clips.parquet").to_pylist()
    kept = {"key", "source_id", "clip_index", "start", "end", "duration", "status", "reject_stage", "reject_reason",
            "reject_detail"}
    return {row["key"]: json.dumps({k: v for k, v in row.items() if k in kept or "." in k}, sort_keys=True)
            for row in rows}
