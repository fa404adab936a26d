"""Ingest pipeline vs one plain decode vs PySceneDetect's own CLI, on the same footage, in one run.

    .venv/bin/python bench/ingest_bench.py [--input DIR_OR_LIST] [--executor local|ray]

Prints wall seconds for each and the ratios; per-stage worker seconds come from the run record.
Default input: every video in ../shared/realdata.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from curation.pipeline import load_pipeline  # noqa: E402
from curation.run import RunOptions, run_pipeline  # noqa: E402
from curation.sources import list_inputs  # noqa: E402

REALDATA = REPO_ROOT.parent / "shared" / "realdata"


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", default=str(REALDATA))
    parser.add_argument("--executor", default="local", choices=["local", "ray"])
    args = parser.parse_args()
    videos = list_inputs(args.input)
    scenedetect = shutil.which("scenedetect") or str(Path(sys.executable).parent / "scenedetect")

    decode = sum(timed(["ffmpeg", "-nostdin", "-v", "error", "-i", v, "-f", "null", "-"]) for v in videos)
    with tempfile.TemporaryDirectory() as workdir:
        cli = sum(timed([scenedetect, "-q", "-i", v, "-o", workdir, "detect-adaptive", "list-scenes", "-q"])
                  for v in videos)
        started = time.perf_counter()
        record = run_pipeline(load_pipeline("ingest"),
                              RunOptions(args.input, str(Path(workdir) / "out"), args.executor, progress=False))
        ingest = time.perf_counter() - started

    footage = record["throughput"]["source_seconds"]
    print(f"{len(videos)} videos, {footage:.1f} s of footage, executor {args.executor}")
    print(f"{'ffmpeg -f null decode':32s} {decode:8.2f} s   {footage / decode:7.1f}x real time")
    print(f"{'PySceneDetect CLI (adaptive)':32s} {cli:8.2f} s   {footage / cli:7.1f}x real time")
    print(f"{'ingest pipeline (probe..write)':32s} {ingest:8.2f} s   {footage / ingest:7.1f}x real time")
    print(f"ratios: ingest / decode = {ingest / decode:.2f}, ingest / scenedetect CLI = {ingest / cli:.2f}, "
          f"scenedetect CLI / decode = {cli / decode:.2f}")
    print("worker seconds per stage:", json.dumps(record["stage_seconds"]))
    shots = record["stage_seconds"].get("shots", 0.0)
    print(f"shots stage alone / scenedetect CLI = {shots / cli:.2f}")


if __name__ == "__main__":
    main()
