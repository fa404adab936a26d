"""identities: audio routed to people. Face tracks are matched to the people stage's person tracks by
overlap over time, and each identity gets its speaking score per clip frame and its speaking segments.

This is the paper's audio-to-identity alignment (active-speaker boxes matched to identity boxes) and
MIT's (face tracks matched to person boxes). A face track belongs to the person whose box contains it
most of the time they are both seen; several face tracks may belong to one person (a track broken by
an occlusion), none to two. Without a people stage, each face track is an identity of its own.

Identities do not depend on the people stage alone: a face track that no person owns (a close-up
the person detector missed, a face whose body is out of frame) becomes an identity of its own, after
the people's (so identity i < N_people is still person i of pose.npz and masks.npz), when it is seen
for at least `min_face_only_seconds` and its median face box is at least `min_face_only_size` of the
frame's shorter side (brief and tiny faces stay listed as unmatched_face_tracks). Each identity says
where it comes from: source "people" or "face".

Writes `speak.npz`: `score` float16 [N_id, T] over the clip's frames (the identity's raw Light-ASD
logit, ungated: its speaking_segments are what the speakers stage's threshold and speech gate made of
it; NaN where none of its face tracks is seen), and per identity in the json:
face_tracks, speaking_segments (seconds from the clip start), mean_speaking_score, source. A face-only
identity's mean_box is its face track's mean box, and its human_size and motion are null (no pose).
"""
from __future__ import annotations


import numpy as np
from pydantic import Field
from scipy.optimize import linear_sum_assignment

from curation.stage import Item, Params, Stage, npz_bytes
from stages.models.audio_features import VIDEO_FPS


class IdentitiesParams(Params):
    min_containment: float = Field(0.5, ge=0, le=1, description="a face track joins a person when, averaged over the times both are seen, at least this fraction of the face box lies inside the person box")
    face_only_identities: bool = Field(True, description="a face track no person owns becomes an identity of its own (after the people), so its speaking scores are kept; false: it is only listed in unmatched_face_tracks")
    min_face_only_seconds: float = Field(1.0, ge=0, description="a face-only identity's track is seen for at least this many seconds (25 fps frames it spans, gaps bridged by the faces stage included)")
    min_face_only_size: float = Field(0.1, ge=0, le=1, description="a face-only identity's median face box (its longer side) is at least this fraction of the frame's shorter side (tiny background faces stay unmatched)")


class Identities(Stage):
    name = "identities"
    sample_fields = {"identities": []}
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
            identities = [{"id": i, "face_tracks": [t["id"]], "source": "face"} for i, t in enumerate(tracks)]
        else:
            owner = assign_face_tracks_to_people(tracks, item.arrays.get("people.boxes"),
                                                 item.arrays.get("people.frames"), item.meta["clips"]["fps"],
                                                 self.params.min_containment)
            identities = [dict(person, face_tracks=[t for t, p in owner.items() if p == person["id"]], source="people")
                          for person in people]
            if self.params.face_only_identities:
                identities += [face_only_identity(len(identities) + k, track, item.meta["clips"])
                               for k, track in enumerate(t for t in tracks if t["id"] not in owner
                                                         and self._substantial(t, item.meta["clips"]))]
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
                    n_face_only_identities=sum(1 for i in identities if i["source"] == "face"),
                    n_speaking_identities=sum(1 for i in identities if i["speaking_segments"]))

    def _substantial(self, track: dict, clip: dict) -> bool:
        """Whether an unowned face track is seen long enough and large enough to be an identity."""
        frames, boxes = track["frames"], np.asarray(track["boxes"], dtype=np.float64).reshape(-1, 4)
        if not frames:
            return False
        seconds = (frames[-1] - frames[0] + 1) / VIDEO_FPS
        size = np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
        return (seconds >= self.params.min_face_only_seconds
                and size >= self.params.min_face_only_size * min(clip["width"], clip["height"]))


def face_only_identity(identity: int, track: dict, clip: dict) -> dict:
    """An identity made of one face track no person owns: the people stage's fields where they can be
    had from a face (mean box, presence over the clip's 25 fps frames), null where they need a pose."""
    boxes = np.asarray(track["boxes"], dtype=np.float64).reshape(-1, 4)
    n_frames_25 = max(1, round(clip["duration"] * VIDEO_FPS))
    return {"id": identity, "human_size": None, "motion_amplitude": None, "motion_class": None,
            "mean_box": [round(float(v), 1) for v in boxes.mean(axis=0)],
            "presence": round(min(1.0, len(track["frames"]) / n_frames_25), 4),
            "face_tracks": [track["id"]], "source": "face"}


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
