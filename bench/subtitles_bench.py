"""Cost and answers of the subtitles stage's detection-first reading, against the full read it replaced.

For each video: D, a plain single-thread decode of every frame (`ffmpeg -threads 1 -i V -f null -`);
then the stage on the same sampled frames (decode_frames with the stage's FrameSpec, decoded once and
cut into clips of `--clip-s` seconds, as the clips stage would hand them over) three ways:

  full     the full read it replaced: the detector on the whole frame and every line recognised in
           every sample (det_max_side at the frame size, recognise all, stop_early off)
  new      the stage as configured by default: the detector on a frame shrunk to det_max_side, a line
           recognised only when new or changed, reading stopped once the clip is rejected
  new-all  the same without stop_early: every sample read, so its change counts compare with full's

Answers are compared clip by clip: the reject decision (full vs new), and n_text_changes, language,
the regions' kinds and text_area_ratio (full vs new-all). The same runs on generated subtitle footage
with known answers (`subtitle_footage`: real footage with text drawn on it, x264-encoded), where each
way is also checked against the truth. `--clock cpu` counts CPU seconds (this process's, and ffmpeg's
as a child), which a machine shared with other jobs disturbs less than wall seconds.

    .venv/bin/python bench/subtitles_bench.py [--clip-s S] [--repeats R] [--clock wall|cpu] [--det-max-side N]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REALDATA, VIDEOS, fastest  # noqa: E402
from curation.frames import decode_frames  # noqa: E402
from curation.stage import ClipFrames, Item  # noqa: E402
from stages.subtitles import Subtitles, SubtitlesParams  # noqa: E402

FPS = 25
SIZE = (640, 360)
CLIP_S = 8.0
# Backgrounds without text of their own, and with motion under the drawn text: (file, first second).
_BACKGROUNDS = {
    "talk": ("data-juicer/tests/ops/data/video4.mp4", 2.0),
    "walk": ("sample-videos/one-by-one-person-detection.mp4", 20.0),
}
SUBTITLES = ["Where did you put the keys?", "I left them on the kitchen table.",
             "They are not there anymore.", "Then someone must have taken them."]
SAME_BAND = ["They left the house at nine", "Nobody saw the car go past"]  # one length, one place
TITLE = "MORNING NEWS"


@dataclass(frozen=True)
class Caption:
    """Text drawn from `start` to `end` seconds, centred on (x, y) in SIZE pixels."""

    text: str
    start: float
    end: float
    centre: tuple[int, int]
    size: int = 26


@dataclass
class Footage:
    """A generated clip and its known answers."""

    name: str
    path: Path
    rejected: bool
    n_changes: int
    region_kinds: list[str]


def _subtitles(lines: list[str], seconds_each: float) -> list[Caption]:
    return [Caption(text, k * seconds_each, (k + 1) * seconds_each, (SIZE[0] // 2, SIZE[1] - 40))
            for k, text in enumerate(lines)]


_TITLE = Caption(TITLE, 0.0, CLIP_S, (150, 36), size=30)
# name -> (background, captions, rejected, n_changes, region kinds)
FOOTAGE = {
    "no_text": ("talk", [], False, 0, []),
    "static_title": ("walk", [_TITLE], False, 0, ["static"]),
    "appearing": ("talk", [Caption(SUBTITLES[0], 3.0, 6.0, (SIZE[0] // 2, SIZE[1] - 40))], False, 0, ["static"]),
    "subtitles": ("talk", _subtitles(SUBTITLES, 2.0), True, 3, ["changing"]),
    "same_band": ("walk", _subtitles(SAME_BAND, 4.0), True, 1, ["changing"]),
    "title_subtitles": ("walk", [_TITLE, *_subtitles(SUBTITLES, 2.0)], True, 3, ["static", "changing"]),
}


def subtitle_footage(folder: Path, names: list[str] | None = None) -> list[Footage]:
    """Write the generated clips (all of FOOTAGE, or `names`) into `folder`, with their answers."""
    footage = []
    for name in names or list(FOOTAGE):
        background, captions, rejected, n_changes, kinds = FOOTAGE[name]
        path = folder / f"{name}.mp4"
        _encode(path, [_draw(frame, captions, k / FPS) for k, frame in enumerate(_background(background))])
        footage.append(Footage(name, path, rejected, n_changes, kinds))
    return footage


@lru_cache
def _background(name: str) -> tuple[np.ndarray, ...]:
    """CLIP_S seconds of RGB frames of a real video, resized to SIZE (consecutive decoded frames)."""
    path, start = _BACKGROUNDS[name]
    frames = []
    with av.open(str(REALDATA / path)) as container:
        stream = container.streams.video[0]
        container.seek(int(start / stream.time_base), stream=stream)  # to the keyframe at or before start
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= start:
                frames.append(cv2.resize(frame.to_ndarray(format="rgb24"), SIZE, interpolation=cv2.INTER_AREA))
            if len(frames) == int(CLIP_S * FPS):
                break
    return tuple(frames)


def _draw(frame: np.ndarray, captions: list[Caption], time: float) -> np.ndarray:
    """White text with a black outline, as burned-in subtitles are drawn."""
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    for caption in captions:
        if caption.start <= time < caption.end:
            draw.text(caption.centre, caption.text, font=_font(caption.size), anchor="mm",
                      fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    return np.asarray(image)


@lru_cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled FreeType font: no system font needed


def _encode(path: Path, frames: list[np.ndarray]) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "23", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def ways(det_max_side: int) -> dict[str, Subtitles]:
    defaults = SubtitlesParams()
    params = {
        "full": SubtitlesParams(det_max_side=defaults.max_side, recognise="all", stop_early=False),
        "new": SubtitlesParams(det_max_side=det_max_side),
        "new-all": SubtitlesParams(det_max_side=det_max_side, stop_early=False),
    }
    stages = {name: Subtitles(p) for name, p in params.items()}
    for stage in stages.values():
        stage.setup()
    return stages


def clips(frames: ClipFrames, clip_s: float) -> list[ClipFrames]:
    """The samples cut into consecutive clips of clip_s seconds, times from each clip's start."""
    index = np.floor(frames.times / clip_s + 1e-6).astype(int)
    return [ClipFrames(images=frames.images[index == k], times=frames.times[index == k] - k * clip_s,
                       scale=frames.scale) for k in np.unique(index)]


