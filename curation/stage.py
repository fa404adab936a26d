"""The stage contract: what every module in `stages/` provides, and the item that flows between stages.

A stage is a class with a `name`, validated `Params`, the `Resources` it needs, an optional one-time
`setup` (load models), and `process` over a batch of items. It annotates items and may reject them
with a reason; it never imports Ray (the executor does). See docs/stages.md.
"""
from __future__ import annotations

import fnmatch
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class Params(BaseModel):
    """Base for stage parameters: unknown names and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    @classmethod
    def weight_fields(cls) -> dict[str, Weights]:
        """The parameters that name model weights, with what they must be."""
        return {name: marker for name, info in cls.model_fields.items()
                for marker in info.metadata if isinstance(marker, Weights)}


@dataclass(frozen=True)
class Weights:
    """Marks a parameter as a path to model weights. A relative path in a pipelines file is resolved
    against that file; a set path must exist (checked when the pipeline loads, before any work).
    `hub_param` names a boolean parameter that, when true, lets the value be a hub id instead."""

    kind: Literal["file", "folder"]
    hub_param: str | None = None

    def problem(self, value: str, params: BaseModel) -> str | None:
        """Why `value` cannot be loaded, or None when it can."""
        path = Path(value)
        if path.is_file() if self.kind == "file" else path.is_dir():
            return None
        if self.hub_param and getattr(params, self.hub_param):
            return None
        return f"no such {self.kind} {value!r}" + (f" (or set {self.hub_param}: true for a hub id)" if self.hub_param else "")


WeightFile = Annotated[str | None, Weights("file")]
WeightFolder = Annotated[str | None, Weights("folder")]
# A stage's `weights` method as a model backend's builder receives it: parameter name -> checked path.
WeightPath = Callable[[str], str]

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def _valid_device(device: str) -> str:
    if not _DEVICE.match(device):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return device


Device = Annotated[str, AfterValidator(_valid_device)]


def on_cuda(device: str) -> bool:
    return device.startswith("cuda")


def gpu_share(device: str, share: float) -> float:
    """The GPU share a worker reserves: `share` on a CUDA device, none on the CPU."""
    return share if on_cuda(device) else 0.0


def gpus_param(default: float) -> Any:
    """The `gpus` parameter of every stage that can run on a GPU."""
    return Field(default, gt=0, le=1, description="GPU share each worker reserves when device is cuda (0.5 packs two workers per GPU)")


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
    (None: native size). gray: single-channel luma instead of RGB. pairs: each sampled frame comes
    with the decoded frame after it (adjacent pairs, for optical flow), so a stage that needs pairs a
    few times a second does not pay for converting every frame. The executor decodes each clip once
    per segment and serves every stage's spec from that one decode (docs/decode-once.md).
    """

    fps: float | None = None
    max_side: int | None = None
    gray: bool = False
    pairs: bool = False


@dataclass
class ClipFrames:
    """Frames for one FrameSpec: images [T, H, W, 3] RGB (or [T, H, W] gray) uint8, times [T] seconds
    from the clip start, and the scale from the clip's pixels to these (for mapping boxes back)."""

    images: np.ndarray
    times: np.ndarray
    scale: float


@dataclass(frozen=True)
class SourceWindow:
    """The source frames a clip holds before it is encoded: decoded frames [first_frame, end_frame)
    of the source's video stream, the first shown at `start` seconds (from the stream's first frame),
    and the clip they become: `n_frames` frames at `fps` (None: the source's frames as they are), of
    `width` x `height` pixels. Stages that read frames before the clip is encoded get them decoded
    from this window."""

    start: float
    first_frame: int
    end_frame: int
    source_fps: float
    fps: float | None
    n_frames: int
    width: int
    height: int


@dataclass
class Reject:
    stage: str
    reason: str  # short tag to count by, e.g. "too_short"
    detail: str = ""  # human-readable specifics


