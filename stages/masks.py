"""masks: one mask track per identity through the whole clip (Grounding-DINO boxes, SAM2 video tracking).

Grounding-DINO looks for "person" and the clip's subject phrases (from the phrases stage, when it ran)
on key frames every `key_frame_interval_s`; SAM2's video model tracks the people it finds from their
boxes on the frames sampled at `track_fps` (frames in between get masks interpolated from the tracked
neighbours' logits, and the lower of their confidences). The default, 6.25 fps, is the rate at which
the trainer uses masks (one per latent frame: the VAE folds 4 frames at 25 fps into one) and close to
the 6 fps at which SA-V, SAM2's video data, was annotated; tracking faster buys detail the trainer
averages away at about twice the cost.

Identities: when the people stage ran, identity i is person i (arrays "people.boxes" [N, T_pose, 4],
"people.frames" [T_pose]): the mask tracks are matched to the people by the mean IoU of their boxes
over the people samples (Hungarian assignment, at least `min_match_iou`); a person without a matching
track gets an empty mask of confidence 0. Without the people stage, the identities are the mask
tracks seen with confidence at least once, ordered left to right like the people stage's.

Writes `masks.npz`: masks uint8 [N_id, T, h, w] (1 inside; T = the clip's frame count, the longer of
h, w = mask_side), conf float16 [N_id, T]: the sigmoid of SAM2's object score logit on the frame (0
where the identity has no track); frames under 0.5 are flagged (meta low_conf_fraction, and the
trainer leaves them out of the mask loss).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from pydantic import Field
from scipy.optimize import linear_sum_assignment

from curation.stage import Device, FrameSpec, Item, Params, Resources, Stage, WeightFolder, gpu_share, gpus_param, npz_bytes
from stages.models.grounding import NO_PHRASE, Detections, GroundingDino
from stages.models.hf_local import DtypeName, torch_dtype
from stages.models.sam2_video import ClipToTrack, Sam2VideoTracker, TrackedObjects, mask_bounding_boxes
from stages.models.boxes import box_iou

CONFIDENT = 0.5  # the sample format's threshold: frames below it are left out of the mask loss
PERSON = "person"


class MasksParams(Params):
    grounding_model_path: WeightFolder = Field(None, description="a Grounding-DINO checkpoint folder in transformers format, with its BERT tokenizer (e.g. IDEA-Research/grounding-dino-base)")
    sam2_model_path: WeightFolder = Field(None, description="a SAM2 video checkpoint folder in transformers format (e.g. facebook/sam2.1-hiera-large)")
    box_threshold: float = Field(0.35, ge=0, le=1, description="Grounding-DINO keeps boxes whose best text-token probability exceeds this")
    text_threshold: float = Field(0.25, ge=0, le=1, description="a box is labelled with the phrase whose tokens' best probability is highest if it exceeds this")
    max_detections: int = Field(20, ge=1, description="most Grounding-DINO boxes per key frame (the best) that go on to non-maximum suppression")
    nms_iou: float = Field(0.5, gt=0, le=1, description="IoU above which the weaker of two Grounding-DINO boxes on a key frame is dropped")
    key_frame_interval_s: float = Field(1.0, gt=0, description="seconds between the key frames Grounding-DINO looks for people on (a person who enters is found within this)")
    track_fps: float = Field(6.25, gt=0, description="frames per second SAM2 tracks (and Grounding-DINO's key frames are taken from); masks of the frames in between are interpolated. 6.25: one per latent frame of the trainer (4 frames at 25 fps), the rate at which it uses masks")
    new_object_iou: float = Field(0.3, ge=0, le=1, description="a key-frame box starts a new track when its IoU with every tracked mask's box is below this")
    max_objects: int = Field(6, ge=1, description="most tracks per clip (boxes beyond it are not tracked)")
    min_match_iou: float = Field(0.3, ge=0, le=1, description="a track becomes person i of the people stage only when their boxes' mean IoU over the people samples reaches this")
    mask_side: int = Field(128, ge=8, description="longer side of the written masks")
    max_side: int | None = Field(1024, ge=64, description="longer side of the decoded frames both models start from (null: the clip's size)")
    detector_batch_size: int = Field(8, ge=1, description="key frames per Grounding-DINO call")
    tracker_batch_size: int = Field(8, ge=1, description="frames per SAM2 image-encoder call")
    clips_per_batch: int = Field(1, ge=1, description="clips a worker is handed at once; SAM2 steps the objects of all of them together, fewer launches per frame of each")
    device: Device = Field("cuda", description="torch device ('cuda', 'cuda:1', 'cpu')")
    detector_dtype: DtypeName = Field("float32", description="Grounding-DINO's dtype: its deformable attention samples at bfloat16 locations imprecisely (a third of a pixel on the finest level), and torch 2.13's CPU bfloat16 grid_sample returns NaN on its non-contiguous inputs")
    detector_tf32: bool = Field(True, description="Grounding-DINO's float32 matrix products on a GPU in TF32 (tensor cores, inputs rounded to a 10-bit mantissa, 5e-4 relative; cuDNN's convolutions already are by default), 1.6x faster on an H100; the deformable attention still samples at float32 locations. CPUs always compute in float32")
    tracker_dtype: DtypeName = Field("bfloat16", description="SAM2's dtype (SAM2 itself keeps its memories in bfloat16)")
    tracker_cuda_graphs: bool = Field(True, description="on a GPU, replay SAM2's tracking step (memory attention, mask decoder, memory encoder) from CUDA graphs, one captured per batch size and memory layout, instead of launching its few hundred small kernels from Python each frame (the same results; about 1 GiB more GPU memory)")
    gpus: float = gpus_param(1.0)


class Masks(Stage):
    name = "masks"
    sample_fields = {"identities": []}
    Params = MasksParams
    adds_members = ("masks.npz",)
    reads_arrays = ("people.boxes", "people.frames")

    @classmethod
    def annotate_sample(cls, document: dict) -> None:
        """Grounding phrases join the identities found so far (identity i is the same person), or
        the masked identities are the sample's identities when no earlier stage found people."""
        masked = document["stages"].get(cls.name, {}).get("identities", [])
        if not document["identities"]:
            document["identities"] = [dict(identity) for identity in masked]
            return
        for identity, grounded in zip(document["identities"], masked):
            identity.setdefault("phrase", grounded.get("phrase"))

    def resources(self) -> Resources:
        return Resources(cpus=2, gpus=gpu_share(self.params.device, self.params.gpus), memory_gb=8)

    def items_per_batch(self) -> int:
        return self.params.clips_per_batch

    def frame_specs(self) -> list[FrameSpec]:
        return [FrameSpec(fps=self.params.track_fps, max_side=self.params.max_side)]

    def setup(self) -> None:
        p = self.params
        grounding, sam2 = self.weights("grounding_model_path"), self.weights("sam2_model_path")
        device = self.device()
        self.detector = GroundingDino(grounding, device, torch_dtype(p.detector_dtype), p.box_threshold,
                                      p.text_threshold, p.nms_iou, p.detector_batch_size, p.max_detections,
                                      tf32=p.detector_tf32)
        self.tracker = Sam2VideoTracker(sam2, device, torch_dtype(p.tracker_dtype), p.tracker_batch_size,
                                        p.new_object_iou, p.max_objects, cuda_graphs=p.tracker_cuda_graphs)

    def process(self, items: list[Item]) -> list[Item]:
        """Detect on each clip's key frames, then track the clips with detections together."""
        found = [(item, detected) for item in items if (detected := self._detect(item)) is not None]
        tracked = self.tracker.track_clips([detected.clip for _, detected in found])
        for (item, detected), objects in zip(found, tracked):
            masks, conf = spread_to_clip_frames(detected.tracked_frames, objects.logits, objects.presence,
                                                item.meta["clips"]["n_frames"])
            labels = object_phrases(objects, dict(zip(detected.keys.tolist(), detected.detections)), detected.phrases)
            self._annotate(item, masks, conf, labels, objects, detected.tracked_frames, len(detected.keys))
        return items

    def _detect(self, item: Item) -> _Detected | None:
        """Grounding-DINO's boxes on the clip's key frames, or None with the item rejected."""
        frames = item.frames[self.frame_specs()[0]]
        if len(frames.images) == 0:
            self.reject(item, "no_frames", "no frame was decoded from the clip")
            return None
        clip = item.meta["clips"]
        track_rate = min(self.params.track_fps, clip["fps"])
        keys = np.arange(0, len(frames.images), max(1, round(self.params.key_frame_interval_s * track_rate)))
        prompt = self.detector.prompt([PERSON, *subject_phrases(item)])
        detections = self.detector.detect(frames.images[keys], prompt)
        boxes_at = {int(j): found.boxes for j, found in zip(keys, detections) if len(found.boxes)}
        if not boxes_at:
            self.record(item, {"identities": [], "key_frames": len(keys), "detections": 0}, n_identities=0)
            self.reject(item, "no_detections", f"Grounding-DINO found nobody on {len(keys)} key frames")
            return None
        size = mask_size(clip["width"], clip["height"], self.params.mask_side)
        return _Detected(keys, detections, prompt.phrases, ClipToTrack(frames.images, boxes_at, size),
                         clip_frame_indices(frames.times, clip["fps"], clip["n_frames"]))

    def _annotate(self, item: Item, masks: np.ndarray, conf: np.ndarray, labels: list[str | None],
                  objects: TrackedObjects, tracked_frames: np.ndarray, n_keys: int) -> None:
        chosen, match_iou = self._identities(item, masks, conf)
        identity_masks = np.zeros((len(chosen), *masks.shape[1:]), dtype=np.uint8)
        identity_conf = np.zeros((len(chosen), masks.shape[1]), dtype=np.float16)
        for i, track in enumerate(chosen):
            if track is not None:
                identity_masks[i], identity_conf[i] = masks[track], conf[track]
        item.members["masks.npz"] = npz_bytes(masks=identity_masks, conf=identity_conf)
        identities = [_describe(i, track, identity_masks[i], identity_conf[i], labels, objects, tracked_frames,
                                None if match_iou is None else match_iou[i]) for i, track in enumerate(chosen)]
        confidences = identity_conf.astype(np.float32)
        meta = {"identities": identities, "mask_size": list(masks.shape[2:]), "tracked_frames": len(tracked_frames),
                "key_frames": n_keys, "tracks": len(objects.first_frame),
                "detections": int(sum(len(found) for found in objects.detection_objects.values()))}
        self.record(item, meta, n_identities=len(chosen), n_tracks=len(objects.first_frame),
                    unmatched=sum(track is None for track in chosen),
                    low_conf_fraction=round(float((confidences < CONFIDENT).mean()), 4) if confidences.size else 1.0,
                    mean_conf=round(float(confidences.mean()), 4) if confidences.size else 0.0)
        if not (confidences >= CONFIDENT).any():
            self.reject(item, "no_masks", f"no identity's mask reaches confidence {CONFIDENT} on any frame")

    def _identities(self, item: Item, masks: np.ndarray,
                    conf: np.ndarray) -> tuple[list[int | None], list[float] | None]:
        """The track of each identity (None: no track) and, with the people stage, its match IoU."""
        clip = item.meta["clips"]
        boxes = mask_bounding_boxes(masks.reshape(-1, *masks.shape[2:]) > 0, (clip["height"], clip["width"]))
        boxes = boxes.reshape(*masks.shape[:2], 4)
        boxes[conf < CONFIDENT] = np.nan
        if "people.boxes" not in item.arrays:
            return left_to_right(boxes), None
        people_frames = item.arrays["people.frames"]
        return match_mask_tracks_to_people(boxes[:, people_frames], item.arrays["people.boxes"], self.params.min_match_iou)


