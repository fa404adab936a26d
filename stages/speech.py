"""speech: when anyone speaks in the clip's audio, by Silero VAD (stages/models/vad.py), so that
later stages tell speech from pauses, digital silence and music.

Reads the clip's `wav` member (16 kHz mono 16-bit PCM). A clip without audio gets no speech (kept:
rejecting clips without audio is the probe's and the speakers stage's business); a wav in another
format is rejected (bad_audio), as speakers rejects it.

Writes meta["speech"]: {"segments": [[start, end] seconds from the clip start], "has_audio"};
scores speech_fraction (fraction of the clip's 25 fps frames inside a segment) and n_segments;
array "speech.active" bool [clip frames at 25 fps] (frame k covers [k / 25, (k + 1) / 25) s and is
active when its centre lies in a segment), which the speakers stage reads to gate its scores.
"""
from __future__ import annotations

from pydantic import Field

from curation.stage import Item, Params, Resources, Stage
from stages.models.audio_features import VIDEO_FPS, read_wav16k
from stages.models.vad import SegmentRule, SileroVad, frames_in_segments, speech_segments


class SpeechParams(Params):
    threshold: float = Field(0.25, gt=0, lt=1, description="a 32 ms chunk starts speech when its Silero probability is at or above this (the package's default is 0.5; 0.25 keeps speech over music and right after a pause, see bench/speaking_footage.py)")
    neg_threshold: float | None = Field(None, gt=0, lt=1, description="speech ends below this probability (null: threshold - 0.15, the package's rule)")
    min_speech_s: float = Field(0.25, ge=0, description="speech segments shorter than this are dropped")
    min_silence_s: float = Field(0.1, ge=0, description="a segment ends only after this much silence")
    pad_s: float = Field(0.03, ge=0, description="each segment is widened by this much on both sides")
    num_threads: int = Field(1, ge=1, description="onnxruntime intra-op threads")


class Speech(Stage):
    name = "speech"
    requires = ("clips",)
    adds_arrays = ("speech.active",)
    reads_members = ("wav",)
    Params = SpeechParams

    def resources(self) -> Resources:
        return Resources(cpus=self.params.num_threads, memory_gb=0.5)

    def setup(self) -> None:
        self.vad = SileroVad(num_threads=self.params.num_threads)

    def process_item(self, item: Item) -> None:
        n_frames = clip_frames(item)
        clip = item.meta.get("clips") or {}
        if "wav" not in item.members or clip.get("has_audio") is False:
            self._record(item, [], n_frames, has_audio=False)
            return
        try:
            samples = read_wav16k(item.members["wav"])
        except ValueError as error:
            self._record(item, [], n_frames, has_audio=False)
            self.reject(item, "bad_audio", f"wav member: {error}")
            return
        segments = speech_segments(self.vad.speech_probability(samples), len(samples), self.rule())
        self._record(item, segments, n_frames, has_audio=True)

    def rule(self) -> SegmentRule:
        p = self.params
        return SegmentRule(p.threshold, p.neg_threshold, p.min_speech_s, p.min_silence_s, p.pad_s)

    def _record(self, item: Item, segments: list, n_frames: int, has_audio: bool) -> None:
        active = frames_in_segments(segments, n_frames, VIDEO_FPS)
        item.arrays["speech.active"] = active
        self.record(item, {"segments": [list(s) for s in segments], "has_audio": has_audio},
                    speech_fraction=round(float(active.mean()) if n_frames else 0.0, 4),
                    n_segments=len(segments))


def clip_frames(item: Item) -> int:
    """The clip's length in 25 fps frames (from its duration)."""
    clip = item.meta.get("clips") or {}
    duration = clip.get("duration")
    if duration is None and item.start is not None and item.end is not None:
        duration = item.end - item.start
    return round((duration or 0.0) * VIDEO_FPS)
