"""Right answers on footage with known answers: shot boundaries, people counts, speaking.

1. Shots: boundary F1 (+-3 frames) per transition kind on the generated sequences of
   bench/shot_footage.py and on the real clips' labelled cuts, for the `shots` stage with each
   detector setting and for PySceneDetect's own CLI (detect-adaptive, its defaults), side by side in
   one run; with the share of true shot frames kept, transition frames left inside shots, and the
   CPU seconds per source frame of each setting (TransNetV2's CPU fallback).
2. People: per-second count accuracy of the people rule, old (body keypoints only) and new (box area
   with body keypoints, a visible head or a face), on close-ups, medium shots, two-person footage, a
   small background person and the cartoon (bench/people_footage.py); and the photographic filter's
   verdict on real, hard real and drawn footage.
3. Speaking: per-second accuracy of "someone speaks" with the speech gate, the energy gate, no gate,
   and the stage as it was before gating, on footage with pauses and with music only
   (bench/speaking_footage.py).

    .venv/bin/python bench/fidelity_bench.py [--only shots|people|speaking] [--folder DIR]
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import people_footage, speaking_footage  # noqa: E402
from bench.shot_footage import (KINDS, REAL_CUTS, LabelledVideo, Score, build, real_video,  # noqa: E402
                                score_transitions, shot_frames_kept, transition_frames_in_shots,
                                transitions_between)
from curation.stage import Item  # noqa: E402
from stages.probe import Probe, ProbeParams  # noqa: E402
from stages.shots import Shots, ShotsParams  # noqa: E402

DETECTORS = ("transnetv2+adaptive", "transnetv2", "adaptive")


def shot_rows(folder: Path) -> list[dict]:
    videos = {kind: [build(kind, folder)] for kind in KINDS}
    videos["real clips"] = [real_video(relative) for relative in REAL_CUTS]
    stages = {name: Shots(ShotsParams(detector=name)) for name in DETECTORS}
    for stage in stages.values():
        stage.setup()
    rows = []
    for kind, group in videos.items():
        row = {"footage": kind, "transitions": sum(len(v.transitions) for v in group)}
        for name, stage in stages.items():
            scores, kept, inside, seconds = _run_stage(stage, group)
            row[name] = _pooled(scores).f1
            row[f"{name} kept"] = kept
            row[f"{name} in shots"] = inside
            row[f"{name} cpu ms/frame"] = 1000 * seconds / sum(v.n_frames for v in group)
        row["PySceneDetect CLI"] = _pooled([score_transitions(v.transitions, _cli_transitions(v)) for v in group]).f1
        rows.append(row)
        print(_format_shot_row(row), flush=True)
    return rows


def _run_stage(stage: Shots, group: list[LabelledVideo]) -> tuple[list[Score], float, int, float]:
    scores, kept, inside, seconds = [], [], 0, 0.0
    for video in group:
        item = Item(source_id=video.name, source_path=str(video.path))
        Probe(ProbeParams()).process([item])
        start = time.process_time()
        stage.process([item])
        seconds += time.process_time() - start
        shots = [tuple(frames) for frames in item.meta["shots"]["shot_frames"]]
        scores.append(score_transitions(video.transitions, transitions_between(shots)))
        kept.append(shot_frames_kept(video, shots))
        inside += transition_frames_in_shots(video, shots)
    return scores, min(kept), inside, seconds


def _pooled(scores: list[Score]) -> Score:
    return Score(sum(s.true_positives for s in scores), sum(s.false_positives for s in scores),
                 sum(s.false_negatives for s in scores))


def _cli_transitions(video: LabelledVideo) -> list[tuple[int, int]]:
    """PySceneDetect's CLI, as its users run it: the cuts it lists, as empty transition spans."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([str(Path(sys.executable).parent / "scenedetect"), "-q", "-i", str(video.path), "-o", out,
                        "detect-adaptive", "list-scenes", "-f", "scenes.csv"], check=True, capture_output=True)
        with open(Path(out) / "scenes.csv", newline="") as table:
            rows = list(csv.reader(table))[2:]  # a timecode line, then the header
    starts = [int(row[1]) - 1 for row in rows[1:]]  # 1-based start frames of every scene after the first
    return [(frame, frame) for frame in starts]


def _format_shot_row(row: dict) -> str:
    ours = "  ".join(f"{name} {row[name]:.2f} (kept {row[f'{name} kept']:.2f}, {row[f'{name} in shots']} in shots, "
                     f"{row[f'{name} cpu ms/frame']:.1f} ms/f)" for name in DETECTORS)
    return f"{row['footage']:<14} n={row['transitions']:<3} {ours}  PySceneDetect CLI {row['PySceneDetect CLI']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("shots", "people", "speaking"))
    parser.add_argument("--folder", type=Path, help="where the generated footage is written (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        if args.only in (None, "shots"):
            print("== shot boundaries: F1 at +-3 frames per footage kind (ours per detector setting, PySceneDetect CLI)")
            shot_rows(folder)
        if args.only in (None, "people"):
            print("\n== people count accuracy per second (old rule vs new), and the photographic filter")
            people_footage.print_count_rows(people_footage.people_count_rows(folder / "people"))
            people_footage.print_photographic_rows(people_footage.photographic_rows(folder / "photographic"))
        if args.only in (None, "speaking"):
            print("\n== speaking accuracy per second")
            for row in speaking_footage.speaking_accuracy_rows():
                print("  " + "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