@dataclass
class Item:
    """One source (key is None: before a source-level stage splits it into clips) or one clip of it.

    meta: JSON-able metadata per stage name, written to the sample's json.
    scores: flat scalars named "<stage>.<score>", written to the json and as Parquet index columns.
    members: extra WebDataset members by extension ("mp4", "wav", "masks.npz", "ref_0.png", ...).
    arrays: intermediate arrays one stage hands to a later one (face crops, per-frame boxes), named
        "<stage>.<what>"; they cross actor boundaries (keep them compact) and are never written: a
        stage that wants one in the sample puts it in `members`.
    window: where a clip's frames are in its source, until it is encoded (the `video_member`).
    frames: decoded frames per FrameSpec; transient, never written or sent across actor boundaries.
    timings: wall seconds spent per stage on this item, for the run's throughput stats.
    cpu_seconds: CPU seconds per stage (the worker process and the ffmpeg it ran), for the bill.
    """

    source_id: str
    source_path: str
    key: str | None = None
    clip_index: int | None = None
    start: float | None = None
    end: float | None = None
    clips_in_source: int | None = None
    source_file: dict[str, Any] = field(default_factory=dict)  # sha256, size_bytes, mtime_ns of the source file
    source_duration: float | None = None  # seconds, once a source-level stage measured it
    meta: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float | int | str | bool | None] = field(default_factory=dict)
    members: dict[str, bytes] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    reject: Reject | None = None
    window: SourceWindow | None = None
    frames: dict[FrameSpec, ClipFrames] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)

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
    # What the stage adds and reads, as names or fnmatch patterns ("faces.track*.rgb224"). The
    # executor drops an array once no later stage reads it; the docs and tests read the rest.
    adds_members: ClassVar[tuple[str, ...]] = ()  # sample members ("mp4", "ref_*.png")
    reads_members: ClassVar[tuple[str, ...]] = ()  # members it reads (an earlier stage must add them)
    adds_arrays: ClassVar[tuple[str, ...]] = ()
    reads_arrays: ClassVar[tuple[str, ...]] = ()
    video_member: ClassVar[str | None] = None  # the member later stages decode their frames from
    source_scores: ClassVar[bool] = False  # its scores describe the source: columns of sources.parquet too
    source_columns: ClassVar[tuple[str, ...]] = ()  # its meta fields kept as JSON columns "<stage>.<field>" of sources.parquet
    # top-level fields of the sample json its annotate_sample fills, with the value a sample has when
    # the stage gave none (a rejected clip): every sample of a pipeline with the stage has them
    sample_fields: ClassVar[dict[str, Any]] = {}
    analysis: ClassVar[dict[str, str]] = {}  # corpus-analysis dimension (paper E.2) -> this stage's score

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

    @classmethod
    def annotate_sample(cls, document: dict[str, Any]) -> None:
        """Shape the sample's json from this stage's metadata (document["stages"][name]); by default
        it stays there. Called in pipeline order, in the writer."""

    # helpers for subclasses
    def device(self) -> str:
        """`params.device`, checked: CUDA asked for where none is visible stops setup with a fix."""
        device = self.params.device
        if on_cuda(device):
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"{self.name}.device is {device!r} but no CUDA device is visible; "
                                 f"set {self.name}.device: cpu")
        return device

    def weights(self, param: str) -> str:
        """The weight path of `param`, checked; the error names the parameter and what it wants."""
        value = getattr(self.params, param)
        marker = type(self.params).weight_fields()[param]
        problem = "not set" if value is None else marker.problem(value, self.params)
        if problem:
            wanted = type(self.params).model_fields[param].description
            raise ValueError(f"{self.name}.{param}: {problem}; set it to {wanted}")
        return value

    def record(self, item: Item, meta: dict[str, Any] | None = None, **scores: Any) -> None:
        if meta is not None:
            item.meta[self.name] = meta
        for score_name, value in scores.items():
            item.scores[f"{self.name}.{score_name}"] = _plain_scalar(value)

    def reject(self, item: Item, reason: str, detail: str = "") -> None:
        item.reject = Reject(self.name, reason, detail)


def matches_any(name: str, patterns: tuple[str, ...] | set[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


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
