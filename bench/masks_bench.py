"""Throughput of the masks stage (Grounding-DINO + SAM2.1 video) and the references stage on a 720p
clip, next to one PyAV decode of the same clip.

No Grounding-DINO or SAM2 weights can be fetched here, so the models are the real architectures with
random weights (stages/models/checkpoint_configs.py): Grounding-DINO with a Swin-B backbone
(grounding-dino-base; `--grounding tiny` for Swin-T) and SAM2.1 hiera-large, written to a temporary
folder and loaded by the stage like downloaded checkpoints. Random weights decide nothing about the
cost: the detector keeps its `--objects` best boxes, and SAM2's object-score head is biased to see
every object, so that every object is tracked on every frame and the references stage has work.

The clip is bedroom.mp4 (two children, 6.7 s, 960x540, 30 fps) scaled to 1280x720 and re-encoded.
Rates are clip frames per second of work; ratios are a phase's time over the plain decode's. Each
phase runs `--repeats` times after one warm-up and the fastest counts. On a GPU:

    .venv/bin/python bench/masks_bench.py [--detector-batch-size 8] [--tracker-batch-size 16] [--objects 2]
    .venv/bin/python bench/masks_bench.py --workers 1 2 3    # stage workers sharing one GPU
    .venv/bin/python bench/masks_bench.py --workers 1 --clips-per-batch 2    # two clips per call

`--workers` runs the masks stage in that many processes on one GPU at once, as Ray runs a pool of
masks actors with `gpus: 1/N` each: each worker is a SegmentRunner, which decodes the clips it is
handed (`clips_per_batch` at a time) with the CPUs the stage reserves and then runs the stage on them.
It reports the frames/s of all workers together. The decode keeps the GPU idle, and so does the
Python between SAM2's steps (all objects of all the worker's clips in one batch, replayed from CUDA
graphs; `--no-cuda-graphs` launches their kernels from Python), so a second process fills gaps that
one leaves. `--no-detector-tf32 --no-cuda-graphs` is the stage before both (Grounding-DINO's float32
matmuls in TF32, the tracking step in CUDA graphs).

`--tiny` runs a CPU smoke test instead: miniature models, float32, the first second of the clip.
"""
from __future__ import annotations

import argparse
import io
from concurrent.futures import ThreadPoolExecutor
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.frames import decode_frames  # noqa: E402
from curation.pipeline import StageConfig  # noqa: E402
from curation.runner import Segment, SegmentRunner  # noqa: E402
from curation.stage import Item, on_cuda  # noqa: E402
from stages.masks import Masks, MasksParams, mask_size  # noqa: E402
from stages.models.checkpoint_configs import save_random_grounding_dino, save_random_sam2_video  # noqa: E402
from stages.models.image_preprocessing import sam2_pixels  # noqa: E402
from stages.references import References, ReferencesParams  # noqa: E402

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
BEDROOM = REALDATA / "sam2/notebooks/videos/bedroom.mp4"


def scaled_clip(path: Path, height: int, seconds: float) -> tuple[bytes, dict]:
    """The first `seconds` of a video scaled to `height` (even width, aspect kept), as H.264 mp4 bytes."""
    out = io.BytesIO()
    with av.open(str(path)) as source, av.open(out, "w", format="mp4") as target:
        video = source.streams.video[0]
        rate = Fraction(video.average_rate)
        width = round(video.codec_context.width * height / video.codec_context.height / 2) * 2
        encoder = target.add_stream("libx264", rate=rate, options={"preset": "veryfast", "crf": "18"})
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
        n_frames = 0
        for frame in source.decode(video):
            if frame.time >= seconds:
                break
            scaled = frame.reformat(width=width, height=height, format="yuv420p")
            scaled.pts, scaled.time_base = n_frames, 1 / rate
            target.mux(encoder.encode(scaled))
            n_frames += 1
        target.mux(encoder.encode())
    clip = {"fps": float(rate), "n_frames": n_frames, "width": width, "height": height, "has_audio": False,
            "duration": n_frames / float(rate)}
    return out.getvalue(), clip


