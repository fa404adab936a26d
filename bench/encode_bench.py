"""What each x264 preset and crf of the `encode` stage costs, on the same footage, in one run.

    .venv/bin/python bench/encode_bench.py [--seconds 8] [--presets ultrafast superfast veryfast faster]
                                           [--crfs 18 23]

For the first `--seconds` of every real video: encode time (single-threaded, as the stage runs) as
a multiple of a plain single-threaded decode of the same seconds (D), output size, PSNR against the
source, and whether two encodes give the same bytes (the stage's reproducibility promise).
"""
from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from curation.sources import list_inputs  # noqa: E402

REALDATA = REPO_ROOT.parent / "shared" / "realdata"


def run(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, done.stderr


def encode(video: str, seconds: float, preset: str, crf: int, out: Path) -> float:
    elapsed, _ = run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-threads", "1", "-t", str(seconds), "-i", video,
                      "-map", "0:v:0", "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
                      "-threads", "1", "-flags:v", "+bitexact", "-fflags", "+bitexact", "-map_metadata", "-1", str(out)])
    return elapsed


def psnr(encoded: Path, video: str, seconds: float) -> float:
    _, log = run(["ffmpeg", "-nostdin", "-v", "info", "-threads", "1", "-i", str(encoded), "-t", str(seconds), "-i", video,
                  "-lavfi", "[0:v][1:v]psnr", "-f", "null", "-"])
    return float(re.search(r"average:([\d.]+|inf)", log).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=str(REALDATA))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--presets", nargs="+", default=["ultrafast", "superfast", "veryfast", "faster"])
    parser.add_argument("--crfs", nargs="+", type=int, default=[18, 23])
    args = parser.parse_args()
    videos = list(list_inputs(args.input))
    decode = sum(run(["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-t", str(args.seconds), "-i", v,
                      "-map", "0:v:0", "-f", "null", "-"])[0] for v in videos)
    print(f"{len(videos)} videos, first {args.seconds:g} s each; D (decode) {decode:.2f} s")
    print(f"{'preset':10s} {'crf':>4s} {'encode s':>9s} {'x D':>6s} {'MiB':>7s} {'PSNR dB':>8s} {'same bytes twice':>17s}")
    with tempfile.TemporaryDirectory() as workdir:
        for preset in args.presets:
            for crf in args.crfs:
                seconds, size, quality, same = 0.0, 0, [], True
                for index, video in enumerate(videos):
                    first, second = Path(workdir) / f"{index}a.mp4", Path(workdir) / f"{index}b.mp4"
                    seconds += encode(video, args.seconds, preset, crf, first)
                    encode(video, args.seconds, preset, crf, second)
                    same &= hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
                    size += first.stat().st_size
                    quality.append(psnr(first, video, args.seconds))
                print(f"{preset:10s} {crf:4d} {seconds:9.2f} {seconds / decode:6.2f} {size / 2**20:7.2f} "
                      f"{sum(quality) / len(quality):8.2f} {str(same):>17s}")
    print("(encode s includes its decode; x D is over the plain decode of the same seconds)")


if __name__ == "__main__":
    main()
