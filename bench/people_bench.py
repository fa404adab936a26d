"""Cost of the people stage on the real footage, as a multiple of one plain decode of the same video.

For each video: D, a plain single-thread decode of every frame (`ffmpeg -threads 1 -i V -f null -`,
the floor any clip stage pays once); the executor's decode of the stage's frames (decode_frames with
the stage's FrameSpec); and the stage on those frames two ways, side by side in one run: "before"
judges everything (YOLOX on every sample, YuNet on every sample, pose for every large box: the stage
before it learnt to skip) and "after" is the stage as it runs, which stops detecting once no track
can become a salient person and poses (and looks for faces) only where that can change the answer.
Both must give the same answer: scores, reject, identities, arrays and pose.npz are compared.
The stage is configured as the human pipelines configure it (YOLOX-nano, MoveNet Lightning, YuNet
for face evidence; `--no-faces` leaves YuNet out). Each phase runs `--repeats` times and the fastest
counts; `--clock cpu` times CPU seconds (this process's, and ffmpeg's as a child), which a machine
shared with other jobs disturbs less.

    .venv/bin/python bench/people_bench.py [--threads N] [--sample-fps F] [--no-faces] [--repeats R] [--clock wall|cpu]
"""
from __future__ import annotations

import argparse
import io
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.frames import decode_frames  # noqa: E402
from curation.stage import Item  # noqa: E402
from stages.people import People, PeopleParams, SalientPeople, salient_tracks  # noqa: E402
from common import fastest, plain_decode, REALDATA, VIDEOS  # noqa: E402

YOLOX = REALDATA / "YOLOX-ONNX-TFLite-Sample/model/yolox_nano.onnx"
MOVENET = REALDATA / "MoveNet-Python-Example/tflite/lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite"
YUNET = REALDATA / "libfacedetection.train/onnx/yunet_n_dynamic.onnx"


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ffmpeg_decode(path: Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-threads", "1", "-i", str(path), "-f", "null", "-"], check=True)


def judge_everything(stage: People, item: Item) -> None:
    """The stage as it was before it skipped anything: every sample detected, YuNet on every sample,
    every large box posed, then the same rule and the same annotations."""
    frames = item.frames[stage.frame_specs()[0]]
    faces = stage.faces_on(item, frames)
    observed = [stage._people_in(image, frames.scale, face_boxes) for image, face_boxes in zip(frames.images, faces)]
    people = salient_tracks(observed, frames.times, stage.params)
    stage._annotate(item, frames, observed, SalientPeople.of(people, observed, len(observed)))


def same_answer(before: Item, after: Item) -> bool:
    """Whether the two runs agree on everything later stages and the index read (the meta's counts of
    the work done aside)."""
    identities = [item.meta["people"]["identities"] for item in (before, after)]
    rejects = [item.reject and (item.reject.reason, item.reject.detail) for item in (before, after)]
    return (before.scores == after.scores and rejects[0] == rejects[1] and identities[0] == identities[1]
            and _same_arrays(before.arrays, after.arrays)
            and _same_arrays(*(_npz(item.members.get("pose.npz")) for item in (before, after))))


def _npz(data: bytes | None) -> dict[str, np.ndarray]:
    if data is None:
        return {}
    with np.load(io.BytesIO(data)) as npz:
        return {name: npz[name] for name in npz.files}


def _same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def bench_video(stage: People, path: Path, repeats: int, clock, decode_clock) -> dict:
    n_frames, clip = plain_decode(path)
    decode_s, _ = fastest(lambda: ffmpeg_decode(path), repeats, decode_clock)
    sampled_decode_s, frames = fastest(lambda: decode_frames(str(path), stage.frame_specs()), repeats, clock)

    def run(process) -> Item:
        item = Item(source_id="bench", source_path=str(path), key="bench-0000", clip_index=0, start=0.0,
                    end=clip["duration"], meta={"clips": clip}, frames=frames)
        process(item)
        return item

    before_s, before = fastest(lambda: run(lambda item: judge_everything(stage, item)), repeats, clock)
    after_s, after = fastest(lambda: run(lambda item: stage.process([item])), repeats, clock)
    verdict = after.reject.reason if after.reject else f"kept, {after.scores['people.n_people']} people"
    return {"name": path.name, "frames": n_frames, "samples": len(frames[stage.frame_specs()[0]].images),
            "decode_s": decode_s, "sampled_decode_s": sampled_decode_s, "before_s": before_s, "after_s": after_s,
            "detected": after.meta["people"]["detected_frames"], "posed_before": before.meta["people"]["posed_boxes"],
            "posed_after": after.meta["people"]["posed_boxes"], "same": same_answer(before, after), "verdict": verdict}


def print_row(row: dict) -> None:
    times_d = lambda key: row[key] / row["decode_s"]  # noqa: E731
    print(f"{row['name']:34s} {row['frames']:6d} {row['samples']:5d} {row['decode_s']:7.2f} "
          f"{times_d('sampled_decode_s'):8.2f} {times_d('before_s'):8.2f} {times_d('after_s'):8.2f} "
          f"{row['before_s']:8.2f} {row['after_s']:8.2f} {row['detected']:5d} {row['posed_before']:5d} "
          f"{row['posed_after']:5d}  {'yes' if row['same'] else 'NO':4s} {row['verdict']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per model")
    parser.add_argument("--sample-fps", type=float, default=2.0, help="the stage's sample_fps")
    parser.add_argument("--no-faces", action="store_true", help="no YuNet face evidence (face_model_path unset)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per phase; the fastest counts")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall seconds or CPU seconds")
    args = parser.parse_args()
    if not REALDATA.is_dir():
        sys.exit(f"real footage not found at {REALDATA}")
    stage = People(PeopleParams(detector_path=str(YOLOX), pose_model_path=str(MOVENET),
                                face_model_path=None if args.no_faces else str(YUNET),
                                num_threads=args.threads, sample_fps=args.sample_fps))
    stage.setup()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    decode_clock = time.perf_counter if args.clock == "wall" else children_cpu_seconds
    print(f"people stage: sample_fps={args.sample_fps}, max_side={stage.params.max_side}, threads={args.threads}, "
          f"faces={'none' if args.no_faces else 'YuNet'}, {args.clock} clock, fastest of {args.repeats}")
    print(f"{'video':34s} {'frames':>6s} {'samp':>5s} {'D s':>7s} {'dec xD':>8s} {'before':>8s} {'after':>8s} "
          f"{'before s':>8s} {'after s':>8s} {'det':>5s} {'posed':>5s} {'posed':>5s}  same verdict")
    rows = [bench_video(stage, REALDATA / video, args.repeats, clock, decode_clock) for video in VIDEOS]
    for row in rows:
        print_row(row)
    summed = ("frames", "samples", "decode_s", "sampled_decode_s", "before_s", "after_s", "detected", "posed_before",
              "posed_after")
    total = {key: sum(row[key] for row in rows) for key in summed}
    print_row(total | {"name": "all", "same": all(row["same"] for row in rows), "verdict": ""})
    print("D s: seconds of `ffmpeg -threads 1 -i V -f null -`; dec xD: decode_frames with the stage's FrameSpec, "
          "x D; before, after: the stage x D, judging everything / as it runs (before s, after s: in seconds); "
          "det: samples detected (after); posed: boxes posed before / after; same: identical answers")


if __name__ == "__main__":
    main()