@dataclass
class _Detected:
    keys: np.ndarray  # the key frames (indices of the tracked frames)
    detections: list[Detections]  # per key frame
    phrases: list[str]  # the prompt's phrases, which the detections' labels index
    clip: ClipToTrack
    tracked_frames: np.ndarray  # clip frame index of each tracked frame


def subject_phrases(item: Item) -> list[str]:
    """The phrases stage's person phrases, if it ran."""
    subjects = item.meta.get("phrases", {}).get("subjects", [])
    return [subject["phrase"] for subject in subjects if subject.get("kind", PERSON) == PERSON]


def clip_frame_indices(times: np.ndarray, fps: float, n_frames: int) -> np.ndarray:
    """Clip frame index of each decoded frame from its time (increasing, within the clip)."""
    indices = np.clip(np.round(np.asarray(times) * fps), 0, n_frames - 1).astype(np.int64)
    return np.maximum.accumulate(indices)


def mask_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(h, w) of masks whose longer side is `side`, aspect ratio of the clip."""
    scale = side / max(width, height)
    return max(1, round(height * scale)), max(1, round(width * scale))


def spread_to_clip_frames(tracked_frames: np.ndarray, logits: np.ndarray, presence: np.ndarray,
                          n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Masks uint8 [O, T, h, w] and confidences float32 [O, T] on every clip frame from tracks on some of
    them (tracked_frames [K] increasing, logits [O, K, h, w], presence [O, K]): logits interpolated
    linearly between the nearest tracked frames (held beyond the ends), confidence the lower of the two."""
    frames, first = np.unique(tracked_frames, return_index=True)
    logits, presence = logits[:, first], presence[:, first]
    position = np.interp(np.arange(n_frames), frames, np.arange(len(frames)))
    left = np.floor(position).astype(np.int64)
    right = np.minimum(left + 1, len(frames) - 1)
    weight = (position - left).astype(np.float32)
    blended = (logits[:, left].astype(np.float32) * (1 - weight)[None, :, None, None]
               + logits[:, right].astype(np.float32) * weight[None, :, None, None])
    conf = np.where(weight > 0, np.minimum(presence[:, left], presence[:, right]), presence[:, left])
    return (blended > 0).astype(np.uint8), conf.astype(np.float32)


