"""speakers: who speaks when. Light-ASD scores every frame of every face track against the clip's
audio; smoothed, thresholded and gated by speech in the audio, the scores give each track's
speaking segments.

Reads the `faces` hand-off: meta["faces"]["tracks"] ([{"id", "frames": 25 fps clip frame indices,
"boxes"}]), arrays "faces.track<id>.gray112" uint8 [T, 112, 112], the clip's `wav` member
(16 kHz mono 16-bit PCM), and the `speech` stage's array "speech.active" (bool per 25 fps clip
frame) when that stage ran.

Speaking is speech, not lip motion: a frame speaks when its smoothed score is above `threshold`
and the gate lets it through. Gates (`gate`; meta["speakers"]["gate"] says which one ran):
* speech: the speech stage's Silero VAD hears speech at that frame, so pauses, digital silence and
  music do not speak (speech under loud music that the VAD misses does not either);
* energy (no speech stage ran): the frame's audio RMS is above -70 dBFS and at most
  `energy_floor_db` below the clip's loudest 25 fps frame, so digital silence and near-silence
  never speak; music passes this gate (only the speech stage stops it);
* none: no gate (the behaviour before gating: lips moving over music or silence speak).
Each window of `durations_s` seconds is scored as an independent sequence and a frame's score is
the mean over the durations (evaluate_network's procedure, whose set is 1-6 s). The defaults (1-3 s
windows, 5-frame average, threshold -0.15) were calibrated with the speech gate on the footage of
bench/speaking_footage.py and the golden Light-ASD turns: they keep the recall of the 1-6 s set on
footage with pauses, and place the golden video3 turn change within 5 frames where 1-6 s windows
let the first speaker run on 16 frames into the answer.

Writes arrays "speakers.track<id>.score" float32 [T]: the Light-ASD logit per track frame (ungated;
> threshold leans to speaking); meta["speakers"]: {"gate", "tracks": [{"id", "mean_score",
"speaking_fraction", "segments": [[start, end] seconds from the clip start]}]}; scores
n_speaking_tracks, max_mean_score, speech_coverage (fraction of the clip's 25 fps frames in which
some track speaks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt

from curation.stage import Device, Item, Params, Resources, Stage, WeightFile, gpu_share, gpus_param
from stages.models.audio_features import SAMPLES_PER_FRAME, VIDEO_FPS, read_wav16k, track_mfcc
from stages.models.light_asd import load_light_asd, score_track

SPEECH_ARRAY = "speech.active"
SILENCE_DBFS = -70.0  # the energy gate: a frame quieter than this is silent whatever the clip's peak


class SpeakersParams(Params):
    model_path: WeightFile = Field(None, description="a Light-ASD weights file: finetuning_TalkSet.model (pretrain_AVA_CVPR.model scores most talking faces below 0)")
    device: Device = Field("cpu", description="torch device for Light-ASD (cpu, cuda, cuda:1, ...)")
    gpus: float = gpus_param(0.25)
    num_threads: int = Field(1, ge=1, description="torch CPU threads (one per worker scales best; more threads help a lone worker on an idle machine)")
    durations_s: tuple[PositiveInt, ...] = Field((1, 2, 3), min_length=1, description="window lengths in seconds; a frame's score is the mean of its windows' scores over these durations (evaluate_network's set is (1, 2, 3, 4, 5, 6), whose long windows carry speech over into pauses)")
    max_batch_frames: int = Field(256, ge=16, description="most video frames in one Light-ASD forward pass (bounds memory)")
    threshold: float = Field(-0.15, description="a frame speaks when its smoothed score is above this Light-ASD logit and the gate lets it through (calibrated with the other defaults on bench/speaking_footage.py's footage and the golden Light-ASD turns: -0.2 to -0.1 is best)")
    smooth_frames: int = Field(5, ge=1, description="centred moving average over this many frames before thresholding (the original's visualisation uses 5)")
    min_segment_s: float = Field(0.2, ge=0, description="silent gaps shorter than this inside speech are filled (not across gated frames), then speaking runs shorter than this are dropped")
    gate: Literal["auto", "speech", "energy", "none"] = Field("auto", description="what else a speaking frame needs: speech (the speech stage's VAD says someone speaks), energy (audio RMS within energy_floor_db of the clip's loudest frame), none (nothing), auto (speech when the speech stage ran, else energy)")
    energy_floor_db: float = Field(-40.0, lt=0, description="the energy gate: frames whose audio RMS is more than this many dB below the clip's loudest 25 fps frame never speak")
    reject_no_audio: bool = Field(True, description="reject clips without audio (no_audio); false keeps them with no speaker information")
    reject_no_faces: bool = Field(True, description="reject clips without face tracks (no_faces); false keeps them with an empty track list")


class Speakers(Stage):
    name = "speakers"
    requires = ("faces",)
    adds_arrays = ("speakers.track*.score",)
    reads_members = ("wav",)
    reads_arrays = ("faces.track*.gray112", SPEECH_ARRAY)
    Params = SpeakersParams

    def resources(self) -> Resources:
        return Resources(cpus=self.params.num_threads, gpus=gpu_share(self.params.device, self.params.gpus),
                         memory_gb=1.5)

    def setup(self) -> None:
        path = self.weights("model_path")
        torch.set_num_threads(self.params.num_threads)
        self.model = load_light_asd(path, self.device())

    def process_item(self, item: Item) -> None:
        gate_name = self._gate_name(item)
        inputs = speaker_inputs(item)
        if isinstance(inputs, MissingInput):
            self.record(item, {"gate": gate_name, "tracks": []}, n_speaking_tracks=0,
                        max_mean_score=None, speech_coverage=0.0)
            if inputs.rejects(self.params.reject_no_audio, self.params.reject_no_faces):
                self.reject(item, inputs.reason, inputs.detail)
            return
        samples, tracks = inputs
        gate = self._gate(item, gate_name, samples)
        summaries, speaking_frames = [], set()
        for track in tracks:
            summary, frames = self._score(item, samples, track, gate)
            summaries.append(summary)
            speaking_frames.update(frames)
        self.record(item, {"gate": gate_name, "tracks": summaries},
                    n_speaking_tracks=sum(1 for s in summaries if s["segments"]),
                    max_mean_score=max(s["mean_score"] for s in summaries),
                    speech_coverage=round(len(speaking_frames) / max(clip_frame_count(item), 1), 4))

    def _gate_name(self, item: Item) -> str:
        """The gate this clip gets: `gate`, with auto resolved by whether the speech stage ran."""
        has_speech = SPEECH_ARRAY in item.arrays
        if self.params.gate == "speech" and not has_speech:
            raise ValueError("speakers.gate is speech but the clip has no speech.active array: put the "
                             "speech stage before speakers, or set speakers.gate: energy")
        if self.params.gate == "auto":
            return "speech" if has_speech else "energy"
        return self.params.gate

    def _gate(self, item: Item, gate_name: str, samples: np.ndarray) -> np.ndarray | None:
        """bool per 25 fps clip frame: where a frame may speak; None for no gate."""
        if gate_name == "speech":
            return np.asarray(item.arrays[SPEECH_ARRAY], dtype=bool)
        if gate_name == "energy":
            return energy_gate(samples, self.params.energy_floor_db)
        return None

    def _score(self, item: Item, samples: np.ndarray, track: dict,
               gate: np.ndarray | None) -> tuple[dict, list[int]]:
        """The track's summary for meta, and its speaking clip frames."""
        frames = np.asarray(track["frames"], dtype=np.int64)
        gray = item.arrays[f"faces.track{track['id']}.gray112"]
        scores = np.zeros(len(frames), dtype=np.float32)
        for run in contiguous_runs(frames):
            mfcc = track_mfcc(samples, int(frames[run.start]), run.stop - run.start)
            scores[run] = score_track(self.model, mfcc, gray[run], self.params.durations_s,
                                      self.params.max_batch_frames)
        item.arrays[f"speakers.track{track['id']}.score"] = scores
        allowed = None if gate is None else frames_allowed(gate, frames)
        speaking = speaking_mask(frames, scores, allowed, self.params.threshold,
                                 self.params.smooth_frames, round(self.params.min_segment_s * VIDEO_FPS))
        summary = {"id": track["id"], "mean_score": round(float(scores.mean()), 4),
                   "speaking_fraction": round(float(speaking.mean()), 4),
                   "segments": segments_seconds(frames, speaking)}
        return summary, frames[speaking].tolist()


