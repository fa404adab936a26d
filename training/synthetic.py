"""A synthetic two-identity talking corpus in the curated shard format (docs/sample-format.md).

Each clip shows two figures (a textured body under a round head) drifting side to side. Each figure
has its own voice (a harmonic tone with its own pitch, broken into syllables); the two take turns, so
one talks at a time, and a figure's black mouth opens with its own voice's loudness and stays closed
while it is silent. Every member the contract lists is written: mp4 (H.264 + AAC), wav, json,
masks.npz (with a few low-confidence frames whose masks are deliberately wrong), speak.npz, pose.npz,
ref_<i>.png (the figure, mouth closed, on white) and face_<i>.png (a head crop).

    python -m training.synthetic --out data/synthetic --clips 160
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import webdataset as wds

from curation.stage import npz_bytes
from training.media import encode_mp4, png_bytes, wav_bytes

SAMPLE_RATE = 16000
SPEAKING_SCORE = 3.0  # an ASD logit clearly above 0
LOW_CONFIDENCE = 0.3


@dataclass(frozen=True)
class SyntheticSpec:
    width: int = 128
    height: int = 64
    fps: float = 25.0
    frames: int = 64
    low_confidence_share: float = 0.03  # frames whose masks are wrong and flagged with conf < 0.5


@dataclass
class Figure:
    head_color: tuple[int, int, int]
    texture: np.ndarray  # uint8 [body_h, body_w, 3]
    head_radius: int
    phrase: str
    voice_hz: float
    center_x: float
    amplitude: float
    motion_hz: float
    phase: float

    @property
    def body_size(self) -> tuple[int, int]:
        return self.texture.shape[:2]


@dataclass
class SyntheticClip:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    audio: np.ndarray  # float32 [S] mix
    voices: np.ndarray  # float32 [N, S] each identity's own track
    masks: np.ndarray  # uint8 [N, T, H, W]
    conf: np.ndarray  # float16 [N, T]
    score: np.ndarray  # float16 [N, T]
    kpts: np.ndarray  # float16 [N, T, 17, 3]
    boxes: list[list[list[int]]]
    segments: list[list[list[float]]]
    mouth_open: np.ndarray  # float32 [N, T] in [0, 1]
    refs: list[np.ndarray]
    faces: list[np.ndarray]
    phrases: list[str]


def _random_color(rng, low: int, high: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, size=3))


def _texture(rng, height: int, width: int) -> tuple[np.ndarray, str]:
    first, second = _random_color(rng, 30, 230), _random_color(rng, 30, 230)
    period = int(rng.integers(3, 7))
    yy, xx = np.mgrid[0:height, 0:width]
    kind = ["horizontal stripes", "vertical stripes", "checks"][rng.integers(3)]
    pattern = {"horizontal stripes": yy // period, "vertical stripes": xx // period, "checks": yy // period + xx // period}[kind]
    texture = np.where((pattern % 2 == 0)[..., None], np.array(first, np.uint8), np.array(second, np.uint8))
    return texture.astype(np.uint8), kind


def _figure(rng, spec: SyntheticSpec, center_x: float) -> Figure:
    body_h, body_w = int(rng.integers(22, 28)), int(rng.integers(18, 24))
    texture, kind = _texture(rng, body_h, body_w)
    return Figure(
        head_color=_random_color(rng, 150, 250),
        texture=texture,
        head_radius=int(rng.integers(8, 11)),
        phrase=f"figure with a {kind} shirt",
        voice_hz=float(rng.uniform(140, 320)),
        center_x=center_x,
        amplitude=float(rng.uniform(2, 7)),
        motion_hz=float(rng.uniform(0.2, 0.6)),
        phase=float(rng.uniform(0, 2 * np.pi)),
    )


def _layout(figure: Figure, spec: SyntheticSpec, time: float) -> tuple[int, int]:
    """Top-left corner of the figure's body at `time`; the head sits on top of it."""
    body_h, body_w = figure.body_size
    x = figure.center_x + figure.amplitude * np.sin(2 * np.pi * figure.motion_hz * time + figure.phase)
    bob = 1.5 * np.sin(2 * np.pi * 2 * figure.motion_hz * time + figure.phase)
    return int(round(x - body_w / 2)), int(round(spec.height - body_h - 2 + bob))


