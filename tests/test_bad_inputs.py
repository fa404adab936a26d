"""A corpus of broken and awkward files: each bad one rejected with its reason, the good ones
written, and the run exits 0."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import ADAPTIVE_SHOTS
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
                 "--no-progress", "--set", ADAPTIVE_SHOTS]) == 0
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
    assert "unusable     1  missing" in capsys.readouterr().out


def test_variable_frame_rate_footage_is_cut_by_timestamps(tmp_path):
    """30 fps for 3 s, then every third frame (10 fps): 140 frames over 7.9 s. Counting frames at the
    stream's average rate would make it 4.67 s and reject it as truncated."""
    folder = tmp_path / "in"
    folder.mkdir()
    subprocess.run(FFMPEG + ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=8", "-f", "lavfi",
                             "-i", "sine=d=8", "-vf", r"select='lt(n\,90)+not(mod(n\,3))'", "-fps_mode", "vfr",
                             "-c:v", "libx264", "-c:a", "aac", "-shortest", str(folder / "vfr.mp4")], check=True)
    (folder / "scrap.mp4").write_bytes((folder / "vfr.mp4").read_bytes()[:100])
    output = tmp_path / "out"
    assert main(["run", "--pipeline", "ingest", "--input", str(folder), "--output", str(output), "--no-progress",
                 "--set", ADAPTIVE_SHOTS]) == 0
    sources = {row["path"].split("/")[-1]: row for row in pq.read_table(output / "index/sources.parquet").to_pylist()}
    assert sources["vfr.mp4"]["status"] == "ok" and sources["vfr.mp4"]["n_kept"] == 1
    assert (sources["scrap.mp4"]["reject_stage"], sources["scrap.mp4"]["reject_reason"]) == ("probe", "unreadable")
    (clip,) = pq.read_table(output / "index/clips.parquet").to_pylist()
    assert clip["start"] == 0.0 and abs(clip["end"] - 7.9) < 0.1  # the whole source, in seconds


def test_inputs_that_are_not_video_files_are_listed_with_a_reason_and_never_block(bad_corpus, tmp_path, capsys):
    """A folder named x.mp4, a FIFO (hashing it would block forever), a broken link and a link loop
    in a folder; a folder and a FIFO named in a list; a single video file as --input."""
    import json
    import os

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.mp4").mkdir()
    os.mkfifo(folder / "fifo.mp4")
    (folder / "broken.mp4").symlink_to(tmp_path / "nothing.mp4")
    (folder / "loop.mp4").symlink_to(folder / "loop.mp4")
    (folder / "good.mp4").write_bytes((bad_corpus / "no_audio.mp4").read_bytes())
    output = tmp_path / "out"
    assert main(["run", "--input", str(folder), "--output", str(output), "--no-progress"]) == 0
    (record_path,) = (output / "runs").glob("*.json")
    record = json.loads(record_path.read_text())
    reasons = {Path(u["path"]).name: u["reason"] for u in record["unusable_inputs"]}
    assert reasons == {"x.mp4": "not_a_regular_file", "fifo.mp4": "not_a_regular_file",
                       "broken.mp4": "broken_link", "loop.mp4": "unreadable"}
    assert record["counts"]["sources"] == {"ok": 1}

    listing = tmp_path / "list.txt"
    listing.write_text(f"{folder / 'x.mp4'}\n{folder / 'fifo.mp4'}\n{bad_corpus / 'no_audio.mp4'}\n")
    assert main(["run", "--input", str(listing), "--output", str(tmp_path / "listed"), "--no-progress"]) == 0
    assert "unusable     2  not_a_regular_file" in capsys.readouterr().out

    single = tmp_path / "single"
    assert main(["run", "--input", str(bad_corpus / "no_audio.mp4"), "--output", str(single), "--no-progress"]) == 0
    assert pq.read_table(single / "index/sources.parquet").column("n_kept").to_pylist() == [1]


def test_hashing_gives_up_on_a_file_that_reads_too_slowly(tmp_path):
    from curation.sources import identify

    slow = tmp_path / "slow.mp4"
    slow.write_bytes(b"\0" * (3 << 20))  # three 1 MiB reads: the deadline is checked after each
    (found,) = identify([str(slow)], hash_timeout_s=0.0)
    assert found.reason == "hash_timeout"


def test_a_full_disk_is_a_clear_message_and_the_same_command_resumes(bad_corpus, tmp_path, monkeypatch, capsys):
    import errno

    from curation.storage import Storage

    write = Storage.write_atomic

    def disk_full(self, rel, data, exclusive=False):
        if rel.startswith("index/commits/"):
            raise OSError(errno.ENOSPC, "No space left on device", rel)
        return write(self, rel, data, exclusive)

    output = tmp_path / "out"
    monkeypatch.setattr(Storage, "write_atomic", disk_full)
    assert main(["run", "--input", str(bad_corpus), "--output", str(output), "--no-progress"]) == 2
    assert "no space left on the device" in capsys.readouterr().err
    monkeypatch.setattr(Storage, "write_atomic", write)  # space freed: the same command resumes
    assert main(["run", "--input", str(bad_corpus), "--output", str(output), "--no-progress"]) == 0
    kept = pq.read_table(output / "index/sources.parquet").column("n_kept").to_pylist()
    assert sum(kept) == 2
