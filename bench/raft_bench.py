"""Throughput of the motion stage's flow backends (DIS, Farneback, RAFT small and large) on the real
footage in ../shared/realdata, side by side with one plain PyAV decode of the same footage.

Each video's first --seconds are stream-copied (no re-encode) into an in-memory mp4, so every pass
reads the same bytes. Per backend: the decode_frames pass serving the stage's FrameSpec and the
stage's own processing, both in source frames per second, and the ratio of the processing rate to
the plain decode rate. RAFT runs on --device with --threads torch threads; without --raft-large /
--raft-small weight files it times randomly initialised models of the same shape (same compute,
meaningless flow).

    .venv/bin/python bench/raft_bench.py [--videos video4.mp4 bedroom.mp4] [--seconds 4] [--device cuda]
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import av
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curation.frames import decode_frames  # noqa: E402
from curation.stage import Item  # noqa: E402
from stages.models.raft import build_raft  # noqa: E402
from stages.motion import Motion, MotionParams  # noqa: E402

REALDATA = REPO.parent / "shared" / "realdata"
VIDEOS = {
    "video3.mp4": REALDATA / "data-juicer" / "tests" / "ops" / "data" / "video3.mp4",
    "video4.mp4": REALDATA / "data-juicer" / "tests" / "ops" / "data" / "video4.mp4",
    "bedroom.mp4": REALDATA / "sam2" / "notebooks" / "videos" / "bedroom.mp4",
}


def first_seconds(path: Path, seconds: float) -> bytes:
    """The video stream's packets up to `seconds` (decode order), remuxed into mp4 bytes."""
    out = io.BytesIO()
    with av.open(str(path)) as src, av.open(out, "w", format="mp4") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        for packet in src.demux(vin):
            if packet.dts is None:
                continue
            if packet.dts * packet.time_base >= seconds:
                break
            packet.stream = vout
            dst.mux(packet)
    return out.getvalue()


def plain_decode(data: bytes) -> tuple[int, float]:
    """(frames, seconds taken) for one threaded PyAV decode of every frame, with no conversion."""
    start = time.perf_counter()
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = sum(1 for _ in container.decode(stream))
    return n, time.perf_counter() - start


def weights_file(given: str | None, variant: str, folder: Path) -> str:
    if given:
        return given
    path = folder / f"raft_{variant}_random.pth"
    torch.save(build_raft(variant).state_dict(), path)
    return str(path)


def make_stages(args: argparse.Namespace, folder: Path) -> dict[str, Motion]:
    raft = {"device": args.device, "num_threads": args.threads}
    return {
        "motion dis": Motion(MotionParams()),
        "motion farneback": Motion(MotionParams(method="farneback")),
        "motion raft small": Motion(MotionParams(method="raft", raft_variant="small", **raft,
                                                 raft_weights=weights_file(args.raft_small, "small", folder))),
        "motion raft large": Motion(MotionParams(method="raft", raft_variant="large", **raft,
                                                 raft_weights=weights_file(args.raft_large, "large", folder))),
    }


def bench_stage(stage: Motion, data: bytes, n_frames: int) -> tuple[float, float, int]:
    """(frames/s of decode_frames for the stage's spec, frames/s of the stage's processing, pairs)."""
    start = time.perf_counter()
    frames = decode_frames(data, stage.frame_specs())
    decoded = time.perf_counter() - start
    item = Item(source_id="bench", source_path="bench", key="bench-0000", clip_index=0, frames=frames)
    start = time.perf_counter()
    stage.process([item])
    processed = time.perf_counter() - start
    return n_frames / decoded, n_frames / processed, len(item.meta["motion"]["pair_flow"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="+", default=list(VIDEOS), choices=list(VIDEOS))
    parser.add_argument("--seconds", type=float, default=4.0, help="length of footage timed per video")
    parser.add_argument("--device", default="cpu", help="torch device for RAFT")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for RAFT")
    parser.add_argument("--raft-small", help="torchvision raft_small .pth (default: random weights)")
    parser.add_argument("--raft-large", help="torchvision raft_large .pth (default: random weights)")
    args = parser.parse_args()
    if not REALDATA.is_dir():
        sys.exit(f"real footage folder {REALDATA} is absent")
    with tempfile.TemporaryDirectory() as tmp:
        stages = make_stages(args, Path(tmp))
        for stage in stages.values():
            stage.setup()
    print(f"RAFT on {args.device}, {args.threads} torch thread(s), weights: "
          f"{'given' if args.raft_small or args.raft_large else 'random (timing only)'}; "
          f"motion defaults: max_side {MotionParams().max_side}, {MotionParams().pairs_per_second} pairs/s")
    print(f"{'video':<13}{'stage':<20}{'spec decode f/s':>16}{'process f/s':>13}{'process/plain decode':>22}")
    for name in args.videos:
        data = first_seconds(VIDEOS[name], args.seconds)
        plain_decode(data)  # warm up the decoder
        n_frames, seconds = plain_decode(data)
        decode_fps = n_frames / seconds
        print(f"{name:<13}{'(plain PyAV decode)':<20}{decode_fps:>16.1f}{'':>13}{'1.00':>22}   "
              f"{n_frames} frames, first {args.seconds:g} s")
        for label, stage in stages.items():
            spec_fps, process_fps, pairs = bench_stage(stage, data, n_frames)
            print(f"{'':<13}{label:<20}{spec_fps:>16.1f}{process_fps:>13.1f}{process_fps / decode_fps:>22.3f}"
                  f"   {pairs} pairs")


if __name__ == "__main__":
    main()
