"""A real multi-node Ray cluster (a head and two worker nodes, separate `ray start` processes on
loopback, tests/ray_cluster.py): the `human` pipeline run on it with --ray-address gives the local
executor's corpus, and so it does after SIGKILL of a worker node or of the driver mid-run.

Corpora are compared by what a reader sees (sample keys, member bytes, clip rows), never by shard
file names. Drivers are `python -m curation.cli run ...` subprocesses, so the test can watch the
output folder and kill them."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import ADAPTIVE_SHOTS, REALDATA, REPO_ROOT, require_realdata
from corpus_reading import member_hashes
from curation.cli import main
from ray_cluster import RayCluster, cluster_inputs

pytestmark = pytest.mark.slow

# Every run (the local reference too: the sample json names the pipeline's parameters) uses these.
# One sample a shard, so commits land source by source and a kill falls between commits; one
# `people` actor per worker node, so both nodes hold work (the pool is not part of the lineage).
OVERRIDES = ["encode.preset=ultrafast", "write.max_samples_per_shard=1", "people.pool={min_workers: 2}", ADAPTIVE_SHOTS]
CUTS = [("data-juicer/tests/ops/data/video2.mp4", 0, 5),   # one person: kept
        ("data-juicer/tests/ops/data/video4.mp4", 0, 5),   # two girls: kept
        ("data-juicer/tests/ops/data/video3.mp4", 0, 6)]   # burned-in subtitles, a cut at 4.3 s: rejected
RUN_TIMEOUT_S = 300
AFTER_KILL_TIMEOUT_S = 180  # a run that has not ended by then is killed and run again
RAY_WORK_IDLE = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Three short real clips and a generated two-shot video, as a list file."""
    require_realdata()
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    return cluster_inputs(tmp_path_factory.mktemp("cluster-inputs"), REALDATA, CUTS)


def _run_args(inputs: Path, output: Path, *extra: str) -> list[str]:
    args = ["run", "--pipeline", "human", "--input", str(inputs), "--output", str(output), "--no-progress"]
    for override in OVERRIDES:
        args += ["--set", override]
    return args + list(extra)


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("cluster-local") / "out"
    assert main(_run_args(inputs, output)) == 0
    return output


@pytest.fixture(scope="module")
def cluster():
    nodes = RayCluster(workers=2, cpus_per_worker=1)
    nodes.start()
    root = str(nodes.root)
    try:
        yield nodes
    finally:
        nodes.stop()
        assert nodes.leftovers() == {}, "processes of the cluster outlived stop()"
        ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        assert root not in ps, f"processes still name the cluster's folder:\n{ps}"


def _driver(cluster: RayCluster, inputs: Path, output: Path, log: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "curation.cli", *_run_args(inputs, output, "--executor", "ray",
                                                              "--ray-address", cluster.address, *extra)]
    with open(log, "ab") as handle:  # the driver keeps its own copy of the descriptor
        return cluster.popen(argv, stdout=handle, stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen, log: Path, timeout: float = RUN_TIMEOUT_S) -> None:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"the run did not end in {timeout} s:\n{log.read_text()[-4000:]}") from None
    assert code == 0, f"the run failed ({code}):\n{log.read_text()[-4000:]}"


def _busy_ray_workers(cluster: RayCluster, node: str) -> dict[int, tuple[str, str]]:
    """pid -> (process title, working folder) of the Ray workers on `node` that run a task or an actor."""
    busy = {}
    for pid in cluster.node_pids(node):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            folder = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if title.startswith("ray::") and not title.startswith(RAY_WORK_IDLE):
            busy[pid] = (title, folder)
    return busy


def _written_shards(output: Path) -> list[Path]:
    """Shard files written so far, committed or not (whatever their names; temporaries are hidden)."""
    return list((output / "shards").rglob("*.tar")) if (output / "shards").exists() else []


def _clip_rows(output: Path) -> list[tuple]:
    rows = pq.read_table(output / "index" / "clips.parquet").to_pylist()
    return sorted((r["key"], r["status"], r["reject_stage"], r["reject_reason"]) for r in rows)


def assert_same_corpus(output: Path, reference: Path) -> None:
    """Same samples (each key once across the shards, the same member bytes), same clip rows, same
    sources: nothing lost, nothing duplicated."""
    rows, expected_rows = _clip_rows(output), _clip_rows(reference)
    keys = [row[0] for row in rows]
    assert len(keys) == len(set(keys)), f"duplicated index rows: {sorted(k for k in keys if keys.count(k) > 1)}"
    assert rows == expected_rows
    members, expected = member_hashes(output), member_hashes(reference)  # fails on a key in two shards
    assert expected and sorted(members) == sorted(expected), (
        f"lost {sorted(set(expected) - set(members))}, unexpected {sorted(set(members) - set(expected))}")
    assert members == expected, "member bytes differ"
    assert sorted(members) == sorted(row[0] for row in rows if row[1] == "kept")
    sources = pq.read_table(output / "index" / "sources.parquet").to_pylist()
    expected_sources = pq.read_table(reference / "index" / "sources.parquet").to_pylist()
    ids = [s["source_id"] for s in sources]
    assert len(ids) == len(set(ids))
    assert sorted((s["source_id"], s["status"], s["n_clips"], s["n_kept"]) for s in sources) == \
        sorted((s["source_id"], s["status"], s["n_clips"], s["n_kept"]) for s in expected_sources)
    assert main(["verify", str(output)]) == 0


