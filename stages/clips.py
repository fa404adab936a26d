"""clips: split shots into clips, and say what each will be once encoded; nothing is encoded here.

Clips are split by frame index (the shots stage's `shot_frames`), not by rounded times, so a clip
holds exactly the frames of its shot. Each clip gets its window of the source (`Item.window`): the
analysis stages read their frames from there, and `encode` cuts and encodes only the clips they keep.
Its metadata is the encoded clip's (size, frame rate, frame count), which later stages size by.

One source item becomes one item per candidate clip (too-short ones rejected with a reason), or
stays one rejected source item when no shot yields a clip.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from pydantic import Field, model_validator

from curation.stage import Item, Params, Resources, SourceWindow, Stage


class ClipsParams(Params):
    min_clip_s: float = Field(4.0, gt=0, description="shots shorter than this are rejected")
    max_clip_s: float = Field(30.0, gt=0, description="longer shots are split into equal clips no longer than this")
    fps: float | None = Field(None, gt=0, description="output frame rate (null keeps the source's)")
    max_side: int | None = Field(None, ge=64, description="downscale so the longer side is at most this (null keeps the size)")

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
    sample_fields = {"clip": None}

    @classmethod
    def annotate_sample(cls, document: dict) -> None:
        document["clip"] = document["stages"].pop(cls.name, None)

    def resources(self) -> Resources:
        return Resources(cpus=0.25, memory_gb=0.5)

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
                self._plan(clip, segment, shots["fps"])
            else:
                self.reject(clip, "too_short", f"{segment.end - segment.start:.2f} s < {self.params.min_clip_s} s")
            clips.append(clip)
        return clips

    def _plan(self, clip: Item, segment: ClipSegment, source_fps: float) -> None:
        """The clip as it will be encoded (what later stages size their arrays by), and its window."""
        probe = clip.meta["probe"]
        width, height = even_size(probe["width"], probe["height"], self.params.max_side)
        fps, n_frames = clip_rate(segment, source_fps, self.params.fps)
        clip.window = SourceWindow(segment.start, segment.first_frame, segment.end_frame, source_fps,
                                   self.params.fps, n_frames, width, height)
        duration = round(n_frames / fps, 4)
        self.record(clip, {"index": clip.clip_index, "start": clip.start, "end": clip.end,
                           "source_frames": [segment.first_frame, segment.end_frame], "has_audio": probe["has_audio"],
                           "fps": fps, "n_frames": n_frames, "duration": duration, "width": width, "height": height},
                    duration=duration, fps=fps, n_frames=n_frames)


def clip_rate(segment: ClipSegment, source_fps: float, fps: float | None) -> tuple[float, int]:
    """(frame rate, frame count) of the encoded clip. Resampled, it holds the whole output frames that
    fit the segment's duration: ffmpeg's fps filter makes that many or one more, and the cut stops there."""
    if fps is None:
        return source_fps, segment.end_frame - segment.first_frame
    return fps, max(1, math.floor((segment.end - segment.start) * fps + 1e-6))


def even_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """The clip's size: scaled so its longer side is at most max_side, both sides even (yuv420p)."""
    scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


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


def _child(source: Item, index: int, start: float, end: float, n_clips: int) -> Item:
    return Item(source_id=source.source_id, source_path=source.source_path,
                key=f"{source.source_id}-{index:04d}", clip_index=index, start=start, end=end,
                clips_in_source=n_clips, source_file=source.source_file, source_duration=source.source_duration,
                meta=copy.deepcopy(source.meta), scores=dict(source.scores),
                timings=dict(source.timings) if index == 0 else {},  # source stages counted once
                cpu_seconds=dict(source.cpu_seconds) if index == 0 else {})