def run_clips(stage: Subtitles, windows: list[ClipFrames]) -> list[Item]:
    spec = stage.frame_specs()[0]
    items = [Item(source_id="bench", source_path="bench", key=f"bench-{k:04d}", clip_index=k, frames={spec: window})
             for k, window in enumerate(windows)]
    stage.process(items)
    return items


def answers(item: Item) -> dict:
    meta, scores = item.meta["subtitles"], item.scores
    return {"rejected": item.reject is not None, "n_changes": scores["subtitles.n_text_changes"],
            "language": scores["subtitles.language"], "kinds": sorted(r["kind"] for r in meta["regions"]),
            "area": scores["subtitles.text_area_ratio"], "read": meta["n_lines_recognised"],
            "stopped": meta["stopped_early_at"] is not None}


def bench_video(path: Path, stages: dict[str, Subtitles], clip_s: float, repeats: int, clock, decode_clock) -> dict:
    decode_s = fastest(lambda: ffmpeg_decode(path), repeats, decode_clock)[0]
    spec = stages["new"].frame_specs()[0]
    windows = clips(decode_frames(str(path), [spec])[spec], clip_s)
    row = {"name": path.name, "samples": sum(len(w.images) for w in windows), "clips": len(windows),
           "decode_s": decode_s}
    for name, stage in stages.items():
        seconds, items = fastest(lambda: run_clips(stage, windows), repeats, clock)
        row[name] = {"s": seconds, "answers": [answers(item) for item in items]}
    return row