def match_mask_tracks_to_people(track_boxes: np.ndarray, people_boxes: np.ndarray,
                                min_iou: float) -> tuple[list[int | None], list[float]]:
    """For each person, the track matched to it (or None) and their mean IoU.

    track_boxes [O, S, 4] and people_boxes [N, S, 4] on the same S sampled frames, NaN where absent.
    A pair's score is the mean IoU over the frames the person is present on (an absent track counts
    0); the Hungarian assignment maximises the total, and pairs below min_iou stay unmatched."""
    n_people = len(people_boxes)
    score = np.zeros((len(track_boxes), n_people))
    for p in range(n_people):
        present = np.isfinite(people_boxes[p, :, 0])
        if present.any():
            for o in range(len(track_boxes)):
                score[o, p] = _mean_iou(track_boxes[o, present], people_boxes[p, present])
    chosen: list[int | None] = [None] * n_people
    iou = [0.0] * n_people
    for o, p in zip(*linear_sum_assignment(-score)):
        if score[o, p] >= min_iou:
            chosen[p], iou[p] = int(o), round(float(score[o, p]), 4)
    return chosen, iou


def _mean_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean IoU of paired boxes [S, 4]; a NaN box overlaps nothing."""
    both = np.isfinite(a[:, 0])
    ious = np.zeros(len(a))
    ious[both] = np.diag(box_iou(a[both], b[both]))
    return float(ious.mean())


def left_to_right(track_boxes: np.ndarray) -> list[int | None]:
    """Tracks with at least one confident box (track_boxes [O, T, 4], NaN elsewhere), ordered by the
    mean x of their box centres."""
    seen = [o for o in range(len(track_boxes)) if np.isfinite(track_boxes[o, :, 0]).any()]
    return sorted(seen, key=lambda o: float(np.nanmean(track_boxes[o, :, 0] + track_boxes[o, :, 2])))


def object_phrases(objects: TrackedObjects, detections: dict[int, Detections], phrases: list[str]) -> list[str | None]:
    """Each track's phrase: the most frequent specific phrase among the detections it was found or
    continued from, else "person" if any was labelled so, else None."""
    votes: list[Counter] = [Counter() for _ in objects.first_frame]
    for frame, owners in objects.detection_objects.items():
        for owner, phrase in zip(owners, detections[frame].phrases):
            if owner >= 0 and phrase != NO_PHRASE:
                votes[owner][phrases[phrase]] += 1
    labels = []
    for counter in votes:
        specific = [(count, phrase) for phrase, count in counter.items() if phrase != PERSON]
        labels.append(max(specific)[1] if specific else (PERSON if counter else None))
    return labels


def _describe(identity: int, track: int | None, masks: np.ndarray, conf: np.ndarray, labels: list[str | None],
              objects: TrackedObjects, tracked_frames: np.ndarray, match_iou: float | None) -> dict:
    confident = conf >= CONFIDENT
    area = masks.reshape(len(masks), -1).mean(axis=1)
    return {
        "id": identity,
        "track": track,
        "phrase": None if track is None else labels[track],
        "match_iou": match_iou,
        "first_frame": None if track is None else int(tracked_frames[objects.first_frame[track]]),
        "mean_conf": round(float(conf.astype(np.float32).mean()), 4),
        "low_conf_fraction": round(float(1 - confident.mean()), 4),
        "mean_area": round(float(area[confident].mean()), 4) if confident.any() else 0.0,
    }
