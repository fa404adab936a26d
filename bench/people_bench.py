"""Throughput of the people stage on the real footage, next to one PyAV decode of the same video.

For each video: a plain PyAV decode of every frame (the floor any clip stage pays once), the
executor's decode of the stage's frames (decode_frames with the stage's FrameSpec), and the stage
itself on those frames, with YOLOX and the pose model each timed alone on the same frames (pose on
the boxes the stage would give it). Rates are in source frames per second (frames of the video handled per second of work);
ratios are stage time over the plain decode time. Each phase runs `--repeats` times and the fastest
counts; `--clock cpu` times this process's CPU seconds instead of wall seconds, which a machine
shared with other jobs disturbs less.

    .venv/bin/python bench/people_bench.py [--threads N] [--sample-fps F] [--repeats R] [--clock wall|cpu]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.frames import decode_frames  # noqa: E402
from curation.stage import Item  # noqa: E402
from stages.people import People, PeopleParams  # noqa: E402
from common import fastest, plain_decode, REALDATA, VIDEOS  # noqa: E402


def bench_video(stage: People, path: Path, repeats: int, clock) -> dict:
    decode_s, (n_frames, clip) = fastest(lambda: plain_decode(path), repeats, clock)
    sampled_decode_s, frames = fastest(lambda: decode_frames(str(path), stage.frame_specs()), repeats, clock)

    def run_stage() -> Item:
        item = Item(source_id="bench", source_path=str(path), key="bench-0000", clip_index=0, start=0.0,
                    end=clip["duration"], meta={"clips": clip}, frames=frames)
        stage.process([item])
        return item

    stage_s, item = fastest(run_stage, repeats, clock)
    images = frames[stage.frame_specs()[0]].images
    detect_s, detections = fastest(lambda: [stage.detector.detect(image).boxes for image in images], repeats, clock)
    posed = [(image, large_boxes(stage, image, boxes)) for image, boxes in zip(images, detections)]
    pose_s, _ = fastest(lambda: [stage.pose.estimate(image, boxes) for image, boxes in posed], repeats, clock)
    verdict = item.reject.reason if item.reject else f"kept, {item.scores['people.n_people']} people"
    return {"name": path.name, "frames": n_frames, "samples": len(images), "decode_s": decode_s,
            "sampled_decode_s": sampled_decode_s, "stage_s": stage_s, "detect_s": detect_s, "pose_s": pose_s,
            "verdict": verdict}


def large_boxes(stage: People, image, boxes):
    """The boxes the stage estimates poses for (at least min_box_area_fraction of the frame)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[area >= stage.params.min_box_area_fraction * image.shape[0] * image.shape[1]]


def print_row(row: dict) -> None:
    rate = lambda seconds: row["frames"] / seconds  # noqa: E731
    print(f"{row['name']:34s} {row['frames']:6d} {row['samples']:5d} "
          f"{rate(row['decode_s']):9.0f} {rate(row['sampled_decode_s']):9.0f} {rate(row['stage_s']):9.0f} "
          f"{row['stage_s'] / row['decode_s']:7.2f} "
          + " ".join(f"{1000 * row[key] / row['samples']:7.1f}" for key in ("stage_s", "detect_s", "pose_s"))
          + f"  {row['verdict']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per model")
    parser.add_argument("--sample-fps", type=float, default=2.0, help="the stage's sample_fps")
    parser.add_argument("--repeats", type=int, default=2, help="runs per phase; the fastest counts")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall seconds or process CPU seconds")
    args = parser.parse_args()
    if not REALDATA.is_dir():
        sys.exit(f"real footage not found at {REALDATA}")
    stage = People(PeopleParams(
        detector_path=str(REALDATA / "YOLOX-ONNX-TFLite-Sample/model/yolox_nano.onnx"),
        pose_model_path=str(REALDATA / "MoveNet-Python-Example/tflite/"
                            "lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite"),
        num_threads=args.threads, sample_fps=args.sample_fps))
    stage.setup()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"people stage: sample_fps={args.sample_fps}, max_side={stage.params.max_side}, threads={args.threads}, "
          f"{args.clock} clock, fastest of {args.repeats}")
    print(f"{'video':34s} {'frames':>6s} {'samp':>5s} {'decode/s':>9s} {'dec+spec':>9s} {'people/s':>9s} "
          f"{'ratio':>7s} {'ms/samp':>7s} {'det ms':>7s} {'pose ms':>7s}  verdict")
    rows = [bench_video(stage, REALDATA / video, args.repeats, clock) for video in VIDEOS]
    for row in rows:
        print_row(row)
    total = {key: sum(row[key] for row in rows) for key in ("frames", "samples", "decode_s", "sampled_decode_s",
                                                            "stage_s", "detect_s", "pose_s")}
    print_row(total | {"name": "all", "verdict": ""})
    print("decode/s: source frames/s of one plain PyAV decode; dec+spec: of decode_frames with the stage's "
          "FrameSpec; people/s: of the stage on decoded frames; ratio: stage time / plain decode time; "
          "ms/samp, det ms, pose ms: per sampled frame, the whole stage / YOLOX alone / the pose model alone")


if __name__ == "__main__":
    main()
