"""The bill (`curation status`): CPU-/GPU-seconds per hour of footage from the run records, and the
projection for a target corpus (docs/cost.md)."""
from __future__ import annotations

import copy
import json
import re

import pytest

from conftest import ADAPTIVE_SHOTS
from curation.cli import main
from curation.cost import corpus_cost, cost_text
from curation.storage import Storage


@pytest.fixture(scope="module")
def ingest_corpus(demo_inputs, tmp_path_factory):
    output = tmp_path_factory.mktemp("cost") / "out"
    assert main(["run", "--pipeline", "ingest", "--input", str(demo_inputs), "--output", str(output),
                 "--no-progress", "--set", ADAPTIVE_SHOTS]) == 0
    return output


def _record(output) -> dict:
    (path,) = (output / "runs").glob("*.json")
    return json.loads(path.read_text())


def _corpus_of(tmp_path, *records) -> Storage:
    runs = tmp_path / "corpus" / "runs"
    runs.mkdir(parents=True)
    for i, record in enumerate(records):
        record = {**record, "run_id": f"run-{i}", "started": f"2026-01-0{i + 1}T00:00:00Z"}
        (runs / f"run-{i}.json").write_text(json.dumps(record))
    return Storage(str(tmp_path / "corpus"))


def test_status_bills_the_measured_cpu_per_footage_hour(ingest_corpus, capsys):
    record = _record(ingest_corpus)
    footage_h = record["throughput"]["source_seconds"] / 3600
    keep = record["throughput"]["kept_clip_seconds"] / record["throughput"]["source_seconds"]
    assert footage_h > 0 and 0 < keep <= 1
    assert set(record["stage_cpu_seconds"]) == {"probe", "shots", "clips", "encode"}
    assert all(record["stage_cpu_seconds"][stage] > 0 for stage in ("probe", "shots", "encode"))  # clips only splits

    assert main(["status", str(ingest_corpus), "--target-hours", "100", "--json"]) == 0
    cost = json.loads(capsys.readouterr().out)["cost"]
    rows = {row["stage"]: row for row in cost["stages"]}
    assert list(rows) == ["probe", "shots", "clips", "encode"]  # pipeline order; write is not timed
    for stage, cpu in record["stage_cpu_seconds"].items():
        assert rows[stage]["cpu_s_per_footage_h"] == pytest.approx(cpu / footage_h)
        assert rows[stage]["wall_s_per_footage_h"] == pytest.approx(record["stage_seconds"][stage] / footage_h)
        assert rows[stage]["gpu_s_per_footage_h"] == 0
        assert rows[stage]["cpu_measured"] == "measured"
    total_cpu_per_h = sum(record["stage_cpu_seconds"].values()) / footage_h
    assert cost["totals"]["cpu_s_per_footage_h"] == pytest.approx(total_cpu_per_h)
    assert cost["keep_ratio"] == pytest.approx(keep)
    projection = cost["projection"]
    assert projection["target_kept_h"] == 100
    assert projection["raw_h"] == pytest.approx(100 / keep)
    assert projection["cpu_h"] == pytest.approx(total_cpu_per_h * (100 / keep) / 3600)
    assert projection["gpu_h"] == 0
    assert cost["notes"] == []

    assert main(["status", str(ingest_corpus), "--target-hours", "100"]) == 0
    text = capsys.readouterr().out
    summary = text.strip().splitlines()[-1]
    assert summary.startswith(f"bill: {total_cpu_per_h:.3g} CPU-s and 0 GPU-s per hour of footage; "
                              f"keep {keep * 100:.0f} %; 100 h kept needs ~")
    assert summary.endswith(", 0 GPU-h")
    assert "clips" in text and "per hour of input footage" in text

    assert main(["status", str(ingest_corpus), "--json"]) == 0  # the default target: 7,200 h kept
    assert json.loads(capsys.readouterr().out)["cost"]["projection"]["raw_h"] == pytest.approx(7200 / keep)


