"""A corpus of broken and awkward files: each bad one rejected with its reason, the good ones
written, and the run exits 0."""
from __future__ import annotations

import subprocess

import pyarrow.parquet as pq
import pytest

from corpus_reading import sample_jsons
from curation.cli import main

FFMPEG = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]


def _video(path, seconds=6, audio=True, faststart=False, frames=None):
    command = FFMPEG + ["-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=25:duration={seconds}"]
    if audio:
        command += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac"]
    if frames:
        command += ["-frames:v", str(frames)]
    command += ["-c:v", "libx264", "-pix_fmt", "yuv420p"] + (["-movflags", "+faststart"] if faststart else [])
    subprocess.run(command + [str(path)], check=True)


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad-inputs")
    _video(folder / "good with spaces é 日本語.mp4")
    _video(folder / "no_audio.mp4", audio=False)
    _video(folder / "one_frame.mp4", audio=False, frames=1)
    _video(folder / "whole.mp4", seconds=8)
    data = (folder / "whole.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov at the end: cut off
    (folder / "whole.mp4").unlink()
    _video(folder / "whole_faststart.mp4", seconds=8, faststart=True)
    data = (folder / "whole_faststart.mp4").read_bytes()
    (folder / "truncated_faststart.mp4").write_bytes(data[: len(data) // 2])  # opens, half decodes
    (folder / "whole_faststart.mp4").unlink()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("this is not a video\n")
    subprocess.run(FFMPEG + ["-f", "lavfi", "-i", "sine=duration=5", "-c:a", "aac",
                             str(folder / "audio_only.mp4")], check=True)
    return folder


def test_bad_inputs_rejected_with_reasons_and_good_ones_written(bad_corpus, tmp_path):
    output = tmp_path / "out"
    assert main(["run", "--pipeline", "ingest", "--input", str(bad_corpus), "--output", str(output),
                 "--no-progress"]) == 0
    sources = {row["path"].split("/")[-1]: row for row in pq.read_table(output / "index/sources.parquet").to_pylist()}
    expected = {
        "truncated.mp4": ("probe", "unreadable"),
        "truncated_faststart.mp4": ("shots", "truncated"),
        "empty.mp4": ("probe", "empty_file"),
        "text.mp4": ("probe", "unreadable"),
        "audio_only.mp4": ("probe", "no_video_stream"),
        "one_frame.mp4": ("probe", "too_short"),
    }
    for name, (stage, reason) in expected.items():
        row = sources[name]
        assert (row["status"], row["reject_stage"], row["reject_reason"]) == ("rejected", stage, reason), row
        assert row["reject_detail"], f"{name}: a reject needs a readable detail"
    for good in ("good with spaces é 日本語.mp4", "no_audio.mp4"):
        assert sources[good]["status"] == "ok" and sources[good]["n_kept"] == 1
    written = {doc["source"]["path"].split("/")[-1]: doc for doc in sample_jsons(output).values()}
    assert set(written) == {"good with spaces é 日本語.mp4", "no_audio.mp4"}
    assert written["good with spaces é 日本語.mp4"]["clip"]["has_audio"] is True
    assert written["no_audio.mp4"]["clip"]["has_audio"] is False


def test_missing_paths_in_a_list_are_reported_not_fatal(bad_corpus, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{bad_corpus / 'no_audio.mp4'}\n{bad_corpus / 'does_not_exist.mp4'}\n")
    assert main(["run", "--input", str(listing), "--output", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "missing 1" in capsys.readouterr().out
