"""Nothing lost, ever: one output shared by two runs, recovery that verifies what is committed, and
damage that is quarantined and redone. Each case ends with the corpus digest (keys and member
hashes) of a clean run, no sample lost and none duplicated."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from conftest import ADAPTIVE_SHOTS, REALDATA, REPO_ROOT
from corpus_reading import member_hashes
from curation.cli import main

pytestmark = pytest.mark.slow
ONE_SAMPLE_SHARDS = ["--set", "write.max_samples_per_shard=1", "--set", ADAPTIVE_SHOTS]


def _args(inputs, output, *extra):
    return ["run", "--pipeline", "ingest", "--input", str(inputs), "--output", str(output), "--no-progress",
            *ONE_SAMPLE_SHARDS, *extra]


def _listing(folder, name, videos):
    path = folder / name
    path.write_text("\n".join(map(str, videos)) + "\n")
    return path


@pytest.fixture(scope="module")
def inputs(demo_inputs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("commit-inputs")
    real = [REALDATA / "data-juicer/tests/ops/data" / name for name in ("video1.mp4", "video5.mp4", "video3.mp4")]
    first, second = sorted(demo_inputs.glob("*.mp4")), real
    return {"first": _listing(folder, "first.txt", first), "second": _listing(folder, "second.txt", second),
            "all": _listing(folder, "all.txt", first + second)}


@pytest.fixture(scope="module")
def clean(inputs, tmp_path_factory):
    output = tmp_path_factory.mktemp("clean") / "out"
    assert main(_args(inputs["all"], output)) == 0
    return output


def _index_keys(output):
    keys = pq.read_table(output / "index" / "clips.parquet").column("key").to_pylist()
    assert len(keys) == len(set(keys)), "a key is in the index twice"
    return sorted(keys)


def _same_as_clean(output, clean):
    assert member_hashes(output) == member_hashes(clean)  # same keys, same bytes, none duplicated
    assert _index_keys(output) == _index_keys(clean)


def _quarantined(output):
    return sorted(p.relative_to(output).as_posix() for p in (output / "quarantine").rglob("*") if p.is_file())


def test_a_second_run_on_a_held_output_is_refused_naming_the_holder(inputs, clean, tmp_path, capsys):
    output = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "curation.cli", *_args(inputs["first"], output)],
                             cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (output / "lease.json").exists():
        assert first.poll() is None and time.time() < deadline, first.stderr.read()
        time.sleep(0.02)
    holder = json.loads((output / "lease.json").read_text())
    assert main(_args(inputs["second"], output)) == 2
    message = capsys.readouterr().err
    assert f"is being written by run {holder['run_id']}" in message and f"pid {first.pid}" in message
    assert first.wait(timeout=300) == 0
    assert not (output / "lease.json").exists()  # released at the end
    assert main(_args(inputs["second"], output)) == 0
    _same_as_clean(output, clean)


def test_a_killed_run_does_not_lock_its_output(inputs, clean, tmp_path):
    output = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "curation.cli", *_args(inputs["all"], output)],
                           cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    commits, deadline = output / "index" / "commits", time.time() + 120
    while not (commits.exists() and any(commits.glob("*.json"))):
        assert run.poll() is None and time.time() < deadline
        time.sleep(0.02)
    run.kill()
    run.wait()
    assert (output / "lease.json").exists()  # left behind by the kill: its process is gone, so it is taken over
    assert main(_args(inputs["all"], output)) == 0
    _same_as_clean(output, clean)


def test_a_lost_index_part_is_quarantined_with_its_shard_and_its_source_redone(inputs, clean, tmp_path, capsys):
    output = tmp_path / "out"
    shutil.copytree(clean, output)
    part = sorted((output / "index" / "parts").glob("*.clips.parquet"))[2]
    part.unlink()
    capsys.readouterr()
    assert main(["verify", str(output)]) == 1
    assert "damaged_file" in capsys.readouterr().out
    assert main(_args(inputs["all"], output)) == 0
    _same_as_clean(output, clean)
    commit = part.name.rsplit("-", 1)[0]
    moved = _quarantined(output)
    assert any(path.endswith(f"index/commits/{commit}.json") for path in moved)
    assert any(path.startswith("quarantine/") and "/shards/" in path for path in moved)  # kept, never deleted
    assert main(["verify", str(output)]) == 0


def test_a_truncated_shard_is_not_counted_and_its_sample_is_written_again(inputs, clean, tmp_path, capsys):
    output = tmp_path / "out"
    shutil.copytree(clean, output)
    shard = sorted((output / "shards").glob("*.tar"))[-1]
    shard.write_bytes(shard.read_bytes()[:4096])
    capsys.readouterr()
    assert main(["status", str(output), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["samples"] == len(member_hashes(clean)) - 1
    assert status["needs_recovery"]["damaged_commits"]
    assert main(_args(inputs["all"], output)) == 0
    _same_as_clean(output, clean)
    assert any(path.endswith(shard.name) for path in _quarantined(output))


def test_a_commit_of_an_already_committed_key_loses(inputs, clean, tmp_path):
    """What a retried write task that raced its first attempt would leave: a second marker for the
    same samples. The first commit stands; the later marker is quarantined; nothing is counted twice."""
    output = tmp_path / "out"
    shutil.copytree(clean, output)
    first = sorted((output / "index" / "commits").glob("*.json"))[0]
    (output / "index" / "commits" / "99999999T999999-ffffff-00000-000.json").write_bytes(first.read_bytes())
    assert main(_args(inputs["all"], output)) == 0
    _same_as_clean(output, clean)
    moved = _quarantined(output)
    assert len(moved) == 1 and moved[0].endswith("index/commits/99999999T999999-ffffff-00000-000.json")


def test_ray_writes_in_the_workers_in_chunks_and_equals_the_local_corpus(inputs, clean, tmp_path):
    """Six sources in chunks of two: three streaming executions, each with its own write tasks and
    commit names; the driver never holds more than a chunk of the manifest."""
    import ray

    output = tmp_path / "out"
    try:
        assert main(_args(inputs["all"], output, "--executor", "ray", "--workers", "2", "--chunk-sources", "2")) == 0
    finally:
        ray.shutdown()
    _same_as_clean(output, clean)
    chunks = {marker.name.split("-")[2][:5] for marker in (output / "index" / "commits").glob("*.json")}
    assert chunks == {"c0000", "c0001", "c0002"}


def test_a_killed_driver_leaves_no_ray_process_behind(inputs, tmp_path):
    """Ray's agents used to outlive a kill -9 of the driver by a minute (curation/reaper.py)."""
    from curation.reaper import _descendants, _start_time

    driver = subprocess.Popen([sys.executable, "-m", "curation.cli", *_args(inputs["all"], tmp_path / "out"),
                               "--executor", "ray"], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not any("ray::" in _command(pid) for pid in _descendants(driver.pid)):
        assert driver.poll() is None and time.time() < deadline, "Ray never started"
        time.sleep(0.2)
    ray_processes = {pid: _start_time(pid) for pid in _descendants(driver.pid)}
    driver.kill()
    driver.wait()
    deadline = time.time() + 15
    while any(_start_time(pid) == started for pid, started in ray_processes.items()) and time.time() < deadline:
        time.sleep(0.2)
    alive = [_command(pid) for pid, started in ray_processes.items() if _start_time(pid) == started]
    assert not alive, f"still running 15 s after the driver was killed: {alive}"


def _command(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
