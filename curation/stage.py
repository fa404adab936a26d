"""The stage contract: what every module in `stages/` provides, and the item that flows between stages.

A stage is a class with a `name`, validated `Params`, the `Resources` it needs, an optional one-time
`setup` (load models), and `process` over a batch of items. It annotates items and may reject them
with a reason; it never imports Ray (the executor does). See docs/stages.md.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict


class Params(BaseModel):
    """Base for stage parameters: unknown names and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


@dataclass(frozen=True)
class Resources:
    """What one instance of a stage needs; the Ray executor reserves exactly this."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float = 1.0


@dataclass(frozen=True)
class FrameSpec:
    """Frames a stage wants from a clip.

    fps: sampling rate (None: every decoded frame). max_side: the longer side after resizing
    (None: native size). gray: single-channel luma instead of RGB. The executor decodes each clip
    once per segment and serves every stage's spec from that one decode (docs/decode-once.md).
    """

    fps: float | None = None
    max_side: int | None = None
    gray: bool = False


@dataclass
class ClipFrames:
    """Frames for one FrameSpec: images [T, H, W, 3] RGB (or [T, H, W] gray) uint8, times [T] seconds
    from the clip start, and the scale from the clip's pixels to these (for mapping boxes back)."""

    images: np.ndarray
    times: np.ndarray
    scale: float


@dataclass
class Reject:
    stage: str
    reason: str  # short tag to count by, e.g. "too_short"
    detail: str = ""  # human-readable specifics


@dataclass
class Item:
    """One source (key is None: before the `clips` stage splits it) or one clip of it.

    meta: JSON-able metadata per stage name, written to the sample's json.
    scores: flat scalars named "<stage>.<score>", written to the json and as Parquet index columns.
    members: extra WebDataset members by extension ("mp4", "wav", "masks.npz", "ref_0.png", ...).
    arrays: intermediate arrays one stage hands to a later one (face crops, per-frame boxes), named
        "<stage>.<what>"; they cross actor boundaries (keep them compact) and are never written: a
        stage that wants one in the sample puts it in `members`.
    frames: decoded frames per FrameSpec; transient, never written or sent across actor boundaries.
    timings: seconds spent per stage on this item, for the run's throughput stats.
    """

    source_id: str
    source_path: str
    key: str | None = None
    clip_index: int | None = None
    start: float | None = None
    end: float | None = None
    clips_in_source: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float | int | str | bool | None] = field(default_factory=dict)
    members: dict[str, bytes] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    reject: Reject | None = None
    frames: dict[FrameSpec, ClipFrames] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def kept(self) -> bool:
        return self.reject is None


class Stage:
    """Base class of every stage. Subclasses set `name`, `Params` and override `process_item`
    (one item at a time) or `process` (a whole batch, e.g. batched GPU inference)."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    level: ClassVar[Literal["source", "clip", "sink"]] = "clip"
    requires: ClassVar[tuple[str, ...]] = ()  # stages that must come earlier in the pipeline
    Params: ClassVar[type[Params]] = Params

    def __init__(self, params: Params):
        self.params = params

    def resources(self) -> Resources:
        return Resources()

    def items_per_batch(self) -> int:
        """Items handed to `process` at once (batched GPU inference raises it); 1 keeps Ray's tasks
        one source or clip each, which is what spreads them over workers."""
        return 1

    def frame_specs(self) -> list[FrameSpec]:
        """The frames this stage reads from `item.frames`; empty if it decodes nothing."""
        return []

    @classmethod
    def has_setup(cls) -> bool:
        return cls.setup is not Stage.setup

    def setup(self) -> None:
        """Load models once per worker; raise with a message naming the parameter to fix."""

    def process(self, items: list[Item]) -> list[Item]:
        out: list[Item] = []
        for item in items:
            result = self.process_item(item)
            out.extend([item] if result is None else result)
        return out

    def process_item(self, item: Item) -> list[Item] | None:
        """Annotate (or reject) `item` in place and return None, or return the items it becomes."""
        raise NotImplementedError(f"stage {self.name} implements neither process nor process_item")

    # helpers for subclasses
    def record(self, item: Item, meta: dict[str, Any] | None = None, **scores: Any) -> None:
        if meta is not None:
            item.meta[self.name] = meta
        for score_name, value in scores.items():
            item.scores[f"{self.name}.{score_name}"] = _plain_scalar(value)

    def reject(self, item: Item, reason: str, detail: str = "") -> None:
        item.reject = Reject(self.name, reason, detail)


def _plain_scalar(value: Any) -> float | int | str | bool | None:
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"score values must be scalars, got {type(value).__name__}")


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """A sample's .npz member (masks.npz, pose.npz, speak.npz): the arrays, compressed."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()
