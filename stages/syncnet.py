"""syncnet: lip-sync quality of each face track (SyncNet Sync-C / Sync-D / AV offset), and the
filter that drops clips whose speakers are out of sync or dubbed.

Reads the `faces` hand-off (meta["faces"]["tracks"], arrays "faces.track<id>.rgb224" uint8
[T, 224, 224, 3]) and the clip's `wav`; if the `speakers` stage ran, also its speaking segments.

For each track: SyncNet embeds every 5-frame window and the 0.2 s of audio under it, distances are
taken at audio shifts of -vshift..+vshift frames, and (as syncnet_python's SyncNetInstance):
Sync-D = the smallest mean distance over shifts, Sync-C = median minus smallest, offset =
vshift - best shift index. The per-identity variant averages only the windows that lie wholly
inside the track's own speaking segments: it measures a person's sync where that person speaks,
which the whole-track value dilutes with their listening.

Filter: the speaking tracks (with a speaking window, by `speakers`; every track when `speakers`
did not run) must all reach min_sync_conf Sync-C (speaking-window Sync-C when available),
otherwise the clip is rejected as low_sync.

Writes meta["syncnet"]: {"vshift", "tracks": [{"id", "offset", "sync_c", "sync_d", "n_windows",
"speaking": {same keys} or null}]}; scores min_speaking_sync_c (the value the filter checks,
null when no track speaks), max_sync_c (best whole-track Sync-C).
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch
from pydantic import Field

from curation.stage import Device, Item, Params, Resources, Stage, WeightFile, gpu_share, gpus_param
from stages.models.audio_features import VIDEO_FPS, track_mfcc
from stages.models.syncnet import (DEFAULT_VSHIFT, FRAMES_PER_WINDOW, SyncScore, distance_table,
                                   embed_track, load_syncnet, sync_score)
from stages.speakers import MissingInput, contiguous_runs, speaker_inputs


class SyncNetParams(Params):
    model_path: WeightFile = Field(None, description="SyncNet weights in syncnet_python's syncnet_v2.model layout")
    device: Device = Field("cpu", description="torch device for SyncNet (cpu, cuda, cuda:1, ...)")
    gpus: float = gpus_param(0.5)
    num_threads: int = Field(1, ge=1, description="torch CPU threads (one per worker scales best; more threads help a lone worker on an idle machine)")
    windows_per_batch: int = Field(20, ge=1, description="5-frame windows per SyncNet forward pass (syncnet_python's default)")
    vshift: int = Field(DEFAULT_VSHIFT, ge=0, description="audio shifts searched, in 25 fps frames each way")
    min_sync_conf: float = Field(3.0, description="reject clips in which a speaking track's Sync-C is below this (LatentSync uses 3)")
    reject_no_audio: bool = Field(True, description="reject clips without audio (no_audio); false keeps them unscored")
    reject_no_faces: bool = Field(True, description="reject clips without face tracks (no_faces); false keeps them unscored")


class SyncNetStage(Stage):
    name = "syncnet"
    requires = ("faces",)
    reads_members = ("wav",)
    reads_arrays = ("faces.track*.rgb224",)
    Params = SyncNetParams

    def resources(self) -> Resources:
        return Resources(cpus=self.params.num_threads, gpus=gpu_share(self.params.device, self.params.gpus),
                         memory_gb=2.0)

    def setup(self) -> None:
        path = self.weights("model_path")
        torch.set_num_threads(self.params.num_threads)
        self.model = load_syncnet(path, self.device())

    def process_item(self, item: Item) -> None:
        inputs = speaker_inputs(item)
        if isinstance(inputs, MissingInput):
            self.record(item, {"vshift": self.params.vshift, "tracks": []},
                        min_speaking_sync_c=None, max_sync_c=None)
            if inputs.rejects(self.params.reject_no_audio, self.params.reject_no_faces):
                self.reject(item, inputs.reason, inputs.detail)
            return
        samples, tracks = inputs
        speaking = _speaking_frames(item)
        results = [self._track_result(item, samples, track, speaking) for track in tracks]
        checked = _filter_values(results, speakers_ran=speaking is not None)
        sync_values = [r["sync_c"] for r in results if r["sync_c"] is not None]
        self.record(item, {"vshift": self.params.vshift, "tracks": results},
                    min_speaking_sync_c=min(checked.values(), default=None),
                    max_sync_c=max(sync_values, default=None))
        low = {track_id: value for track_id, value in checked.items()
               if value < self.params.min_sync_conf}
        if low:
            self.reject(item, "low_sync", "speaking tracks below Sync-C "
                        f"{self.params.min_sync_conf}: " + ", ".join(
                            f"track {track_id} {value:.2f}" for track_id, value in low.items()))

    def _track_result(self, item: Item, samples: np.ndarray, track: dict,
                      speaking: dict[int, set[int]] | None) -> dict:
        frames = np.asarray(track["frames"], dtype=np.int64)
        crops = item.arrays[f"faces.track{track['id']}.rgb224"]
        tables, window_frames = [], []
        for run in contiguous_runs(frames):
            n_frames = run.stop - run.start
            mfcc = track_mfcc(samples, int(frames[run.start]), n_frames)
            lips, sounds = embed_track(self.model, crops[run], mfcc, self.params.windows_per_batch)
            tables.append(distance_table(lips, sounds, self.params.vshift))
            window_frames += [frames[run.start + i:run.start + i + FRAMES_PER_WINDOW]
                              for i in range(len(lips))]
        table = np.concatenate(tables)
        result = {"id": track["id"], **_score_dict(sync_score(table)), "speaking": None}
        if speaking is not None:
            own = speaking.get(track["id"], set())
            inside = np.array([all(int(f) in own for f in window) for window in window_frames],
                              dtype=bool)
            result["speaking"] = _score_dict(sync_score(table[inside])) if inside.any() else None
        return result


def _score_dict(score: SyncScore | None) -> dict:
    if score is None:
        return {"offset": None, "sync_c": None, "sync_d": None, "n_windows": 0}
    values = asdict(score)
    return {**values, "sync_c": round(values["sync_c"], 4), "sync_d": round(values["sync_d"], 4)}


def _speaking_frames(item: Item) -> dict[int, set[int]] | None:
    """Per track id, the 25 fps clip frames inside its speaking segments; None without `speakers`."""
    summary = item.meta.get("speakers")
    if summary is None:
        return None
    return {track["id"]: {frame for start, end in track["segments"]
                          for frame in range(round(start * VIDEO_FPS), round(end * VIDEO_FPS))}
            for track in summary.get("tracks", [])}


def _filter_values(results: list[dict], speakers_ran: bool) -> dict[int, float]:
    """Per speaking track, the Sync-C the filter checks: speaking-window Sync-C after `speakers`,
    whole-track Sync-C for every scored track without it."""
    if speakers_ran:
        return {r["id"]: r["speaking"]["sync_c"] for r in results if r["speaking"] is not None}
    return {r["id"]: r["sync_c"] for r in results if r["sync_c"] is not None}