def test_a_stage_with_a_gpu_share_bills_wall_seconds_times_the_share(ingest_corpus, tmp_path):
    real = _record(ingest_corpus)
    synthetic = copy.deepcopy(real)
    synthetic["pipeline"]["stages"].insert(-1, {"name": "syncnet", "version": "1",
                                                "params": {"device": "cuda", "gpus": 0.5, "model_path": None}})
    synthetic["stage_seconds"]["syncnet"] = 12.0
    synthetic["stage_cpu_seconds"]["syncnet"] = 3.0
    synthetic["stage_seconds"]["decode"] = 2.0  # the segment's shared clip decode: not a stage
    synthetic["stage_cpu_seconds"]["decode"] = 1.5
    cost = corpus_cost(_corpus_of(tmp_path, real, synthetic), target_hours=100)

    footage_h = 2 * real["throughput"]["source_seconds"] / 3600
    rows = {row["stage"]: row for row in cost["stages"]}
    assert list(rows) == ["probe", "shots", "clips", "encode", "syncnet", "decode"]
    assert rows["syncnet"]["gpu_s"] == pytest.approx(12.0 * 0.5)
    assert rows["syncnet"]["gpu_s_per_footage_h"] == pytest.approx(12.0 * 0.5 / footage_h)
    assert rows["syncnet"]["declared_gpus"] == [0.5]
    assert rows["syncnet"]["cpu_s_per_footage_h"] == pytest.approx(3.0 / footage_h)
    assert rows["decode"]["in_pipeline"] is False
    assert rows["decode"]["gpu_s"] == 0 and rows["decode"]["cpu_s"] == pytest.approx(1.5)
    for stage in ("probe", "shots", "clips", "encode"):  # two runs: seconds and footage both summed
        assert rows[stage]["cpu_s_per_footage_h"] == pytest.approx(2 * real["stage_cpu_seconds"][stage] / footage_h)
    keep = real["throughput"]["kept_clip_seconds"] / real["throughput"]["source_seconds"]
    assert cost["keep_ratio"] == pytest.approx(keep)
    assert cost["projection"]["gpu_h"] == pytest.approx(6.0 / footage_h * (100 / keep) / 3600)
    text = cost_text(cost)
    assert "0.5 gpu" in text and "not a stage" in text
    shown = re.search(r", ~([\d.,]+) GPU-h$", text.splitlines()[-1])
    assert float(shown[1].replace(",", "")) == pytest.approx(cost["projection"]["gpu_h"], rel=0.005)


def test_an_old_record_without_cpu_seconds_falls_back_to_wall_times_declared_cpus(ingest_corpus, tmp_path):
    old = copy.deepcopy(_record(ingest_corpus))
    del old["stage_cpu_seconds"]
    cost = corpus_cost(_corpus_of(tmp_path, old), target_hours=100)
    footage_h = old["throughput"]["source_seconds"] / 3600
    rows = {row["stage"]: row for row in cost["stages"]}
    declared_cpus = {"probe": 0.5, "shots": 1.0, "clips": 0.25, "encode": 1.0}  # probe reserves half a core
    for stage, wall in old["stage_seconds"].items():
        assert rows[stage]["declared_cpus"] == [declared_cpus[stage]]
        assert rows[stage]["cpu_s_per_footage_h"] == pytest.approx(wall * declared_cpus[stage] / footage_h)
        assert rows[stage]["cpu_measured"] == "estimated"
    assert any("predate CPU measurement" in note for note in cost["notes"])
    text = cost_text(cost)
    assert "CPU estimated" in text and "wall seconds x the stage's declared cpus" in text


def test_no_footage_says_so(ingest_corpus, tmp_path):
    empty = corpus_cost(_corpus_of(tmp_path / "none"), target_hours=7200)
    assert empty["keep_ratio"] is None and empty["projection"]["raw_h"] is None
    assert cost_text(empty) == ("bill: no footage measured yet (no run records): no rate per hour of footage, "
                                "nothing to project")

    nothing_new = copy.deepcopy(_record(ingest_corpus))  # a rerun with nothing new: no work, no footage
    nothing_new.update(stage_seconds={}, stage_cpu_seconds={},
                       throughput={"source_seconds": 0.0, "kept_clip_seconds": 0.0,
                                   "footage_seconds_per_wall_second": 0.0})
    cost = corpus_cost(_corpus_of(tmp_path / "zero", nothing_new), target_hours=7200)
    assert cost["totals"]["cpu_s_per_footage_h"] is None and cost["projection"]["cpu_h"] is None
    assert cost_text(cost).startswith("bill: no footage measured yet (1 run records, footage 0 s)")

    rejected_all = copy.deepcopy(_record(ingest_corpus))  # footage measured, nothing kept
    rejected_all["throughput"]["kept_clip_seconds"] = 0.0
    cost = corpus_cost(_corpus_of(tmp_path / "rejected", rejected_all), target_hours=7200)
    assert cost["keep_ratio"] == 0 and cost["projection"]["raw_h"] is None
    assert cost_text(cost).splitlines()[-1].endswith("keep 0 %; 7,200 h kept: cannot project, nothing kept yet")
