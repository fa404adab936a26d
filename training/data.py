"""The reader side of docs/sample-format.md: curated shards -> training examples in buckets.

One example is a window of one clip at the training fps and one bucket resolution, with every identity
of the clip: its reference image (augmented), its per-token ground-truth mask and mask confidence per
latent frame, and its own audio features (the clip's audio where it speaks, silence elsewhere).
Examples are batched only with examples of the same bucket: (height, width, frames, identities).
"""
from __future__ import annotations

import glob
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Iterator

import braceexpand
import cv2
import fsspec
import numpy as np
import torch
import webdataset as wds

from curation.index import SHARD_LIST
from curation.storage import Storage, is_url, open_url
from training.audio import SAMPLE_RATE, AudioFeaturizer, features_at_frames
from training.config import DataConfig
from training.geometry import TokenGeometry
from training.media import decode_png, decode_video, read_wav

HEAD_FRACTION = 0.22  # share of a full-body reference's height taken as the head (clothing crops remove it)


@dataclass
class ClipSample:
    """One decoded shard sample, whole clip."""

    key: str
    frames: np.ndarray  # uint8 [T, H, W, 3]
    fps: float
    audio: np.ndarray | None  # float32 [S] at 16 kHz
    masks: np.ndarray | None  # uint8 [N, T, h, w]
    conf: np.ndarray | None  # float32 [N, T]
    speak: np.ndarray | None  # float32 [N, T] active-speaker logits
    refs: list[np.ndarray | None]  # full-body references
    faces: list[np.ndarray | None]  # head crops
    caption: str
    segments: list[list[list[float]]] | None  # per identity, seconds; None when the json has none

    @property
    def num_identities(self) -> int:
        return len(self.refs)


def _npz(data: bytes | None) -> dict[str, np.ndarray] | None:
    return None if data is None else dict(np.load(io.BytesIO(data)))


def decode_sample(raw: dict) -> ClipSample:
    """Undecoded webdataset members (bytes) -> ClipSample."""
    meta = json.loads(raw["json"])
    identities = meta.get("identities") or []
    count = max(len(identities), sum(1 for name in raw if name.startswith("ref_")))
    frames, fps = decode_video(raw["mp4"])
    masks, speak = _npz(raw.get("masks.npz")), _npz(raw.get("speak.npz"))
    has_segments = bool(identities) and all("speaking_segments" in ident for ident in identities)
    return ClipSample(
        key=raw["__key__"],
        frames=frames,
        fps=float(meta.get("clip", {}).get("fps") or fps),
        audio=read_wav(raw["wav"], SAMPLE_RATE) if "wav" in raw else None,
        masks=None if masks is None else masks["masks"],
        conf=None if masks is None else masks["conf"].astype(np.float32),
        speak=None if speak is None else speak["score"].astype(np.float32),
        refs=[_png(raw.get(f"ref_{i}.png")) for i in range(count)],
        faces=[_png(raw.get(f"face_{i}.png")) for i in range(count)],
        caption=meta.get("caption") or "",
        segments=[ident["speaking_segments"] for ident in identities] if has_segments else None,
    )


def _png(data: bytes | None) -> np.ndarray | None:
    return None if data is None else decode_png(data)


def is_trainable(clip: ClipSample) -> bool:
    """Training needs identities with references, masks, and audio to route."""
    return (
        clip.num_identities > 0
        and all(ref is not None for ref in clip.refs)
        and clip.masks is not None
        and clip.audio is not None
        and (clip.segments is not None or clip.speak is not None)
    )


def speaking_samples(clip: ClipSample, identity: int, num_samples: int) -> np.ndarray:
    """bool [S]: where identity speaks, from its speaking segments, else from speak scores > 0."""
    speaking = np.zeros(num_samples, bool)
    if clip.segments is not None:
        for start, end in clip.segments[identity]:
            speaking[int(round(start * SAMPLE_RATE)) : int(round(end * SAMPLE_RATE))] = True
        return speaking
    frame_of_sample = np.minimum((np.arange(num_samples) / SAMPLE_RATE * clip.fps).astype(int), clip.speak.shape[1] - 1)
    return clip.speak[identity][frame_of_sample] > 0


def identity_audio(clip: ClipSample, identity: int) -> np.ndarray:
    """The clip's audio where `identity` speaks, silence elsewhere."""
    return np.where(speaking_samples(clip, identity, len(clip.audio)), clip.audio, 0.0).astype(np.float32)


@dataclass(frozen=True)
class Window:
    start_frame: int  # at the training fps
    frames: int
    height: int
    width: int

    def times(self, fps: float) -> np.ndarray:
        return (self.start_frame + np.arange(self.frames)) / fps


