"""The user's commands: run on each input form, status (text and JSON), inspect, report.html."""
from __future__ import annotations

import csv
import json

import cv2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.sources import list_inputs


@pytest.fixture(scope="module")
def demo_corpus(demo_inputs, tmp_path_factory):
    output = tmp_path_factory.mktemp("cli") / "out"
    assert main(["run", "--input", str(demo_inputs), "--output", str(output), "--no-progress",
                 "--set", "write.commit_interval_s=3600"]) == 0
    return output


def test_every_input_form_names_the_same_sources(demo_inputs, tmp_path):
    videos = sorted(str(p) for p in demo_inputs.glob("*.mp4"))
    assert list(list_inputs(demo_inputs)) == videos  # streamed: a manifest of millions is never held whole
    (tmp_path / "list.txt").write_text("# demo videos\n" + "\n".join(videos) + "\n")
    with open(tmp_path / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "note"])
        writer.writeheader()
        writer.writerows({"path": v, "note": "x"} for v in videos)
    pq.write_table(pa.table({"path": videos}), tmp_path / "manifest.parquet")
    for form in ("list.txt", "manifest.csv", "manifest.parquet"):
        assert list(list_inputs(tmp_path / form)) == videos
    pq.write_table(pa.table({"file": videos}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="no 'path' column"):
        list(list_inputs(tmp_path / "bad.parquet"))


def test_status_counts_in_text_and_json(demo_corpus, capsys):
    assert main(["status", str(demo_corpus), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["sources"] == {"total": 3, "ok": 3}
    assert status["clips"] == {"total": 7, "kept": 6, "rejected": 1}
    assert status["clip_rejects"] == {"clips": {"too_short": 1}}
    assert status["shards"] == 1 and status["samples"] == 6
    assert main(["status", str(demo_corpus)]) == 0
    text = capsys.readouterr().out
    assert "clips: 7 (kept 6, rejected 1)" in text and "clip rejected by clips: too_short 1" in text


def test_inspect_prints_metadata_and_writes_a_contact_sheet(demo_corpus, capsys, tmp_path):
    key = pq.read_table(demo_corpus / "index/clips.parquet").filter(
        pa.compute.equal(pa.compute.field("status"), "kept")).column("key")[0].as_py()
    png = tmp_path / "sheet.png"
    assert main(["inspect", str(demo_corpus), key, "--png", str(png)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["json"]["key"] == key and document["members"]["mp4"] > 0
    sheet = cv2.imread(str(png))
    assert sheet.shape == (3 * 240, 4 * 320, 3) and sheet.std() > 10  # 12 real frames, not blank
    assert main(["inspect", str(demo_corpus), "nope-0000"]) == 2


def test_report_has_counts_rejects_durations_and_throughput(demo_corpus):
    page = (demo_corpus / "report.html").read_text()
    for heading in ("Counts", "Reject reasons per stage", "Clip durations (kept)", "Throughput per run"):
        assert f"<h2>{heading}</h2>" in page
    assert page.count("data:image/png;base64,") == 3 and "too_short" in page


def test_stages_lists_parameters_with_descriptions(capsys):
    assert main(["stages"]) == 0
    out = capsys.readouterr().out
    assert "clips (source, v1)" in out and "max_clip_s = 30.0" in out
