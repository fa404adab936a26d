"""A pipeline vs one plain decode vs PySceneDetect's own CLI, on the same footage, in one run.

    .venv/bin/python bench/pipeline_bench.py [--pipeline ingest|human|...] [--input DIR_OR_LIST] [--executor local|ray]

Prints wall seconds for each and the ratios, and each stage's throughput (source frames per second
of that stage's worker time, from the run record). Default input: every video in ../shared/realdata.
"""
from __future__ import annotations

import argparse
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
    parser.add_argument("--pipeline", default="ingest")
    parser.add_argument("--executor", default="local", choices=["local", "ray"])
    args = parser.parse_args()
    videos = list_inputs(args.input)
    scenedetect = shutil.which("scenedetect") or str(Path(sys.executable).parent / "scenedetect")

    decode = sum(timed(["ffmpeg", "-nostdin", "-v", "error", "-i", v, "-f", "null", "-"]) for v in videos)
    with tempfile.TemporaryDirectory() as workdir:
        cli = sum(timed([scenedetect, "-q", "-i", v, "-o", workdir, "detect-adaptive", "list-scenes", "-q"])
                  for v in videos)
        started = time.perf_counter()
        record = run_pipeline(load_pipeline(args.pipeline),
                              RunOptions(args.input, str(Path(workdir) / "out"), args.executor, progress=False))
        ingest = time.perf_counter() - started

    footage = record["throughput"]["source_seconds"]
    frames = sum(_frame_count(v) for v in videos)
    print(f"{len(videos)} videos, {footage:.1f} s of footage ({frames} frames), pipeline {args.pipeline}, "
          f"executor {args.executor}")
    print(f"{'ffmpeg -f null decode':32s} {decode:8.2f} s   {footage / decode:7.1f}x real time")
    print(f"{'PySceneDetect CLI (adaptive)':32s} {cli:8.2f} s   {footage / cli:7.1f}x real time")
    print(f"{args.pipeline + ' pipeline (wall)':32s} {ingest:8.2f} s   {footage / ingest:7.1f}x real time")
    print(f"ratios: pipeline / decode = {ingest / decode:.2f}, pipeline / scenedetect CLI = {ingest / cli:.2f}, "
          f"scenedetect CLI / decode = {cli / decode:.2f}")
    print(f"{'stage':20s} {'worker s':>9s} {'frames/s':>9s} {'x decode':>9s}")
    for stage, seconds in sorted(record["stage_seconds"].items(), key=lambda kv: -kv[1]):
        rate = frames / seconds if seconds else float("inf")
        print(f"{stage:20s} {seconds:9.2f} {rate:9.0f} {seconds / decode:9.2f}")
    print("(x decode: the stage's worker seconds over the plain decode's; the clip stages see only "
          "the clips the earlier stages kept)")


def _frame_count(path: str) -> int:
    import av

    with av.open(path) as container:
        return container.streams.video[0].frames


if __name__ == "__main__":
    main()