def _draw(canvas: np.ndarray, mask: np.ndarray, figure: Figure, left: int, top: int, mouth_open: float) -> list[int]:
    """Draw one figure (and its silhouette into mask); returns its box [x1, y1, x2, y2]."""
    body_h, body_w = figure.body_size
    canvas[top : top + body_h, left : left + body_w] = figure.texture
    mask[top : top + body_h, left : left + body_w] = 1
    r = figure.head_radius
    center = (left + body_w // 2, top - r + 2)
    cv2.circle(canvas, center, r, figure.head_color, -1, lineType=cv2.LINE_8)
    cv2.circle(mask, center, r, 1, -1, lineType=cv2.LINE_8)
    mouth_center = (center[0], center[1] + r // 2)
    cv2.ellipse(canvas, mouth_center, (max(r // 2, 2), int(round(0.5 + mouth_open * 0.45 * r))), 0, 0, 360, (0, 0, 0), -1)
    return [left, center[1] - r, left + body_w, top + body_h]


def _turns(rng, duration: float) -> list[tuple[int, float, float]]:
    """Alternating (speaker, start, end) turns covering the clip, first speaker random."""
    count = int(rng.integers(2, 5))
    cuts = np.sort(rng.uniform(0.15, 0.85, size=count - 1)) * duration
    edges = np.concatenate([[0.0], cuts, [duration]])
    first = int(rng.integers(2))
    return [((first + k) % 2, float(edges[k]), float(edges[k + 1])) for k in range(count)]


def _voice(rng, figure: Figure, turns, speaker: int, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(waveform [S], loudness envelope [S] in [0, 1]) of one identity: syllables only in its turns."""
    t = np.arange(samples) / SAMPLE_RATE
    syllable_hz = rng.uniform(3.5, 6.0)
    envelope = np.clip(np.sin(2 * np.pi * syllable_hz * t + rng.uniform(0, 2 * np.pi)), 0, None) ** 0.7
    active = np.zeros(samples, bool)
    for who, start, end in turns:
        if who == speaker:
            active[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)] = True
    envelope = envelope * active
    tone = sum(np.sin(2 * np.pi * figure.voice_hz * h * t) / h for h in (1, 2, 3))
    return (0.4 * envelope * tone).astype(np.float32), envelope.astype(np.float32)


def _keypoints(box: list[int], head_radius: int) -> np.ndarray:
    """COCO-17 keypoints from the drawing: face points on the head, shoulders and hips on the body."""
    x1, y1, x2, y2 = box
    cx, head_cy = (x1 + x2) / 2, y1 + head_radius
    body_top = y1 + 2 * head_radius - 2
    points = np.zeros((17, 3), np.float32)
    points[0] = (cx, head_cy, 1)
    points[1], points[2] = (cx - 3, head_cy - 2, 1), (cx + 3, head_cy - 2, 1)
    points[3], points[4] = (cx - head_radius, head_cy, 1), (cx + head_radius, head_cy, 1)
    points[5], points[6] = (x1, body_top, 1), (x2, body_top, 1)
    points[11], points[12] = (x1, y2, 1), (x2, y2, 1)
    return points


def _reference(figure: Figure) -> np.ndarray:
    """The figure alone, mouth closed, on white, cropped to its box plus a 2-pixel margin."""
    body_h, body_w = figure.body_size
    height, width = body_h + 2 * figure.head_radius + 4, body_w + 4
    canvas = np.full((height, width, 3), 255, np.uint8)
    _draw(canvas, np.zeros((height, width), np.uint8), figure, 2, height - body_h - 2, 0.0)
    return canvas


def _background(rng, spec: SyntheticSpec) -> np.ndarray:
    top, bottom = np.array(_random_color(rng, 150, 255)), np.array(_random_color(rng, 150, 255))
    weights = np.linspace(0, 1, spec.height)[:, None, None]
    row = (1 - weights) * top + weights * bottom
    return np.broadcast_to(row, (spec.height, spec.width, 3)).astype(np.uint8)


def render_clip(rng: np.random.Generator, spec: SyntheticSpec) -> SyntheticClip:
    slots = rng.permutation([0.28, 0.72]) * spec.width
    figures = [_figure(rng, spec, float(x)) for x in slots]
    duration = spec.frames / spec.fps
    samples = int(round(duration * SAMPLE_RATE))
    turns = _turns(rng, duration)
    voices, envelopes = zip(*(_voice(rng, figure, turns, i, samples) for i, figure in enumerate(figures)))
    frame_times = np.arange(spec.frames) / spec.fps
    per_frame = samples // spec.frames
    mouth_open = np.stack([env[: per_frame * spec.frames].reshape(spec.frames, per_frame).mean(1) for env in envelopes])
    mouth_open = mouth_open / max(float(mouth_open.max()), 1e-6)

    background = _background(rng, spec)
    frames = np.empty((spec.frames, spec.height, spec.width, 3), np.uint8)
    masks = np.zeros((len(figures), spec.frames, spec.height, spec.width), np.uint8)
    boxes: list[list[list[int]]] = [[] for _ in figures]
    for t, time in enumerate(frame_times):
        canvas = background.copy()
        for i, figure in enumerate(figures):
            boxes[i].append(_draw(canvas, masks[i, t], figure, *_layout(figure, spec, time), float(mouth_open[i, t])))
        frames[t] = canvas

    speaking = np.zeros((len(figures), spec.frames), bool)
    for who, start, end in turns:
        speaking[who, (frame_times >= start) & (frame_times < end)] = True
    conf = np.ones((len(figures), spec.frames), np.float16)
    flagged = rng.random(conf.shape) < spec.low_confidence_share
    conf[flagged] = LOW_CONFIDENCE
    masks[flagged] = 0  # a failed segmentation: the flag must keep it out of the mask loss
    faces = [_face_crop(frames[0], boxes[i][0], figure.head_radius) for i, figure in enumerate(figures)]
    return SyntheticClip(
        frames=frames,
        audio=np.clip(sum(voices), -1, 1).astype(np.float32),
        voices=np.stack(voices),
        masks=masks,
        conf=conf,
        score=np.where(speaking, SPEAKING_SCORE, -SPEAKING_SCORE).astype(np.float16),
        kpts=np.stack([[_keypoints(box, f.head_radius) for box in boxes[i]] for i, f in enumerate(figures)]).astype(np.float16),
        boxes=boxes,
        segments=[[[start, end] for who, start, end in turns if who == i] for i in range(len(figures))],
        mouth_open=mouth_open.astype(np.float32),
        refs=[_reference(f) for f in figures],
        faces=faces,
        phrases=[f.phrase for f in figures],
    )


def _face_crop(frame: np.ndarray, box: list[int], head_radius: int) -> np.ndarray:
    x1, y1, x2, _ = box
    cx = (x1 + x2) // 2
    half = head_radius + 2
    top, left = max(y1 - 2, 0), max(cx - half, 0)
    return frame[top : top + 2 * half, left : left + 2 * half].copy()


def sample_members(clip: SyntheticClip, spec: SyntheticSpec, seed: int, index: int) -> dict:
    """The clip as the members of one WebDataset sample, keyed as the contract says."""
    source_hash = hashlib.sha256(f"synthetic/{seed}/{index}".encode()).hexdigest()
    key = f"{source_hash[:16]}-0000"
    duration = spec.frames / spec.fps
    metadata = {
        "key": key,
        "source": {"id": source_hash[:16], "path": f"synthetic://{seed}/{index}", "sha256": source_hash, "probe": {}},
        "clip": {"index": 0, "start": 0.0, "end": duration, "duration": duration, "fps": spec.fps,
                 "n_frames": spec.frames, "width": spec.width, "height": spec.height, "has_audio": True},
        "caption": "Two cartoon figures stand side by side and take turns talking.",
        "identities": [
            {"id": i, "phrase": clip.phrases[i], "human_size": "full", "boxes": clip.boxes[i], "speaking_segments": clip.segments[i]}
            for i in range(len(clip.phrases))
        ],
        "scores": {},
        "stages": {},
        "lineage": {"pipeline": "synthetic", "stages": [{"name": "training.synthetic", "version": "1", "params": {"seed": seed}}]},
    }
    members = {
        "__key__": key,
        "mp4": encode_mp4(clip.frames, spec.fps, clip.audio, SAMPLE_RATE),
        "wav": wav_bytes(clip.audio, SAMPLE_RATE),
        "json": json.dumps(metadata).encode(),
        "masks.npz": npz_bytes(masks=clip.masks, conf=clip.conf),
        "speak.npz": npz_bytes(score=clip.score),
        "pose.npz": npz_bytes(kpts=clip.kpts, frames=np.arange(spec.frames, dtype=np.int32)),
    }
    for i, (ref, face) in enumerate(zip(clip.refs, clip.faces)):
        members[f"ref_{i}.png"] = png_bytes(ref)
        members[f"face_{i}.png"] = png_bytes(face)
    return members


def write_corpus(out_dir: str | Path, clips: int, seed: int = 0, spec: SyntheticSpec = SyntheticSpec(), clips_per_shard: int = 32,
                 workers: int = 1) -> list[Path]:
    """Write OUT/shards/shard-%06d.tar, shards in `workers` processes; each shard appears under its final
    name only once complete, and clip i is the same whatever the number of workers."""
    shard_dir = Path(out_dir) / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(shard_dir / f"shard-{k:06d}.tar", range(first, min(first + clips_per_shard, clips)), seed, spec)
            for k, first in enumerate(range(0, clips, clips_per_shard))]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
            paths = list(pool.map(_write_shard, *zip(*jobs)))
    else:
        paths = [_write_shard(*job) for job in jobs]
    (Path(out_dir) / "corpus.json").write_text(json.dumps({"pipeline": "training.synthetic", "seed": seed, "clips": clips, "spec": spec.__dict__}))
    return paths


def _write_shard(final: Path, indices: range, seed: int, spec: SyntheticSpec) -> Path:
    temporary = final.with_suffix(".tar.tmp")
    with wds.TarWriter(str(temporary)) as writer:
        for index in indices:
            writer.write(sample_members(render_clip(np.random.default_rng([seed, index]), spec), spec, seed, index))
    temporary.replace(final)
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--clips", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=SyntheticSpec.frames)
    parser.add_argument("--clips-per-shard", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes writing shards")
    args = parser.parse_args()
    paths = write_corpus(args.out, args.clips, args.seed, SyntheticSpec(frames=args.frames), args.clips_per_shard, args.workers)
    print(f"wrote {args.clips} clips in {len(paths)} shards under {Path(args.out) / 'shards'}")


if __name__ == "__main__":
    main()