def plain_decode(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def fastest(run, repeats: int, synchronize) -> tuple[float, object]:
    """Seconds of the fastest of `repeats` calls of run() after one warm-up call, and its result."""
    result = run()
    best = float("inf")
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        result = run()
        synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def save_checkpoints(args, folder: Path) -> tuple[Path, Path]:
    size = "test" if args.tiny else args.grounding
    grounding = save_random_grounding_dino(folder / "grounding", size, **({"shortest_edge": 200, "longest_edge": 320}
                                                                          if args.tiny else {}))
    return grounding, save_random_sam2_video(folder / "sam2", "test" if args.tiny else "large", object_score_bias=4.0)


def masks_params(args, grounding: Path, sam2: Path) -> MasksParams:
    batching = {"clips_per_batch": args.clips_per_batch} if args.clips_per_batch else {}
    return MasksParams(
        grounding_model_path=str(grounding), sam2_model_path=str(sam2), device=args.device,
        tracker_dtype=args.dtype, detector_dtype=args.detector_dtype, detector_tf32=args.detector_tf32,
        tracker_cuda_graphs=args.cuda_graphs,
        box_threshold=0.0, max_detections=args.objects, max_objects=args.objects, track_fps=args.track_fps,
        key_frame_interval_s=args.key_frame_interval_s, detector_batch_size=args.detector_batch_size,
        tracker_batch_size=args.tracker_batch_size, max_side=args.max_side, min_match_iou=0.0, **batching)


def build_stages(args, grounding: Path, sam2: Path) -> tuple[Masks, References]:
    masks = Masks(masks_params(args, grounding, sam2))
    masks.setup()
    return masks, References(ReferencesParams())


def new_item(clip: dict, frames=None, **fields) -> Item:
    return Item(source_id="bench", source_path=str(BEDROOM), key="bench-0000", clip_index=0, start=0.0,
                end=clip["duration"], meta={"clips": dict(clip)}, frames=frames, **fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: miniature models, float32, 1 s of video")
    parser.add_argument("--device", default="cuda", help="torch device (--tiny: cpu)")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"), help="SAM2's dtype")
    parser.add_argument("--detector-dtype", default="float32", choices=("bfloat16", "float16", "float32"),
                        help="Grounding-DINO's dtype")
    parser.add_argument("--no-detector-tf32", dest="detector_tf32", action="store_false",
                        help="Grounding-DINO's float32 matmuls in full float32 (the stage's detector_tf32: false)")
    parser.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                        help="SAM2's tracking step launched from Python (the stage's tracker_cuda_graphs: false)")
    parser.add_argument("--grounding", default="base", choices=("tiny", "base"),
                        help="Grounding-DINO backbone: Swin-T or Swin-B")
    parser.add_argument("--detector-batch-size", type=int, default=8, help="key frames per Grounding-DINO call")
    parser.add_argument("--tracker-batch-size", type=int, default=16, help="frames per SAM2 image-encoder call")
    parser.add_argument("--objects", type=int, default=2, help="objects tracked (the detector's best boxes)")
    parser.add_argument("--clips-per-batch", type=int, help="--workers: clips per call of a worker (default: the "
                                                            "stage's clips_per_batch)")
    defaults = MasksParams.model_fields
    parser.add_argument("--track-fps", type=float, default=defaults["track_fps"].default, help="the stage's track_fps")
    parser.add_argument("--key-frame-interval-s", type=float, default=defaults["key_frame_interval_s"].default,
                        help="the stage's key_frame_interval_s")
    parser.add_argument("--max-side", type=int, default=1024, help="longer side of the frames the stage decodes")
    parser.add_argument("--height", type=int, default=720, help="height the clip is scaled to")
    parser.add_argument("--seconds", type=float, default=10.0, help="at most this much of bedroom.mp4 (6.7 s)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed runs per phase after a warm-up; the fastest counts")
    parser.add_argument("--workers", type=int, nargs="+",
                        help="instead of the phases: the stage in this many processes sharing the GPU (several counts "
                             "compare them side by side)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="--workers: batches of clips each worker processes after a warm-up")
    parser.add_argument("--one-call-at-a-time", action="store_true",
                        help="--workers: each worker takes one batch at a time (no decode beside the stage), as before "
                             "GPU segments took two")
    args = parser.parse_args()
    if args.tiny:
        args.device, args.dtype, args.detector_dtype = "cpu", "float32", "float32"
        args.height, args.seconds, args.repeats = 360, 1.0, 1
    if not BEDROOM.is_file():
        sys.exit(f"real footage not found at {REALDATA}")
    on_gpu = on_cuda(args.device)
    synchronize = torch.cuda.synchronize if on_gpu else (lambda: None)

    data, clip = scaled_clip(BEDROOM, args.height, args.seconds)
    if args.workers:
        with tempfile.TemporaryDirectory() as folder:
            compare_worker_counts(args, save_checkpoints(args, Path(folder)), data, clip)
        return
    with tempfile.TemporaryDirectory() as folder:
        masks, references = build_stages(args, *save_checkpoints(args, Path(folder)))
    n = clip["n_frames"]
    models = "test sizes" if args.tiny else f"Grounding-DINO {args.grounding}, SAM2.1 hiera-large"
    print(f"clip: {clip['width']}x{clip['height']}, {n} frames at {clip['fps']:.0f} fps; {models} on {args.device} "
          f"(Grounding-DINO {args.detector_dtype}, SAM2 {args.dtype}); {args.objects} objects, track_fps "
          f"{args.track_fps}, key frames every {args.key_frame_interval_s} s, batches {args.detector_batch_size}/"
          f"{args.tracker_batch_size}; fastest of {args.repeats}")

    rows = [("PyAV decode, every frame", fastest(lambda: plain_decode(data), args.repeats, synchronize)[0])]
    decode_s, frames = fastest(lambda: decode_frames(data, masks.frame_specs()), args.repeats, synchronize)
    rows.append(("decode_frames, masks spec", decode_s))
    rows.append(("masks stage", fastest(lambda: masks.process([new_item(clip, frames)]), args.repeats, synchronize)[0]))
    item = new_item(clip, frames)
    masks.process([item])
    parts, counts = part_timings(masks, frames[masks.frame_specs()[0]].images, clip, args, synchronize)
    rows.extend(parts)
    decode_s, ref_frames = fastest(lambda: decode_frames(data, references.frame_specs()), args.repeats, synchronize)
    rows.append(("decode_frames, references spec", decode_s))

    def run_references() -> Item:
        referenced = new_item(clip, ref_frames)
        referenced.members["masks.npz"] = item.members["masks.npz"]
        references.process([referenced])
        return referenced

    references_s, referenced = fastest(run_references, args.repeats, synchronize)
    rows.append(("references stage", references_s))
    print_rows(rows, n)
    step_s = (parts[2][1] - parts[1][1]) / counts["tracked"]
    print(f"{counts['tracked']} tracked frames, {counts['keys']} key frames; SAM2 steps {1000 * step_s:.1f} ms per "
          f"tracked frame ({args.objects} objects); masks: {item.reject.reason if item.reject else 'kept'}, "
          f"{item.scores.get('masks.n_identities')} identities; references: "
          f"{referenced.scores.get('references.n_references')} full-body, "
          f"{referenced.scores.get('references.n_face_references')} face (no pose or faces stage here)")
    if on_gpu:
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def part_timings(masks: Masks, images: np.ndarray, clip: dict, args, synchronize) -> tuple[list, dict]:
    """The masks stage's parts alone on the same frames: the detector on the key frames, SAM2's image
    encoder on the tracked frames, and the whole tracker (encoder and per-frame steps)."""
    tracked = images
    keys = np.arange(0, len(tracked), max(1, round(args.key_frame_interval_s * min(args.track_fps, clip["fps"]))))
    prompt = masks.detector.prompt(["person"])
    detector_s, detections = fastest(lambda: masks.detector.detect(tracked[keys], prompt), args.repeats, synchronize)
    tracker = masks.tracker

    @torch.inference_mode()
    def encode() -> None:
        for start in range(0, len(tracked), tracker.batch_size):
            pixels = sam2_pixels(tracked[start:start + tracker.batch_size], tracker.image_size, tracker.norm,
                                 tracker.device, tracker.dtype)
            tracker.model.get_image_features(pixels)

    encoder_s, _ = fastest(encode, args.repeats, synchronize)
    boxes_at = {int(j): found.boxes for j, found in zip(keys, detections) if len(found.boxes)}
    size = mask_size(clip["width"], clip["height"], masks.params.mask_side)
    tracker_s, _ = fastest(lambda: tracker.track(tracked, boxes_at, size), args.repeats, synchronize)
    parts = [("  Grounding-DINO on the key frames", detector_s), ("  SAM2 image encoder, tracked frames", encoder_s),
             ("  SAM2 tracker (encoder and steps)", tracker_s)]
    return parts, {"tracked": len(tracked), "keys": len(keys)}


def compare_worker_counts(args, checkpoints: tuple[Path, Path], data: bytes, clip: dict) -> None:
    """Frames/s of the masks stage in 1..N processes at once on one GPU, each processing `rounds`
    batches of the stage's clips_per_batch clips."""
    context = torch.multiprocessing.get_context("spawn")
    clips_per_batch = Masks(masks_params(args, *checkpoints)).items_per_batch()
    print(f"{clips_per_batch} clip(s) per batch")
    rates = {}
    for workers in args.workers:
        ready, start, done = context.Barrier(workers + 1), context.Event(), context.Queue()
        processes = [context.Process(target=stage_worker, args=(args, checkpoints, data, clip, ready, start, done))
                     for _ in range(workers)]
        for process in processes:
            process.start()
        ready.wait()  # every worker has loaded its models and processed one warm-up clip
        began = time.perf_counter()
        start.set()
        finished = [done.get() for _ in processes]
        seconds = time.perf_counter() - began
        for process in processes:
            process.join()
        frames = workers * args.rounds * clips_per_batch * clip["n_frames"]
        rates[workers] = frames / seconds
        print(f"{workers} worker(s): {frames} frames in {seconds:.2f} s = {rates[workers]:.1f} frames/s "
              f"({rates[workers] / rates[args.workers[0]]:.2f}x {args.workers[0]} worker(s)); peak GPU memory per "
              f"worker {max(memory for memory, _ in finished):.1f} GiB; {finished[0][1]}")


def stage_worker(args, checkpoints, data: bytes, clip: dict, ready, start, done) -> None:
    """A masks actor: decodes each batch of clips and runs the stage on it, as a Ray worker does,
    taking `calls_at_once` batches at a time (one decoding while the other runs the stage) unless
    --one-call-at-a-time."""
    segment = Segment([StageConfig("masks", Masks, masks_params(args, *checkpoints), "bench")], video_member="mp4")
    runner = SegmentRunner(segment)
    at_once = 1 if args.one_call_at_a_time else segment.calls_at_once

    def clips() -> list[Item]:
        return [new_item(clip, members={"mp4": data}) for _ in range(segment.items_per_batch)]

    def batches(count: int) -> Item:
        return [runner(clips())[-1] for _ in range(count)][-1]

    runner(clips())  # warm-up
    ready.wait()
    start.wait()
    shares = [args.rounds // at_once + (k < args.rounds % at_once) for k in range(at_once)]
    with ThreadPoolExecutor(at_once) as pool:
        item = list(pool.map(batches, shares))[-1]
    memory = 0.0
    if on_cuda(args.device):
        torch.cuda.synchronize()
        memory = torch.cuda.max_memory_allocated() / 2**30
    done.put((memory, f"last clip: {item.reject.reason if item.reject else 'kept'}, "
                      f"{item.scores.get('masks.n_identities')} identities"))


def print_rows(rows: list[tuple[str, float]], n_frames: int) -> None:
    decode_s = rows[0][1]
    print(f"{'phase':40s} {'seconds':>8s} {'frames/s':>9s} {'x decode':>9s}")
    for name, seconds in rows:
        print(f"{name:40s} {seconds:8.3f} {n_frames / seconds:9.1f} {seconds / decode_s:9.2f}")


if __name__ == "__main__":
    main()