def ffmpeg_decode(path: Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-threads", "1", "-i", str(path), "-f", "null", "-"], check=True)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def agreement(row: dict) -> dict:
    """Clips on which the ways agree: decisions (full vs new), and the full answers (full vs new-all)."""
    full, new, new_all = (row[name]["answers"] for name in ("full", "new", "new-all"))
    pairs = list(zip(full, new_all))
    return {"decisions": sum(a["rejected"] == b["rejected"] for a, b in zip(full, new)),
            "changes": sum(a["n_changes"] == b["n_changes"] for a, b in pairs),
            "language": sum(a["language"] == b["language"] for a, b in pairs),
            "kinds": sum(a["kinds"] == b["kinds"] for a, b in pairs),
            "area_gap": max((abs(a["area"] - b["area"]) / max(a["area"], 1e-9) for a, b in pairs if a["area"]),
                            default=0.0)}


def print_table(rows: list[dict]) -> None:
    print(f"{'video':34s} {'samp':>4s} {'clips':>5s} {'D s':>6s} {'full xD':>7s} {'new xD':>7s} {'all xD':>7s} "
          f"{'read':>9s} {'stop':>4s}  decisions changes language kinds area_gap")
    for row in rows + [_total(rows)]:
        agree, n = agreement(row), row["clips"]
        times_d = {name: row[name]["s"] / row["decode_s"] for name in ("full", "new", "new-all")}
        read = "/".join(str(sum(a["read"] for a in row[name]["answers"])) for name in ("full", "new"))
        stopped = sum(a["stopped"] for a in row["new"]["answers"])
        print(f"{row['name']:34s} {row['samples']:4d} {n:5d} {row['decode_s']:6.2f} {times_d['full']:7.2f} "
              f"{times_d['new']:7.2f} {times_d['new-all']:7.2f} {read:>9s} {stopped:4d}  "
              f"{agree['decisions']:>4d}/{n:<4d} {agree['changes']:>3d}/{n:<3d} {agree['language']:>4d}/{n:<3d} "
              f"{agree['kinds']:>2d}/{n:<2d} {agree['area_gap']:8.3f}")


def _total(rows: list[dict]) -> dict:
    total = {"name": "all", **{key: sum(row[key] for row in rows) for key in ("samples", "clips", "decode_s")}}
    for name in ("full", "new", "new-all"):
        total[name] = {"s": sum(row[name]["s"] for row in rows),
                       "answers": [a for row in rows for a in row[name]["answers"]]}
    return total


def print_truth(rows: list[dict], footage: list[Footage]) -> None:
    """Each way's answers on the generated footage against the known ones."""
    print(f"{'footage':16s} {'truth':24s} {'full':24s} {'new':24s} {'new-all':24s}")
    for row, clip in zip(rows, footage):
        truth = _verdict(clip.rejected, clip.n_changes, clip.region_kinds)
        cells = [_verdict(a["rejected"], a["n_changes"], a["kinds"])
                 for a in (row[name]["answers"][0] for name in ("full", "new", "new-all"))]
        marks = [cell + ("" if cell == truth else " *") for cell in cells]
        print(f"{clip.name:16s} {truth:24s} " + " ".join(f"{m:24s}" for m in marks))
    print("verdict: kept/rejected, n_text_changes, region kinds; * differs from the truth (new stops counting "
          "at the first change past max_text_changes)")


def _verdict(rejected: bool, n_changes: int, kinds: list[str]) -> str:
    return f"{'rejected' if rejected else 'kept'} {n_changes} {'+'.join(sorted(kinds)) or '-'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-s", type=float, default=10.0, help="seconds per clip the samples are cut into")
    parser.add_argument("--repeats", type=int, default=1, help="runs per way; the fastest counts")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu", help="wall seconds or CPU seconds")
    parser.add_argument("--det-max-side", type=int, default=SubtitlesParams().det_max_side,
                        help="det_max_side of the new ways")
    args = parser.parse_args()
    if not REALDATA.is_dir():
        sys.exit(f"real footage not found at {REALDATA}")
    stages = ways(args.det_max_side)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    decode_clock = time.perf_counter if args.clock == "wall" else children_cpu_seconds
    p = stages["new"].params
    print(f"subtitles: sample_fps={p.sample_fps}, max_side={p.max_side}, det_max_side={p.det_max_side}, "
          f"threads={p.threads}, clips of {args.clip_s} s, {args.clock} clock, fastest of {args.repeats}")
    print_table([bench_video(REALDATA / video, stages, args.clip_s, args.repeats, clock, decode_clock)
                 for video in VIDEOS])
    with tempfile.TemporaryDirectory() as folder:
        footage = subtitle_footage(Path(folder))
        rows = [bench_video(clip.path, stages, CLIP_S, args.repeats, clock, decode_clock) for clip in footage]
    print("generated footage:")
    print_table(rows)
    print_truth(rows, footage)
    print("D s: seconds of `ffmpeg -threads 1 -i V -f null -`; full / new / all xD: the stage's seconds on the "
          "sampled frames x D (full read; as configured; as configured without stop_early); read: lines "
          "recognised, full/new; stop: clips new stopped early; agreement, clips of clips: decisions full vs new, "
          "changes, language and region kinds full vs new-all; area_gap: largest relative text_area_ratio gap, "
          "full vs new-all")


if __name__ == "__main__":
    main()
