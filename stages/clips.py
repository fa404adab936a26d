"""clips: split shots into clips, cut and standardise each with ffmpeg, extract 16 kHz mono audio.

Clips are cut by frame index (the shots stage's `shot_frames`), not by rounded times, so a clip holds
exactly the frames of its shot.

One source item becomes one item per candidate clip (too-short ones rejected with a reason), or
stays one rejected source item when no shot yields a clip.
"""
from __future__ import annotations

import copy
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
from pydantic import Field, model_validator

from curation.stage import Item, Params, Resources, Stage
from curation.storage import media_url

AUDIO_RATE = 16000


class ClipsParams(Params):
    min_clip_s: float = Field(4.0, gt=0, description="shots shorter than this are rejected")
    max_clip_s: float = Field(30.0, gt=0, description="longer shots are split into equal clips no longer than this")
    fps: float | None = Field(None, gt=0, description="output frame rate (null keeps the source's)")
    max_side: int | None = Field(None, ge=64, description="downscale so the longer side is at most this (null keeps the size)")
    crf: int = Field(18, ge=0, le=51, description="x264 constant rate factor")
    preset: str = Field("veryfast", description="x264 preset")
    encoder_threads: int = Field(1, ge=1, description="x264 threads; 1 keeps clip bytes reproducible (frame-threaded x264 was seen to give different bytes between runs under load); parallelism comes from running clips side by side")
    timeout_s: float = Field(600.0, gt=0, description="ffmpeg time limit per clip")

    @model_validator(mode="after")
    def _bounds(self):
        if self.max_clip_s < self.min_clip_s:
            raise ValueError("max_clip_s must be >= min_clip_s")
        return self


class Clips(Stage):
    name = "clips"
    level = "source"
    requires = ("shots",)
    Params = ClipsParams
    adds_members = ("mp4", "wav")
    video_member = "mp4"

    @classmethod
    def annotate_sample(cls, document: dict) -> None:
        document["clip"] = document["stages"].pop(cls.name, None)

    def resources(self) -> Resources:
        return Resources(cpus=self.params.encoder_threads, memory_gb=1)

    def process_item(self, source: Item) -> list[Item]:
        shots = source.meta["shots"]
        segments = split_shots(shots["shots"], shots["shot_frames"], self.params.min_clip_s, self.params.max_clip_s)
        if not any(segment.keep for segment in segments):
            self.reject(source, "no_clips", f"no shot of at least {self.params.min_clip_s} s")
            return [source]
        clips = []
        for index, segment in enumerate(segments):
            clip = _child(source, index, segment.start, segment.end, len(segments))
            if segment.keep:
                self._cut(clip, segment)
            else:
                self.reject(clip, "too_short", f"{segment.end - segment.start:.2f} s < {self.params.min_clip_s} s")
            clips.append(clip)
        return clips

    def _cut(self, clip: Item, segment: ClipSegment) -> None:
        probe = clip.meta["probe"]
        with tempfile.TemporaryDirectory(prefix="clip-", dir=_work_folder()) as workdir:
            mp4, wav = Path(workdir) / "clip.mp4", Path(workdir) / "clip.wav"
            command = ffmpeg_cut_command(media_url(clip.source_path), segment, probe, self.params, mp4,
                                         wav if probe["has_audio"] else None)
            done = subprocess.run(command, capture_output=True, timeout=self.params.timeout_s)
            if done.returncode != 0 or not mp4.exists():
                self.reject(clip, "cut_failed", done.stderr.decode(errors="replace")[-500:])
                return
            clip.members["mp4"] = mp4.read_bytes()
            if probe["has_audio"] and wav.exists():
                clip.members["wav"] = wav.read_bytes()
            info = _clip_info(mp4)
        self.record(clip, {"index": clip.clip_index, "start": clip.start, "end": clip.end,
                           "source_frames": [segment.first_frame, segment.end_frame],
                           "has_audio": "wav" in clip.members, **info},
                    duration=info["duration"], fps=info["fps"], n_frames=info["n_frames"])