def plan_window(clip: ClipSample, config: DataConfig, rng: np.random.Generator) -> Window | None:
    """Longest frame bucket that fits the clip, random start, resolution bucket nearest in aspect."""
    available = int(len(clip.frames) / clip.fps * config.fps)
    fitting = [count for count in config.frame_counts if count <= available]
    if not fitting:
        return None
    frames = max(fitting)
    height, width = clip.frames.shape[1:3]
    bucket = min(config.resolutions, key=lambda hw: abs(np.log((hw[1] / hw[0]) / (width / height))))
    return Window(int(rng.integers(0, available - frames + 1)), frames, int(bucket[0]), int(bucket[1]))


@dataclass(frozen=True)
class CenterCrop:
    """Resize-then-center-crop from clip pixels to the bucket, as a box in clip pixels."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def fit(cls, height: int, width: int, out_height: int, out_width: int) -> "CenterCrop":
        scale = max(out_height / height, out_width / width)
        crop_w, crop_h = out_width / scale, out_height / scale
        x0, y0 = (width - crop_w) / 2, (height - crop_h) / 2
        return cls(x0, y0, x0 + crop_w, y0 + crop_h)

    def apply(self, image: np.ndarray, out_height: int, out_width: int, source_scale: float = 1.0) -> np.ndarray:
        """Crop the box (scaled by source_scale for images at another resolution) and resize."""
        x0, y0, x1, y1 = (int(round(v * source_scale)) for v in (self.x0, self.y0, self.x1, self.y1))
        return cv2.resize(image[y0:y1, x0:x1], (out_width, out_height), interpolation=cv2.INTER_AREA)


def fit_reference(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Fit into size (height, width) keeping the aspect ratio, padding with white."""
    out_h, out_w = size
    scale = min(out_h / image.shape[0], out_w / image.shape[1])
    new_h, new_w = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
    canvas = np.full((out_h, out_w, 3), 255, np.uint8)
    top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return canvas


def _figure_rows(reference: np.ndarray) -> tuple[int, int]:
    """First and last row holding non-white pixels."""
    rows = np.flatnonzero((reference < 250).any(axis=(1, 2)))
    return (int(rows[0]), int(rows[-1]) + 1) if len(rows) else (0, reference.shape[0])


def augment_reference(full_body: np.ndarray, face: np.ndarray | None, probs: dict[str, float], rng) -> np.ndarray:
    """Show only the head, the full body, or the clothing (head whitened) of an identity.

    The head is face_<i>.png when the sample has it, else the top HEAD_FRACTION of the figure."""
    kinds = list(probs)
    kind = kinds[rng.choice(len(kinds), p=np.array([probs[k] for k in kinds]) / sum(probs.values()))]
    if kind == "body":
        return full_body
    top, bottom = _figure_rows(full_body)
    head_end = top + int(round(HEAD_FRACTION * (bottom - top)))
    if kind == "face":
        return face if face is not None else full_body[top:head_end]
    if kind == "clothing":
        clothing = full_body.copy()
        clothing[:head_end] = 255
        return clothing
    raise ValueError(f"unknown reference kind {kind!r}")


def token_masks(clip: ClipSample, window: Window, source_frames: np.ndarray, crop: CenterCrop, geometry: TokenGeometry):
    """Ground truth per token and latent frame: (masks [N, T_lat, Ht, Wt] in [0, 1], conf [N, T_lat])."""
    grid_h, grid_w = geometry.token_grid(window.height, window.width)
    mask_scale = clip.masks.shape[-1] / clip.frames.shape[2]
    per_frame = np.stack([
        [crop.apply(clip.masks[i, f].astype(np.float32), grid_h, grid_w, mask_scale) for f in source_frames]
        for i in range(clip.num_identities)
    ])  # [N, T, Ht, Wt]
    groups = geometry.frame_groups(window.frames)
    conf = clip.conf[:, source_frames][:, groups].min(axis=2)
    return per_frame[:, groups].mean(axis=2), conf


