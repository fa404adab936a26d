"""Throughput of the faces stage on the real footage, next to one PyAV decode of the same video.

For each video: a plain PyAV decode of every frame (the floor any clip stage pays once), the
executor's decode of the stage's frames (decode_frames with the stage's FrameSpec: 25 fps, native
size), and the stage on those frames with each backend (opencv: yunet_n_320_320.onnx in
cv2.FaceDetectorYN; onnxruntime: yunet_n_dynamic.onnx at the frame's size), with the detector timed
alone on the same frames. Rates are source frames per second (frames of the video handled per
second of work); ratios are stage time over the plain decode time. Each phase runs `--repeats` times
and the fastest counts, after one warm-up of each detector; `--clock cpu` times this process's CPU
seconds, which a machine shared with other jobs disturbs less.

    .venv/bin/python bench/faces_bench.py [--threads N] [--repeats R] [--clock wall|cpu]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.frames import decode_frames  # noqa: E402
from curation.stage import Item  # noqa: E402
from stages.faces import Faces, FacesParams  # noqa: E402
from common import fastest, plain_decode, REALDATA, VIDEOS  # noqa: E402

YUNET = REALDATA / "libfacedetection.train" / "onnx"
BACKENDS = {"opencv": YUNET / "yunet_n_320_320.onnx", "onnxruntime": YUNET / "yunet_n_dynamic.onnx"}


def bench_video(stages: dict[str, Faces], path: Path, repeats: int, clock) -> dict:
    decode_s, (n_frames, clip) = fastest(lambda: plain_decode(path), repeats, clock)
    specs = next(iter(stages.values())).frame_specs()
    spec_decode_s, frames = fastest(lambda: decode_frames(str(path), specs), repeats, clock)
    row = {"name": path.name, "frames": n_frames, "decode_s": decode_s, "spec_decode_s": spec_decode_s}
    for backend, stage in stages.items():
        def run_stage() -> Item:
            item = Item(source_id="bench", source_path=str(path), key="bench-0000", clip_index=0, start=0.0,
                        end=clip["duration"], meta={"clips": clip}, frames=frames)
            stage.process([item])
            return item

        row[f"{backend}_s"], item = fastest(run_stage, repeats, clock)
        row[f"{backend}_detect_s"], _ = fastest(lambda: stage.detect(frames[specs[0]].images), repeats, clock)
        row[f"{backend}_verdict"] = item.reject.reason if item.reject else f"{item.scores['faces.n_tracks']} tracks"
    return row


def print_row(row: dict) -> None:
    rate = lambda seconds: row["frames"] / seconds  # noqa: E731
    cells = [f"{row['name']:34s} {row['frames']:6d} {rate(row['decode_s']):9.0f} {rate(row['spec_decode_s']):9.0f}"]
    for backend in BACKENDS:
        cells.append(f"{rate(row[f'{backend}_s']):9.0f} {row[f'{backend}_s'] / row['decode_s']:6.2f} "
                     f"{rate(row[f'{backend}_detect_s']):9.0f}")
    verdicts = " / ".join(row.get(f"{backend}_verdict", "") for backend in BACKENDS)
    print(" ".join(cells) + f"  {verdicts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="the stage's num_threads")
    parser.add_argument("--repeats", type=int, default=1, help="runs per phase; the fastest counts")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall seconds or process CPU seconds")
    args = parser.parse_args()
    if not REALDATA.is_dir():
        sys.exit(f"real footage not found at {REALDATA}")
    stages = {backend: Faces(FacesParams(backend=backend, model_path=str(model), num_threads=args.threads))
              for backend, model in BACKENDS.items()}
    for stage in stages.values():
        stage.setup()
        stage.detect(decode_frames(str(REALDATA / VIDEOS[0]), stage.frame_specs())[stage.frame_specs()[0]].images[:25])
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"faces stage: 25 fps, native size, threads={args.threads}, {args.clock} clock, fastest of {args.repeats}")
    print(f"{'video':34s} {'frames':>6s} {'decode/s':>9s} {'dec+spec':>9s} "
          + " ".join(f"{backend[:6] + '/s':>9s} {'ratio':>6s} {'det/s':>9s}" for backend in BACKENDS) + "  verdict")
    rows = [bench_video(stages, REALDATA / video, args.repeats, clock) for video in VIDEOS]
    for row in rows:
        print_row(row)
    totals = {key: sum(row[key] for row in rows) for key in rows[0] if key.endswith("_s") or key == "frames"}
    print_row(totals | {"name": "all"})
    print("decode/s: source frames/s of one plain PyAV decode; dec+spec: of decode_frames with the stage's "
          "FrameSpec; opencv/s, onnxr/s: of the whole stage (detection, tracking, crops) per backend on "
          "decoded frames; ratio: stage time / plain decode time; det/s: the detector alone")


if __name__ == "__main__":
    main()
