"""A corpus on an object store (a real S3 server on loopback, tests/s3_server.py): a run written
there, killed with -9 part way, resumed, then grown by an incremental run, equals the same corpus
written to a local folder; the trainer's reader takes the corpus URL."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import ADAPTIVE_SHOTS, REALDATA, REPO_ROOT
from corpus_reading import member_hashes
from curation.cli import main
from curation.commit import COMMITS
from curation.storage import Storage
from training.data import read_clips

pytestmark = pytest.mark.slow


def _args(inputs, output):
    return ["run", "--pipeline", "ingest", "--input", str(inputs), "--output", str(output), "--no-progress",
            "--set", "write.max_samples_per_shard=1", "--set", ADAPTIVE_SHOTS]


def _store_member_hashes(url: str) -> dict[str, dict[str, str]]:
    """key -> member -> sha256, read from the committed shards on the store; fails on a duplicate key."""
    storage = Storage(url)
    found: dict[str, dict[str, str]] = {}
    for shard in storage.read_bytes("index/shards.txt").decode().split():
        with storage.open_read(shard) as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
            for member in tar:
                key, _, extension = member.name.partition(".")
                found.setdefault(key, {})
                assert extension not in found[key], f"duplicate sample {key}"
                found[key][extension] = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    return found


@pytest.fixture(scope="module")
def inputs(demo_inputs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("store-inputs")
    first = folder / "first.txt"
    first.write_text("\n".join(map(str, sorted(demo_inputs.glob("*.mp4")))) + "\n")
    everything = folder / "all.txt"
    everything.write_text(first.read_text() + f"{REALDATA / 'data-juicer/tests/ops/data/video1.mp4'}\n")
    return {"first": first, "all": everything}


def test_kill_resume_and_incremental_run_on_an_object_store(inputs, s3_server, tmp_path):
    url = s3_server.fresh_url("corpus")
    run = subprocess.Popen([sys.executable, "-m", "curation.cli", *_args(inputs["first"], url)], cwd=REPO_ROOT,
                           env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    storage, deadline = Storage(url), time.time() + 180
    while len(storage.list(COMMITS, ".json")) < 2:
        assert run.poll() is None and time.time() < deadline, f"ended before the kill: {run.stderr.read()}"
        time.sleep(0.05)
    run.kill()
    run.wait()
    assert not storage.list("runs", ".json")  # the killed run never finished

    assert main(_args(inputs["first"], url)) == 0  # resumes where the kill left it
    assert main(_args(inputs["all"], url)) == 0  # incremental: only the new source is processed
    records = sorted((storage.read_bytes(f"runs/{name}") for name in storage.list("runs", ".json")))
    assert any(b'"processed": 1' in record and b'"already_done": 3' in record for record in records)

    local = tmp_path / "local"
    assert main(_args(inputs["all"], local)) == 0
    assert _store_member_hashes(url) == member_hashes(local)
    assert main(["verify", url]) == 0
    clips = list(read_clips(url))  # the trainer's reader, straight from the store
    assert sorted(clip.key for clip in clips) == sorted(member_hashes(local))


# ingest with a frame-reading filter before encode: its frames are decoded from each clip's window
# of the source, through a pre-signed URL when the source is an object
FILTERED = """\
filtered:
  stages:
    - probe
    - shots: {detector: adaptive}
    - clips
    - quality
    - encode
    - write
"""


def test_inputs_read_from_an_object_store_give_the_same_clips(inputs, s3_server, tmp_path):
    """Videos uploaded under a prefix, and a manifest there naming them by relative path: listed
    with fsspec, identified by reading both ends, probed, analysed and cut through pre-signed URLs."""
    prefix = s3_server.fresh_url("raw")
    store = Storage(prefix)
    videos = [Path(line) for line in inputs["first"].read_text().splitlines()]
    for video in videos:
        store.write_atomic(f"videos/{video.name}", video.read_bytes())
    store.write_atomic("manifest.csv", ("path\n" + "".join(f"videos/{v.name}\n" for v in videos)).encode())
    from_prefix, from_manifest, local = tmp_path / "prefix", tmp_path / "manifest", tmp_path / "local"
    pipelines = tmp_path / "filtered.yaml"
    pipelines.write_text(FILTERED)
    filtered = ["--pipeline", "filtered", "--pipelines", str(pipelines)]
    assert main(_args(f"{prefix}/videos", from_prefix) + filtered) == 0
    assert main(_args(f"{prefix}/manifest.csv", from_manifest) + filtered) == 0
    assert main(_args(inputs["first"], local) + filtered) == 0
    media = lambda output: {key: {m: h for m, h in members.items() if m != "json"}  # json names the path
                            for key, members in member_hashes(output).items()}
    assert media(from_prefix) == media(from_manifest) == media(local) and media(local)
    sharpness = lambda output: sorted(zip(*pq.read_table(output / "index" / "clips.parquet",  # noqa: E731
                                                         columns=["key", "status", "quality.sharpness"]).to_pydict().values()))
    assert sharpness(from_prefix) == sharpness(local)
    assert all(value is not None for _, status, value in sharpness(local) if status == "kept")  # measured on every kept clip