class ExampleMaker:
    """ClipSample -> training example dict; holds its own RNG, seeded per DataLoader worker."""

    def __init__(self, config: DataConfig, geometry: TokenGeometry, featurizer: AudioFeaturizer, seed: int):
        self.config, self.geometry, self.featurizer, self.seed = config, geometry, featurizer, seed
        self._rng = None

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:
            info = torch.utils.data.get_worker_info()
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            self._rng = np.random.default_rng([self.seed, rank, 0 if info is None else info.id])
        return self._rng

    def __call__(self, clip: ClipSample) -> dict | None:
        window = plan_window(clip, self.config, self.rng)
        if window is None:
            return None
        times = window.times(self.config.fps)
        source = np.minimum(np.round(times * clip.fps).astype(int), len(clip.frames) - 1)
        crop = CenterCrop.fit(*clip.frames.shape[1:3], window.height, window.width)
        video = np.stack([crop.apply(clip.frames[f], window.height, window.width) for f in source])
        masks, conf = token_masks(clip, window, source, crop, self.geometry)
        refs = [fit_reference(augment_reference(r, f, self.config.ref_probs, self.rng), tuple(self.config.ref_size))
                for r, f in zip(clip.refs, clip.faces)]
        audio, muted = self._audio(clip, times)
        speaking = np.stack([speaking_samples(clip, i, len(clip.audio))[np.minimum((times * SAMPLE_RATE).astype(int), len(clip.audio) - 1)]
                             for i in range(clip.num_identities)])
        return {
            "key": clip.key,
            "caption": clip.caption,
            "video": torch.from_numpy(video),
            "refs": torch.from_numpy(np.stack(refs)),
            "token_masks": torch.from_numpy(masks.astype(np.float32)),
            "token_conf": torch.from_numpy(conf.astype(np.float32)),
            "audio": torch.from_numpy(audio),
            "audio_muted": torch.from_numpy(muted),
            "speaking": torch.from_numpy(speaking),
            "frame_times": torch.from_numpy(times),  # seconds from the clip start
        }

    def _audio(self, clip: ClipSample, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-identity features [N, T, C] and the features of silence [T, C] at the window's frames."""
        tracks = [features_at_frames(self.featurizer.features(identity_audio(clip, i), clip.key, f"id{i}"), times)
                  for i in range(clip.num_identities)]
        silence = self.featurizer.features(np.zeros_like(clip.audio), clip.key, "muted")
        return np.stack(tracks), features_at_frames(silence, times)


def bucket_key(example: dict) -> tuple[int, ...]:
    frames, height, width = example["video"].shape[:3]
    return height, width, frames, example["refs"].shape[0]


def bucket_batches(examples: Iterable[dict], batch_size: int) -> Iterator[dict]:
    """Group a stream of examples by bucket; yield a collated batch whenever a bucket is full."""
    pending: dict[tuple, list[dict]] = defaultdict(list)
    for example in examples:
        if example is None:
            continue
        bucket = pending[bucket_key(example)]
        bucket.append(example)
        if len(bucket) == batch_size:
            yield collate(bucket)
            bucket.clear()


def collate(examples: list[dict]) -> dict:
    batch = {}
    for name, value in examples[0].items():
        values = [example[name] for example in examples]
        batch[name] = torch.stack(values) if isinstance(value, torch.Tensor) else values
    return batch


def shard_urls(pattern: str) -> list[str]:
    """The shards named by `pattern`: a curated corpus folder (its committed shards, index/shards.txt),
    or a glob/brace pattern of .tar files; local or an object-store URL (s3://...)."""
    if Storage(pattern).exists(SHARD_LIST):
        corpus = Storage(pattern)
        return [corpus.url(name) for name in corpus.read_bytes(SHARD_LIST).decode().split()]
    urls = [url for part in braceexpand.braceexpand(pattern) for url in _glob(part)]
    if not urls:
        raise FileNotFoundError(f"no shards match {pattern!r}")
    return urls


def _glob(pattern: str) -> list[str]:
    if not is_url(pattern):
        return sorted(glob.glob(pattern))
    fs, path = fsspec.core.url_to_fs(pattern)
    return sorted(fs.unstrip_protocol(found) for found in fs.glob(path))


# webdataset opens shard URLs by scheme; object stores go through fsspec with the usual credentials
for _scheme in ("s3", "gs", "gcs", "az", "abfs"):
    wds.gopen_schemes.setdefault(_scheme, lambda url, mode="rb", bufsize=8192, **kw: open_url(url, mode))


def training_stream(config: DataConfig, geometry: TokenGeometry, featurizer: AudioFeaturizer, seed: int) -> wds.DataPipeline:
    """Endless stream of bucketed batches; shards are drawn at random per worker and rank (resampled),
    so every process sees its own mix without coordination."""
    maker = ExampleMaker(config, geometry, featurizer, seed)
    return (
        wds.WebDataset(shard_urls(config.shards), resampled=True, shardshuffle=False, nodesplitter=None, seed=seed, empty_check=False)
        .shuffle(config.shuffle_buffer)
        .map(decode_sample)
        .select(is_trainable)
        .map(maker)
        .compose(lambda examples: bucket_batches(examples, config.batch_size))
    )


def read_clips(pattern: str) -> Iterator[ClipSample]:
    """Every sample of the shards once, in order (evaluation, caching)."""
    for raw in wds.WebDataset(shard_urls(pattern), shardshuffle=False, empty_check=False):
        yield decode_sample(raw)