def _work_folder() -> Path:
    """This process's folder for clips being cut. A worker killed mid-cut (kill -9, a lost node)
    leaves its folder behind: the first cut of any later process removes those of dead processes."""
    folder = Path(tempfile.gettempdir()) / f"curation-clips-{os.getpid()}"
    if not folder.exists():
        for stale in folder.parent.glob("curation-clips-*"):
            if not _alive(int(stale.name.rsplit("-", 1)[1])):
                shutil.rmtree(stale, ignore_errors=True)
        folder.mkdir()
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class ClipSegment:
    """A candidate clip: seconds from the source start, and the decoded source frames it holds
    [first_frame, end_frame), which are what is cut."""

    start: float
    end: float
    first_frame: int
    end_frame: int
    keep: bool


def split_shots(shots: list[list[float]], shot_frames: list[list[int]], min_s: float, max_s: float) -> list[ClipSegment]:
    """Candidate clips: a shot is kept whole up to max_s, split into the fewest parts of equal frame
    counts no longer than max_s beyond it, and marked not kept when shorter than min_s."""
    segments = []
    for (start, end), (first, last) in zip(shots, shot_frames):
        length = end - start
        if length < min_s:
            segments.append(ClipSegment(start, end, first, last, False))
            continue
        parts = max(1, math.ceil(length / max_s - 1e-9))
        bounds = [first + round(i * (last - first) / parts) for i in range(parts + 1)]
        frame_s = length / (last - first)
        segments += [ClipSegment(round(start + (a - first) * frame_s, 4), round(start + (b - first) * frame_s, 4), a, b, True)
                     for a, b in zip(bounds, bounds[1:])]
    return segments


def ffmpeg_cut_command(source: str, segment: ClipSegment, probe: dict, params: ClipsParams,
                       mp4: Path, wav: Path | None) -> list[str]:
    """One ffmpeg call, one decode: the standardised H.264 clip and, if there is audio, the wav.
    The clip is exactly the segment's frames: the seek lands a quarter frame before its first frame
    (ffmpeg drops the frames decoded before that time) and `trim` passes on exactly its frame count,
    so a clip never holds a frame of the next shot, whatever the timestamps' rounding."""
    fps = probe["fps"] or 25.0
    seek = max(0.0, segment.start - 0.25 / fps)
    duration = segment.end - segment.start
    width, height = _even_size(probe["width"], probe["height"], params.max_side)
    filters = [f"trim=end_frame={segment.end_frame - segment.first_frame}", "setpts=PTS-STARTPTS",
               f"scale={width}:{height}:flags=area"] + ([f"fps={params.fps}"] if params.fps else [])
    bitexact = ["-map_metadata", "-1", "-map_chapters", "-1", "-fflags", "+bitexact"]
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
               "-ss", f"{seek:.6f}", "-t", f"{duration + 1.0:.6f}", "-i", source,
               "-map", "0:v:0", "-map", "0:a:0?", "-vf", ",".join(filters), "-t", f"{duration:.6f}",
               "-c:v", "libx264", "-preset", params.preset, "-crf", str(params.crf), "-pix_fmt", "yuv420p",
               "-threads", str(params.encoder_threads), "-c:a", "aac", "-b:a", "128k",
               "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-movflags", "+faststart",
               *bitexact, str(mp4)]
    if wav is not None:
        command += ["-map", "0:a:0", "-vn", "-t", f"{duration:.6f}", "-ac", "1", "-ar", str(AUDIO_RATE),
                    "-c:a", "pcm_s16le", "-flags:a", "+bitexact", *bitexact, str(wav)]
    return command


def _even_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _clip_info(mp4: Path) -> dict:
    with av.open(str(mp4)) as container:
        video = container.streams.video[0]
        n_frames = video.frames or sum(1 for _ in container.demux(video) if _.size)
        fps = float(video.average_rate)
        return {"fps": fps, "n_frames": int(n_frames), "duration": round(n_frames / fps, 4),
                "width": video.codec_context.width, "height": video.codec_context.height}


def _child(source: Item, index: int, start: float, end: float, n_clips: int) -> Item:
    return Item(source_id=source.source_id, source_path=source.source_path,
                key=f"{source.source_id}-{index:04d}", clip_index=index, start=start, end=end,
                clips_in_source=n_clips, source_file=source.source_file, source_duration=source.source_duration,
                meta=copy.deepcopy(source.meta), scores=dict(source.scores),
                timings=dict(source.timings) if index == 0 else {},  # source stages counted once
                cpu_seconds=dict(source.cpu_seconds) if index == 0 else {})
