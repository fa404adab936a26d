"""identities: audio routed to people. Face tracks are matched to the people stage's person tracks by
overlap over time, and each identity gets its speaking score per clip frame and its speaking segments.

This is the paper's audio-to-identity alignment (active-speaker boxes matched to identity boxes) and
MIT's (face tracks matched to person boxes). A face track belongs to the person whose box contains it
most of the time they are both seen; several face tracks may belong to one person (a track broken by
an occlusion), none to two. Without a people stage, each face track is an identity of its own.

Writes `speak.npz`: `score` float16 [N_id, T] over the clip's frames (the identity's Light-ASD score,
> 0 leans to speaking; NaN where none of its face tracks is seen), and per identity in the json:
face_tracks, speaking_segments (seconds from the clip start), mean_speaking_score.
"""
from __future__ import annotations


import numpy as np
from pydantic import Field
from scipy.optimize import linear_sum_assignment

from curation.stage import Item, Params, Stage, npz_bytes
from stages.models.audio_features import VIDEO_FPS


class IdentitiesParams(Params):
    min_containment: float = Field(0.5, ge=0, le=1, description="a face track joins a person when, averaged over the times both are seen, at least this fraction of the face box lies inside the person box")


class Identities(Stage):
    name = "identities"
    requires = ("faces", "speakers")
    Params = IdentitiesParams
    adds_members = ("speak.npz",)
    reads_arrays = ("people.boxes", "people.frames", "speakers.track*.score")

    @classmethod
    def annotate_sample(cls, document: dict) -> None:
        """The most specific identities: faces and speech matched to people; a grounding phrase an
        earlier stage gave identity i stays with it (identity i is the same person)."""
        found = document["stages"].get(cls.name, {}).get("identities")
        if found is None:
            return
        earlier = document["identities"]
        document["identities"] = [dict(identity) for identity in found]
        for identity, before in zip(document["identities"], earlier):
            if "phrase" in before:
                identity.setdefault("phrase", before["phrase"])

    def process_item(self, item: Item) -> None:
        tracks = item.meta["faces"].get("tracks") or []
        speaking = {t["id"]: t for t in (item.meta.get("speakers") or {}).get("tracks", [])}
        people = (item.meta.get("people") or {}).get("identities")
        if people is None:
            identities = [{"id": i, "face_tracks": [t["id"]]} for i, t in enumerate(tracks)]
        else:
            owner = assign_face_tracks_to_people(tracks, item.arrays.get("people.boxes"),
                                                 item.arrays.get("people.frames"), item.meta["clips"]["fps"],
                                                 self.params.min_containment)
            identities = [dict(person, face_tracks=[t for t, p in owner.items() if p == person["id"]])
                          for person in people]
        n_frames = item.meta["clips"]["n_frames"]
        scores = np.full((len(identities), n_frames), np.nan, dtype=np.float32)
        for row, identity in enumerate(identities):
            for track_id in identity["face_tracks"]:
                track = next(t for t in tracks if t["id"] == track_id)
                _paint(scores[row], track["frames"], item.arrays.get(f"speakers.track{track_id}.score"),
                       item.meta["clips"]["fps"])
            segments = merge_segments(s for t in identity["face_tracks"] for s in speaking.get(t, {}).get("segments", []))
            seen = scores[row][~np.isnan(scores[row])]
            identity.update(speaking_segments=segments,
                            mean_speaking_score=round(float(seen.mean()), 4) if seen.size else None)
        item.members["speak.npz"] = npz_bytes(score=scores.astype(np.float16))
        unmatched = sorted(set(t["id"] for t in tracks) - {t for i in identities for t in i["face_tracks"]})
        self.record(item, {"identities": identities, "unmatched_face_tracks": unmatched},
                    n_identities=len(identities),
                    n_speaking_identities=sum(1 for i in identities if i["speaking_segments"]))


def assign_face_tracks_to_people(tracks: list[dict], person_boxes: np.ndarray | None,
                                 person_frames: np.ndarray | None, clip_fps: float,
                                 min_containment: float) -> dict[int, int]:
    """face track id -> person id. Containment (the fraction of the face box inside the person box)
    is averaged over the person's sampled frames where the track is seen at the nearest 25 fps frame;
    tracks are assigned one person each (Hungarian on that score), persons may take several tracks."""
    if person_boxes is None or not len(tracks) or not len(person_boxes):
        return {}
    sample_times = np.asarray(person_frames) / clip_fps
    containment = np.zeros((len(tracks), len(person_boxes)))
    for t, track in enumerate(tracks):
        frames = np.asarray(track["frames"])
        boxes = np.asarray(track["boxes"], dtype=np.float64)
        nearest = np.searchsorted(frames, np.round(sample_times * VIDEO_FPS).astype(int))
        for p, person in enumerate(person_boxes):
            values = [_inside_fraction(boxes[i], person[k]) for k, i in enumerate(nearest)
                      if i < len(frames) and frames[i] == round(sample_times[k] * VIDEO_FPS)
                      and not np.isnan(person[k]).any()]
            containment[t, p] = np.mean(values) if values else 0.0
    owner: dict[int, int] = {}
    for t, p in zip(*linear_sum_assignment(-containment)):
        if containment[t, p] >= min_containment:
            owner[tracks[t]["id"]] = p
    for t, track in enumerate(tracks):  # more tracks than people: each leftover joins its best person
        if track["id"] not in owner and containment[t].max() >= min_containment:
            owner[track["id"]] = int(containment[t].argmax())
    return owner


def merge_segments(segments) -> list[list[float]]:
    """Sorted union of [start, end] segments (an identity's tracks may overlap in time)."""
    merged: list[list[float]] = []
    for start, end in sorted(segments):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def _inside_fraction(face: np.ndarray, person: np.ndarray) -> float:
    width = max(0.0, min(face[2], person[2]) - max(face[0], person[0]))
    height = max(0.0, min(face[3], person[3]) - max(face[1], person[1]))
    area = max((face[2] - face[0]) * (face[3] - face[1]), 1e-6)
    return width * height / area


def _paint(row: np.ndarray, track_frames: list[int], track_scores: np.ndarray | None, clip_fps: float) -> None:
    """Write a track's 25 fps scores onto the clip's frames, each clip frame taking the score of the
    25 fps frame at its time."""
    if track_scores is None or not len(track_frames):
        return
    frames = np.asarray(track_frames)
    clip_frames = np.arange(len(row))
    at_25 = np.round(clip_frames / clip_fps * VIDEO_FPS).astype(int)
    index = np.searchsorted(frames, at_25)
    hit = (index < len(frames)) & (frames[np.minimum(index, len(frames) - 1)] == at_25)
    row[hit] = track_scores[index[hit]]
