"""Crash and resume (SIGKILL part-way), incremental updates, and re-runs that do no work."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from corpus_reading import member_hashes
from conftest import ADAPTIVE_SHOTS, REALDATA, REPO_ROOT
from curation.cli import main

ONE_SAMPLE_SHARDS = ["--set", "write.max_samples_per_shard=1", "--set", ADAPTIVE_SHOTS]


def _run_args(inputs, output, *extra):
    return ["run", "--pipeline", "ingest", "--input", str(inputs), "--output", str(output), "--no-progress",
            *ONE_SAMPLE_SHARDS, *extra]


def _index_keys(output: Path) -> list[str]:
    return sorted(pq.read_table(output / "index" / "clips.parquet").column("key").to_pylist())


@pytest.fixture(scope="module")
def resume_inputs(demo_inputs, tmp_path_factory):
    listing = tmp_path_factory.mktemp("resume") / "inputs.txt"
    extra = [REALDATA / "data-juicer/tests/ops/data/video1.mp4", REALDATA / "data-juicer/tests/ops/data/video5.mp4"]
    videos = sorted(demo_inputs.glob("*.mp4")) + [p for p in extra if p.exists()]
    listing.write_text("\n".join(str(v) for v in videos) + "\n")
    return listing


def test_sigkill_then_resume_equals_a_clean_run(resume_inputs, tmp_path):
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    process = subprocess.Popen([sys.executable, "-m", "curation.cli", *_run_args(resume_inputs, crashed)],
                               cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list((crashed / "index" / "commits").glob("*.json"))) < 2:
        assert process.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not list((crashed / "runs").glob("*.json")), "the killed run must not have finished"

    assert main(_run_args(resume_inputs, crashed)) == 0
    assert main(_run_args(resume_inputs, clean)) == 0
    resumed = json.loads(next((crashed / "runs").glob("*.json")).read_text())
    fresh = json.loads(next((clean / "runs").glob("*.json")).read_text())
    assert len(resumed["shards_written"]) < len(fresh["shards_written"])  # committed work was not redone
    assert member_hashes(crashed) == member_hashes(clean)  # same keys, same member bytes, no duplicates
    keys = _index_keys(crashed)
    assert keys == _index_keys(clean) and len(keys) == len(set(keys))
    sources = pq.read_table(crashed / "index" / "sources.parquet").column("source_id").to_pylist()
    assert len(sources) == len(set(sources)) == len(resume_inputs.read_text().splitlines())
    assert not list((crashed / "shards").glob("*.tmp"))


def test_incremental_run_processes_only_new_sources(demo_inputs, tmp_path):
    videos = sorted(demo_inputs.glob("*.mp4"))
    first, everything = tmp_path / "first.txt", tmp_path / "all.txt"
    first.write_text("\n".join(map(str, videos[:2])))
    everything.write_text("\n".join(map(str, videos)))
    output = tmp_path / "corpus"
    assert main(_run_args(first, output)) == 0
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (output / "shards").glob("*.tar")}

    assert main(_run_args(everything, output)) == 0
    runs = sorted((json.loads(p.read_text()) for p in (output / "runs").glob("*.json")), key=lambda r: r["started"])
    assert runs[-1]["counts"]["processed"] == 1 and runs[-1]["counts"]["already_done"] == 2
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (output / "shards").glob("*.tar")}
    assert {name: after[name] for name in before} == before  # existing shards untouched
    assert len(after) > len(before)
    assert {k.split("-")[0] for k in member_hashes(output)} == {
        r["source_id"] for r in pq.read_table(output / "index/sources.parquet").to_pylist() if r["n_kept"]}

    started = time.time()
    assert main(_run_args(everything, output)) == 0
    again = max((json.loads(p.read_text()) for p in (output / "runs").glob("*.json")), key=lambda r: r["started"])
    assert again["counts"]["processed"] == 0 and again["shards_written"] == [] and again["stage_seconds"] == {}
    assert {p.name for p in (output / "shards").glob("*.tar")} == set(after)
    assert time.time() - started < 30


def test_a_corpus_refuses_a_different_pipeline_configuration(demo_inputs, tmp_path, capsys):
    output = tmp_path / "corpus"
    one = tmp_path / "one.txt"
    one.write_text(str(sorted(demo_inputs.glob("*.mp4"))[0]))
    assert main(_run_args(one, output)) == 0
    assert main(_run_args(one, output, "--set", "clips.max_clip_s=20")) == 2
    assert "was built by pipeline 'ingest'" in capsys.readouterr().err


def test_force_records_every_configuration_that_built_the_corpus(demo_inputs, tmp_path, capsys):
    output = tmp_path / "corpus"
    first, second = (tmp_path / "first.txt"), (tmp_path / "second.txt")
    videos = sorted(demo_inputs.glob("*.mp4"))
    first.write_text(str(videos[0]))
    second.write_text(str(videos[1]))
    assert main(_run_args(first, output)) == 0
    assert main(_run_args(second, output, "--set", "clips.max_clip_s=20", "--force")) == 0
    built = json.loads((output / "corpus.json").read_text())["configurations"]
    assert [c["pipeline"] for c in built] == ["ingest", "ingest"] and built[0]["config_hash"] != built[1]["config_hash"]
    capsys.readouterr()
    assert main(["status", str(output)]) == 0
    assert capsys.readouterr().out.count("pipeline ingest, config") == 2


def test_a_run_that_fails_at_setup_leaves_the_folder_unclaimed(demo_inputs, tmp_path, capsys):
    """talking without SyncNet weights stops at setup; the corrected command then runs on that folder."""
    output = tmp_path / "corpus"
    one = tmp_path / "one.txt"
    one.write_text(str(sorted(demo_inputs.glob("*.mp4"))[0]))
    assert main(["run", "--pipeline", "talking", "--input", str(one), "--output", str(output), "--no-progress"]) != 0
    assert "syncnet.model_path: not set" in capsys.readouterr().err
    assert not (output / "corpus.json").exists()
    assert main(_run_args(one, output)) == 0
    assert json.loads((output / "corpus.json").read_text())["configurations"][0]["pipeline"] == "ingest"


def test_an_empty_run_record_is_reported_not_fatal(demo_inputs, tmp_path, capsys):
    """A 0-byte runs/<id>.json (disk full, or a kill while it was written before records were atomic)."""
    output = tmp_path / "corpus"
    one = tmp_path / "one.txt"
    one.write_text(str(sorted(demo_inputs.glob("*.mp4"))[0]))
    assert main(_run_args(one, output)) == 0
    (output / "runs" / "20990101T000000-dead00.json").write_bytes(b"")
    assert main(_run_args(one, output)) == 0
    capsys.readouterr()
    assert main(["status", str(output)]) == 0
    assert "unreadable run records (left out): " in capsys.readouterr().out
    assert not list((output / "runs").glob(".*.tmp"))  # records are renamed into place


def test_clips_left_half_cut_by_a_killed_worker_are_cleaned_up(demo_inputs, tmp_path):
    import tempfile

    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()  # its pid is now free: the folder is what a worker killed mid-cut leaves
    stale = Path(tempfile.gettempdir()) / f"curation-clips-{dead.pid}"
    (stale / "clip-x").mkdir(parents=True)
    (stale / "clip-x" / "clip.mp4").write_bytes(b"half a clip")
    one = tmp_path / "one.txt"
    one.write_text(str(sorted(demo_inputs.glob("*.mp4"))[0]))
    run = subprocess.run([sys.executable, "-m", "curation.cli", *_run_args(one, tmp_path / "out")], cwd=REPO_ROOT,
                         capture_output=True, text=True)  # a fresh process: it sweeps when it first cuts
    assert run.returncode == 0, run.stderr
    assert not stale.exists()


def test_sources_no_longer_in_the_input_are_reported(demo_inputs, tmp_path, capsys):
    output, everything, fewer = tmp_path / "corpus", tmp_path / "all.txt", tmp_path / "fewer.txt"
    videos = sorted(demo_inputs.glob("*.mp4"))
    everything.write_text("\n".join(map(str, videos)))
    fewer.write_text(str(videos[0]))
    assert main(_run_args(everything, output)) == 0
    capsys.readouterr()
    assert main(_run_args(fewer, output)) == 0
    assert "2 source(s) of the corpus are not in this input" in capsys.readouterr().out
    latest = max((json.loads(p.read_text()) for p in (output / "runs").glob("*.json")), key=lambda r: r["started"])
    assert latest["not_listed_paths"] == [str(v) for v in videos[1:]]


def test_a_copy_of_a_source_is_indexed_as_a_duplicate_once(demo_inputs, tmp_path):
    video = sorted(demo_inputs.glob("*.mp4"))[0]
    copy = tmp_path / "copy of the first.mp4"
    copy.write_bytes(video.read_bytes())
    listing, output = tmp_path / "inputs.txt", tmp_path / "corpus"
    listing.write_text(f"{video}\n{copy}\n")
    for _ in range(2):  # a re-run reports it again but indexes it once
        assert main(_run_args(listing, output)) == 0
    rows = pq.read_table(output / "index" / "sources.parquet").to_pylist()
    by_path = {row["path"]: row for row in rows}
    assert len(rows) == 2 and by_path[str(copy)]["status"] == "duplicate"
    assert by_path[str(copy)]["source_id"] == by_path[str(video)]["source_id"] and by_path[str(video)]["status"] == "ok"
