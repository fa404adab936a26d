"""Pipelines against their floor, side by side in one run, on the same footage.

    .venv/bin/python bench/pipeline_bench.py [--pipelines ingest human talking] [--input DIR_OR_LIST]
                                             [--set STAGE.PARAM=VALUE ...] [--executor local|ray]

The floor of any pipeline that writes H.264 clips is one decode of its input and one encode of what
it keeps. Measured first, on every input video:

- D: `ffmpeg -threads 1` decoding the video stream, nothing else;
- DE: the same decode plus x264 at the `encode` stage's own settings (preset, crf, threads), the
  whole input encoded: a pipeline that keeps every frame pays at least this.

Then each pipeline runs (the local executor by default: one process, so wall time is what 1-2
cores cost), and the table prints its wall time and CPU time (the process and its ffmpeg children)
as multiples of D and DE, and every stage's CPU seconds as a multiple of D. Stages whose setup stops
for an unset weight path (talking's syncnet) are left out and listed.
Default input: every video in ../shared/realdata.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from curation.pipeline import Pipeline, load_pipeline  # noqa: E402
from curation.run import RunOptions, run_pipeline  # noqa: E402
from curation.sources import list_inputs  # noqa: E402

REALDATA = REPO_ROOT.parent / "shared" / "realdata"


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def floor_seconds(videos: list[str], encode) -> tuple[float, float]:
    """(D, DE) summed over the videos, single-threaded like one worker's share."""
    decode = ["ffmpeg", "-nostdin", "-v", "error", "-threads", "1"]
    x264 = ["-c:v", "libx264", "-preset", encode.preset, "-crf", str(encode.crf), "-pix_fmt", "yuv420p",
            "-threads", str(encode.encoder_threads)]
    d = sum(timed(decode + ["-i", v, "-map", "0:v:0", "-f", "null", "-"]) for v in videos)
    de = sum(timed(decode + ["-i", v, "-map", "0:v:0", *x264, "-f", "null", "-"]) for v in videos)
    return d, de


def runnable(pipeline: Pipeline) -> tuple[Pipeline, list[str]]:
    """The pipeline without the stages whose setup stops for want of weights (a weight path unset)."""
    def unset(config) -> bool:
        try:
            config.build().setup()
        except ValueError as error:
            return ": not set;" in str(error)
        return False
    dropped = [c.name for c in pipeline.stages if unset(c)]
    return Pipeline(pipeline.name, [c for c in pipeline.stages if c.name not in dropped]), dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=str(REALDATA))
    parser.add_argument("--pipelines", nargs="+", default=["ingest", "human", "talking"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.PARAM=VALUE",
                        help="override applied to every pipeline that has the stage")
    parser.add_argument("--executor", default="local", choices=["local", "ray"])
    args = parser.parse_args()
    videos = list(list_inputs(args.input))
    encode = next(s.params for s in load_pipeline("ingest").stages if hasattr(s.params, "preset"))  # the clip encoder
    d, de = floor_seconds(videos, encode)
    print(f"{len(videos)} videos; floor: D (decode) {d:.2f} s, DE (decode + x264 {encode.preset} crf {encode.crf}) "
          f"{de:.2f} s = {de / d:.2f} D")
    rows = []
    for name in args.pipelines:
        stage_names = {s.name for s in load_pipeline(name).stages}
        overrides = [o for o in args.overrides if o.split(".", 1)[0] in stage_names]
        pipeline, dropped = runnable(load_pipeline(name, overrides=overrides))
        with tempfile.TemporaryDirectory() as workdir:
            started, cpu_started = time.perf_counter(), cpu_seconds()
            record = run_pipeline(pipeline, RunOptions(args.input, str(Path(workdir) / "out"), args.executor,
                                                       progress=False))
            wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
        rows.append((name, wall, cpu, record, dropped, overrides))
    for name, wall, cpu, record, dropped, overrides in rows:
        counts = record["counts"]["clips"]
        print(f"\n{name}{' --set ' + ' '.join(overrides) if overrides else ''}"
              f"{' (without ' + ', '.join(dropped) + ': no weights)' if dropped else ''}: "
              f"clips kept {counts['kept']}, rejected {counts['rejected']}; "
              f"footage {record['throughput']['source_seconds']:.1f} s -> kept {record['throughput']['kept_clip_seconds']:.1f} s")
        print(f"  wall {wall:7.2f} s = {wall / d:5.2f} D = {wall / de:4.2f} DE;  "
              f"CPU {cpu:7.2f} s = {cpu / d:5.2f} D = {cpu / de:4.2f} DE")
        print(f"  {'stage':20s} {'CPU s':>8s} {'x D':>6s}")
        for stage, seconds in sorted(record["stage_cpu_seconds"].items(), key=lambda kv: -kv[1]):
            print(f"  {stage:20s} {seconds:8.2f} {seconds / d:6.2f}")


if __name__ == "__main__":
    main()