def speaking_mask(frames: np.ndarray, scores: np.ndarray, allowed: np.ndarray | None,
                  threshold: float, smooth_frames: int, min_frames: int) -> np.ndarray:
    """bool per track frame: the smoothed score is above threshold, short gaps filled, the gate's
    disallowed frames (allowed False) removed, then runs shorter than min_frames dropped; each
    contiguous run of the track's frames on its own."""
    speaking = np.zeros(len(frames), dtype=bool)
    for run in contiguous_runs(frames):
        above = fill_short_gaps(moving_average(scores[run], smooth_frames) > threshold, min_frames)
        if allowed is not None:
            above &= allowed[run]
        speaking[run] = drop_short_runs(above, min_frames)
    return speaking


def frames_allowed(gate: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The gate (bool per clip frame) at a track's clip frames; frames past its end are closed."""
    inside = frames < len(gate)
    allowed = np.zeros(len(frames), dtype=bool)
    allowed[inside] = gate[frames[inside]]
    return allowed


def energy_gate(samples: np.ndarray, floor_db: float) -> np.ndarray:
    """bool per 25 fps frame of int16 16 kHz audio: its RMS is above SILENCE_DBFS and at most
    -floor_db dB below the loudest frame's (digital silence and near-silence are closed)."""
    n_frames = -(-len(samples) // SAMPLES_PER_FRAME)
    padded = np.zeros(n_frames * SAMPLES_PER_FRAME, dtype=np.float64)
    padded[:len(samples)] = samples / 32768.0
    rms = np.sqrt(np.mean(padded.reshape(n_frames, SAMPLES_PER_FRAME) ** 2, axis=1))
    with np.errstate(divide="ignore"):
        level_db = 20 * np.log10(rms)
    if n_frames == 0:
        return np.zeros(0, dtype=bool)
    return (level_db > SILENCE_DBFS) & (level_db >= level_db.max() + floor_db)


@dataclass(frozen=True)
class MissingInput:
    """Why a clip cannot be scored: reason no_audio, no_faces or bad_audio, and a detail."""

    reason: str
    detail: str

    def rejects(self, reject_no_audio: bool, reject_no_faces: bool) -> bool:
        """Whether the clip is rejected; bad_audio (a wav that breaks the sample format) always is."""
        return {"no_audio": reject_no_audio, "no_faces": reject_no_faces}.get(self.reason, True)


def speaker_inputs(item: Item) -> tuple[np.ndarray, list[dict]] | MissingInput:
    """The clip's 16 kHz samples and its face tracks (the faces hand-off), or why they are missing."""
    if "faces" not in item.meta:
        raise ValueError("speakers and syncnet read the faces stage's tracks: put faces before them "
                         "in the pipeline")
    clip = item.meta.get("clips") or {}
    if "wav" not in item.members or clip.get("has_audio") is False:
        return MissingInput("no_audio", "the clip has no audio track")
    try:
        samples = read_wav16k(item.members["wav"])
    except ValueError as error:
        return MissingInput("bad_audio", f"wav member: {error}")
    tracks = [t for t in item.meta["faces"].get("tracks") or [] if len(t["frames"])]
    if not tracks:
        return MissingInput("no_faces", "the faces stage found no face track")
    return samples, tracks


def clip_frame_count(item: Item) -> int:
    """The clip's length in 25 fps frames."""
    clip = item.meta.get("clips") or {}
    duration = clip.get("duration")
    if duration is None and item.start is not None and item.end is not None:
        duration = item.end - item.start
    return round((duration or 0.0) * VIDEO_FPS)


def contiguous_runs(frames: np.ndarray) -> list[slice]:
    """Slices of a track's frame list over which the frame index rises by exactly 1."""
    breaks = (np.flatnonzero(np.diff(frames) != 1) + 1).tolist()
    bounds = [0, *breaks, len(frames)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def moving_average(values: np.ndarray, width: int) -> np.ndarray:
    """Centred mean over `width` values, over the values available near the ends."""
    half = width // 2
    padded_sum = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    index = np.arange(len(values))
    lo, hi = np.maximum(index - half, 0), np.minimum(index + width - half, len(values))
    return (padded_sum[hi] - padded_sum[lo]) / (hi - lo)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def fill_short_gaps(speaking: np.ndarray, min_frames: int) -> np.ndarray:
    """Gaps of fewer than min_frames between two speaking runs become speaking."""
    filled = speaking.copy()
    runs = _runs(speaking)
    for (_, gap_start), (gap_end, _) in zip(runs[:-1], runs[1:]):
        if gap_end - gap_start < min_frames:
            filled[gap_start:gap_end] = True
    return filled


def drop_short_runs(speaking: np.ndarray, min_frames: int) -> np.ndarray:
    """Speaking runs of fewer than min_frames become silent."""
    kept = speaking.copy()
    for start, end in _runs(speaking):
        if end - start < min_frames:
            kept[start:end] = False
    return kept


def segments_seconds(frames: np.ndarray, speaking: np.ndarray) -> list[list[float]]:
    """[[start, end], ...] seconds from the clip start of the speaking runs; a run never spans a
    break in the track's frames."""
    segments = []
    for run in contiguous_runs(frames):
        for start, end in _runs(speaking[run]):
            first, last = frames[run][start], frames[run][end - 1]
            segments.append([round(first / VIDEO_FPS, 3), round((last + 1) / VIDEO_FPS, 3)])
    return segments