def _records(output: Path) -> list[dict]:
    return sorted((json.loads(p.read_text()) for p in (output / "runs").glob("*.json")), key=lambda r: r["started"])


def _shipped_repo(cluster: RayCluster, node: str) -> list[Path]:
    """Copies of this repository that the job's runtime_env unpacked on `node`."""
    mine = (REPO_ROOT / "tests" / "ray_cluster.py").read_bytes()
    return [p.parents[1] for p in (cluster.root / node).glob("session_*/runtime_resources/*/*/tests/ray_cluster.py")
            if p.read_bytes() == mine and (p.parents[1] / "curation" / "executors.py").exists()]


def test_cluster_run_gives_the_local_corpus(cluster, inputs, reference, tmp_path):
    cluster.ensure_workers()
    output, log = tmp_path / "out", tmp_path / "driver.log"
    started = time.time()
    _finish(_driver(cluster, inputs, output, log), log)
    print(f"cluster run: {time.time() - started:.1f} s")
    assert_same_corpus(output, reference)
    (record,) = _records(output)
    assert record["executor"] == "ray" and record["counts"]["processed"] == 4
    for node in ("w1", "w2"):  # the driver shipped the repo (runtime_env working_dir) to each worker node
        assert _shipped_repo(cluster, node), f"no copy of the repository on {node}:\n{log.read_text()[-3000:]}"


def test_driver_sigkill_then_rerun_gives_the_same_corpus(cluster, inputs, reference, tmp_path):
    cluster.ensure_workers()
    output, log = tmp_path / "out", tmp_path / "driver.log"
    driver = _driver(cluster, inputs, output, log)
    deadline = time.time() + RUN_TIMEOUT_S
    while not _written_shards(output):  # the first sample is written: the run is under way
        assert driver.poll() is None, f"the run ended before it could be killed:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"no shard after {RUN_TIMEOUT_S} s"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert not _records(output), "the killed run must not have finished"

    _finish(_driver(cluster, inputs, output, log), log)  # the same command again, at once
    assert_same_corpus(output, reference)
    (record,) = _records(output)
    print(f"rerun after the driver's SIGKILL: already done {record['counts']['already_done']}, "
          f"processed {record['counts']['processed']}")
    assert record["counts"]["already_done"] + record["counts"]["processed"] == 4


def test_worker_node_sigkill_loses_and_duplicates_nothing(cluster, inputs, reference, tmp_path):
    cluster.ensure_workers()
    output, log = tmp_path / "out", tmp_path / "driver.log"
    driver = _driver(cluster, inputs, output, log)
    deadline, busy_since = time.time() + RUN_TIMEOUT_S, None
    while True:  # kill w1 once its actor has been processing a source for half a second (a source takes a few)
        assert driver.poll() is None, f"the run ended before w1 could be killed:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"w1 never got work in {RUN_TIMEOUT_S} s"
        busy = {pid: work for pid, work in _busy_ray_workers(cluster, "w1").items() if work[0].endswith(".submit")}
        busy_since = (busy_since or time.time()) if busy else None
        if busy_since and time.time() - busy_since > 0.5:
            break
        time.sleep(0.05)
    # the actor runs in the copy of the repo its node unpacked (runtime_env working_dir), not in REPO_ROOT
    assert all("/runtime_resources/" in folder for _, folder in busy.values()), busy
    killed_at = time.time()
    killed = cluster.kill_worker(1)
    assert set(busy) <= set(killed) and not cluster.node_pids("w1")
    assert driver.poll() is None, "the driver must outlive the worker node"

    try:
        driver.wait(timeout=AFTER_KILL_TIMEOUT_S)
        finished_itself = driver.returncode == 0
    except subprocess.TimeoutExpired:
        driver.kill()
        driver.wait()
        finished_itself = False
    print(f"after w1's SIGKILL ({len(killed)} processes, busy: {sorted(t for t, _ in busy.values())}): the run "
          f"{'finished' if finished_itself else 'did not finish'} {time.time() - killed_at:.1f} s later "
          f"(driver exit {driver.returncode})")
    if not finished_itself:  # a re-run on the node that is left completes the corpus
        _finish(_driver(cluster, inputs, output, log, "--workers", "1"), log)
    assert_same_corpus(output, reference)
    records = _records(output)
    assert records and sum(r["counts"]["processed"] for r in records) >= 4
