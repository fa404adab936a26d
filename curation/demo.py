"""The embedded default input: generated multi-shot videos with espeak-ng speech.

Each video is a few hard-cut shots of different synthetic scenes (ffmpeg's lavfi sources), with a
spoken sentence over it, so the ingest pipeline has real cuts to find and real speech to carry.
The cut times are known, which makes the videos a ground truth for shot detection too.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

SCENES = ["testsrc2=size={w}x{h}:rate={fps}", "mandelbrot=size={w}x{h}:rate={fps}",
          "cellauto=size={w}x{h}:rate={fps}:rule=110", "smptehdbars=size={w}x{h}:rate={fps}",
          "life=size={w}x{h}:rate={fps}:mold=10:ratio=0.1:death_color=#202060:life_color=#e0c040"]
VIDEOS = [
    {"name": "demo_two_shots", "shots": [6.0, 8.0], "text": "Hello. This demo video has two shots."},
    {"name": "demo_three_shots", "shots": [5.0, 3.0, 7.0],
     "text": "Three shots here. The middle one is too short to keep."},
    {"name": "demo long single shot", "shots": [34.0],
     "text": "One long shot, which the clips stage splits in two."},
]


def make_demo_inputs(folder: str | Path, width: int = 320, height: int = 240, fps: int = 25) -> Path:
    """Write the demo videos into `folder` (idempotent) and a truth.json of their cut times."""
    for tool in ("ffmpeg", "espeak-ng"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (scripts/setup.sh installs it)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for number, video in enumerate(VIDEOS):
        target = folder / f"{video['name']}.mp4"
        if not target.exists():
            _make_video(target, video, number, width, height, fps)
        starts = [sum(video["shots"][:i]) for i in range(len(video["shots"]))]
        truth[target.name] = {"cuts": starts[1:], "duration": sum(video["shots"])}
    (folder / "truth.json").write_text(json.dumps(truth, indent=1))
    return folder


def _make_video(target: Path, video: dict, number: int, width: int, height: int, fps: int) -> None:
    duration = sum(video["shots"])
    with tempfile.TemporaryDirectory() as workdir:
        speech = Path(workdir) / "speech.wav"
        subprocess.run(["espeak-ng", "-w", str(speech), video["text"]], check=True, capture_output=True)
        command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
        for shot_number, length in enumerate(video["shots"]):
            scene = SCENES[(number + shot_number) % len(SCENES)].format(w=width, h=height, fps=fps)
            command += ["-f", "lavfi", "-t", f"{length}", "-i", scene]
        command += ["-i", str(speech)]
        shots = len(video["shots"])
        concat = "".join(f"[{i}:v]" for i in range(shots)) + f"concat=n={shots}:v=1:a=0,format=yuv420p[v]"
        audio = f"[{shots}:a]aresample=44100,apad=whole_dur={duration}[a]"
        command += ["-filter_complex", f"{concat};{audio}", "-map", "[v]", "-map", "[a]",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-c:a", "aac",
                    "-t", f"{duration}", "-fflags", "+bitexact", "-map_metadata", "-1", str(target)]
        subprocess.run(command, check=True, capture_output=True)
