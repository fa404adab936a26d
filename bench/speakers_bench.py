"""Throughput of the speakers (Light-ASD) and syncnet stages on the real footage, next to one PyAV
decode of the same footage.

The footage is the two golden Light-ASD windows (video4 1-7 s, video3 24-30 s: 150 frames at
25 fps, two face tracks each). Their face tracks come from the golden boxes
(../shared/golden/light-asd/tracks.json) cropped as the faces stage crops them, so that only the
two stages are timed. SyncNet runs with random weights (none are public here); its speed does not
depend on them. Rates are clip frames (25 fps) per second of work; ratios are stage time over
the plain decode time of the same window. Each phase runs `--repeats` times and the fastest
counts; `--clock cpu` times this process's CPU seconds (all threads) instead of wall seconds.

    .venv/bin/python bench/speakers_bench.py [--threads N] [--repeats R] [--clock wall|cpu]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # shared clip helpers

from clip_cutting import decode_frames_25fps, wav_16k_bytes  # noqa: E402
from common import fastest  # noqa: E402
from curation.stage import Item  # noqa: E402
from stages.models.face_tracking import crop_track, gray_centre_112  # noqa: E402
from stages.models.syncnet import SyncNet  # noqa: E402
from stages.speakers import Speakers, SpeakersParams  # noqa: E402
from stages.syncnet import SyncNetParams, SyncNetStage  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CLIPS = SHARED / "realdata" / "data-juicer" / "tests" / "ops" / "data"
TALKSET = SHARED / "realdata" / "Light-ASD" / "weight" / "finetuning_TalkSet.model"
TRACKS = SHARED / "golden" / "light-asd" / "tracks.json"
FPS = 25


def clip_item(clip: str, frames: np.ndarray, start: float) -> Item:
    """The item the two stages see: the faces hand-off built from the golden boxes, and the wav."""
    tracks = json.loads(TRACKS.read_text())
    n_frames = len(frames)
    path = CLIPS / f"{clip}.mp4"
    item = Item(source_id=clip, source_path=str(path), key=f"{clip}-0000", clip_index=0, start=start,
                end=start + n_frames / FPS, members={"wav": wav_16k_bytes(path, start, n_frames / FPS)})
    item.meta["clips"] = {"fps": float(FPS), "n_frames": n_frames, "width": frames.shape[2],
                          "height": frames.shape[1], "has_audio": True, "duration": n_frames / FPS}
    hand_off = []
    for track_id, name in enumerate("AB"):
        golden = tracks[f"{clip}_track{name}"]["frames"]
        boxes = np.array([golden[key]["track_box_x1y1x2y2"] for key in sorted(golden, key=int)])
        rgb224 = crop_track(frames, boxes)
        item.arrays[f"faces.track{track_id}.rgb224"] = rgb224
        item.arrays[f"faces.track{track_id}.gray112"] = np.stack([gray_centre_112(face) for face in rgb224])
        hand_off.append({"id": track_id, "frames": list(range(n_frames)), "boxes": boxes.tolist()})
    item.meta["faces"] = {"tracks": hand_off}
    return item


def bench_clip(clip: str, stages: dict, repeats: int, clock) -> dict:
    first_frame = json.loads(TRACKS.read_text())[f"{clip}_trackA"]["first_frame"]
    start = first_frame / FPS
    decode_s, frames = fastest(lambda: decode_frames_25fps(CLIPS / f"{clip}.mp4", start, 150), repeats, clock)
    item = clip_item(clip, frames, start)
    row = {"name": clip, "frames": len(frames), "tracks": len(item.meta["faces"]["tracks"]), "decode_s": decode_s}
    for name, stage in stages.items():
        row[f"{name}_s"], _ = fastest(lambda: stage.process_item(item), repeats, clock)
    row["verdict"] = (f"{item.scores['speakers.n_speaking_tracks']} speaking, "
                      f"Sync-C max {item.scores['syncnet.max_sync_c']:.2f} (random weights)")
    return row


def print_row(row: dict) -> None:
    rate = lambda seconds: row["frames"] / seconds  # noqa: E731
    print(f"{row['name']:8s} {row['frames']:6d} {row['tracks']:6d} {rate(row['decode_s']):9.0f} "
          f"{rate(row['speakers_s']):10.1f} {row['speakers_s'] / row['decode_s']:7.1f} "
          f"{rate(row['syncnet_s']):9.1f} {row['syncnet_s'] / row['decode_s']:7.1f}  {row['verdict']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per stage")
    parser.add_argument("--repeats", type=int, default=2, help="runs per phase; the fastest counts")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall seconds or process CPU seconds")
    args = parser.parse_args()
    if not (TALKSET.is_file() and TRACKS.is_file()):
        sys.exit(f"Light-ASD weights ({TALKSET}) or golden tracks ({TRACKS}) not found")
    with tempfile.TemporaryDirectory() as tmp:
        syncnet_path = Path(tmp) / "syncnet_random.model"
        torch.manual_seed(0)
        torch.save(SyncNet().state_dict(), syncnet_path)
        stages = {"speakers": Speakers(SpeakersParams(model_path=str(TALKSET), num_threads=args.threads)),
                  "syncnet": SyncNetStage(SyncNetParams(model_path=str(syncnet_path), num_threads=args.threads,
                                                        min_sync_conf=-1e9))}
        for stage in stages.values():
            stage.setup()
        clock = time.perf_counter if args.clock == "wall" else time.process_time
        print(f"speakers + syncnet: threads={args.threads}, {args.clock} clock, fastest of {args.repeats}")
        print(f"{'clip':8s} {'frames':>6s} {'tracks':>6s} {'decode/s':>9s} {'speakers/s':>10s} {'ratio':>7s} "
              f"{'syncnet/s':>9s} {'ratio':>7s}  verdict")
        rows = [bench_clip(clip, stages, args.repeats, clock) for clip in ("video4", "video3")]
    for row in rows:
        print_row(row)
    total = {key: sum(row[key] for row in rows) for key in ("frames", "tracks", "decode_s", "speakers_s", "syncnet_s")}
    print_row(total | {"name": "all", "verdict": ""})
    print("decode/s: 25 fps frames/s of one PyAV decode of the window; speakers/s, syncnet/s: of each stage "
          "on the decoded window's face tracks (all tracks together); ratio: stage time / decode time")


if __name__ == "__main__":
    main()
