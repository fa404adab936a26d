"""Segments: how a pipeline's stages are grouped into units of execution, and how one unit runs.

Both executors run the same segments, so they do (and measure) the same work. A segment is a
maximal run of consecutive CPU stages, or one GPU stage. A segment whose stages need no setup runs as
a Ray task (fused with its neighbours); one with setup runs as a callable-class Ray actor pool that
sets every stage up once. Within a segment each clip is decoded once, for the union of the frames its
stages ask for (from the clip's window of its source until it is encoded, from the encoded clip
after), and the frames are dropped when the segment ends, before anything crosses to another
worker: CPU analysis stages share one decode, a GPU stage decodes its own resolution tier. Likewise
an array in `item.arrays` is dropped right after its last reader (known from what stages declare),
so only what a later stage reads crosses to the next segment.
"""
from __future__ import annotations

import logging
import resource
import threading
import time
import traceback
from dataclasses import dataclass

import cv2

from curation.frames import decode_frames, decode_window
from curation.pipeline import Pipeline, Pool, StageConfig
from curation.stage import ClipFrames, FrameSpec, Item, Reject, Resources, Stage, matches_any
from curation.storage import media_url

log = logging.getLogger(__name__)


@dataclass
class Segment:
    stages: list[StageConfig]
    video_member: str | None = None  # the member clips are decoded from (declared by the stage that cuts them)
    read_later: tuple[str, ...] = ()  # array patterns that stages after this segment read

    @property
    def on_gpu(self) -> bool:
        return any(_uses_gpu(s) for s in self.stages)

    @property
    def needs_actor(self) -> bool:
        return self.on_gpu or any(s.cls.has_setup() for s in self.stages)

    @property
    def calls_at_once(self) -> int:
        """Batches one worker takes at a time: 2 for a GPU segment that decodes frames, so that one
        batch's decode (on the worker's CPUs) runs while the other's stages hold the GPU (the runner
        lets one batch at a time into its stages); 1 otherwise."""
        decodes = any(s.build().frame_specs() for s in self.stages)
        return 2 if self.on_gpu and decodes else 1

    def resources(self) -> Resources:
        """What one worker of the segment reserves: the most any of its stages needs, unless the
        pipeline's `pool:` says otherwise."""
        each = [s.build().resources() for s in self.stages]
        pool = self.pool
        return Resources(cpus=pool.cpus if pool.cpus is not None else max(r.cpus for r in each),
                         gpus=pool.gpus if pool.gpus is not None else max(r.gpus for r in each),
                         memory_gb=max(r.memory_gb for r in each))

    @property
    def pool(self) -> Pool:
        """The stages' pools joined: the most workers any keeps, the fewest any allows."""
        pools = [s.pool for s in self.stages]
        caps = [p.max_workers for p in pools if p.max_workers is not None]
        minimum = max(p.min_workers for p in pools)
        return Pool(min_workers=minimum, max_workers=max(minimum, min(caps)) if caps else None,
                    gpus=_most(p.gpus for p in pools), cpus=_most(p.cpus for p in pools))

    @property
    def items_per_batch(self) -> int:
        return max(s.build().items_per_batch() for s in self.stages)

    @property
    def label(self) -> str:
        return "+".join(s.name for s in self.stages)


def plan_segments(pipeline: Pipeline) -> list[Segment]:
    """Group the processing stages (all but the sink) into segments."""
    segments: list[Segment] = []
    for config in pipeline.stages[:-1]:
        if _uses_gpu(config) or not segments or segments[-1].on_gpu:
            segments.append(Segment([config]))
        else:
            segments[-1].stages.append(config)
    video = next((s.cls.video_member for s in pipeline.stages if s.cls.video_member), None)
    read_later: tuple[str, ...] = ()
    for segment in reversed(segments):
        segment.video_member, segment.read_later = video, read_later
        read_later = tuple(dict.fromkeys(read_later + tuple(p for s in segment.stages for p in s.cls.reads_arrays)))
    return segments


def _uses_gpu(config: StageConfig) -> bool:
    gpus = config.pool.gpus if config.pool.gpus is not None else config.build().resources().gpus
    return gpus > 0


def _most(values) -> float | None:
    given = [v for v in values if v is not None]
    return max(given) if given else None


class SegmentRunner:
    """Runs a segment's stages over a batch of items; set up once per worker."""

    def __init__(self, segment: Segment):
        self.threads = max(1, int(segment.resources().cpus))  # what the worker reserved, no more
        cv2.setNumThreads(self.threads)  # process-wide; OpenCV would otherwise take every core of the node
        self.stages: list[Stage] = [config.build() for config in segment.stages]
        for stage in self.stages:
            stage.setup()
        self.video_member = segment.video_member
        # after stage i, the arrays still to be read: by the segment's later stages or later segments
        self.still_read = [set(segment.read_later).union(*(s.reads_arrays for s in self.stages[i + 1:]))
                           for i in range(len(self.stages))]
        self.decodes = 0  # clips decoded by this runner, for tests and stats
        self._stages_in_use = threading.Lock()  # a worker may be handed batches at once: decode them side
        # by side, run the stages (models, GPU) on one batch at a time

    def __call__(self, items: list[Item]) -> list[Item]:
        for position, stage in enumerate(self.stages):
            self._decode_for(items, self.stages[position:])
            with self._stages_in_use:
                items = self._run_stage(stage, items)
            _drop_unneeded(items, self.still_read[position])
        for item in items:
            item.frames = None
        return items

    def _decode_for(self, items: list[Item], remaining: list[Stage]) -> None:
        specs = list(dict.fromkeys(spec for stage in remaining for spec in stage.frame_specs()))
        if not specs or not remaining[0].frame_specs():
            return
        for item in items:
            if item.kept and item.frames is None and (self.video_member in item.members or item.window):
                started, cpu_started = time.perf_counter(), cpu_seconds()
                try:
                    item.frames = self._decode(item, specs)
                    self.decodes += 1
                except Exception as err:  # noqa: BLE001 - a clip that fails to decode is rejected, not fatal
                    item.reject = Reject("decode", "undecodable_clip", f"{type(err).__name__}: {err}")
                _add_time(item, "decode", time.perf_counter() - started, cpu_seconds() - cpu_started)

    def _decode(self, item: Item, specs: list[FrameSpec]) -> dict[FrameSpec, ClipFrames]:
        """From the encoded clip once there is one, else from the clip's window of its source."""
        if self.video_member in item.members:
            return decode_frames(item.members[self.video_member], specs, self.threads)
        return decode_window(media_url(item.source_path), item.window, specs, self.threads)

    def _run_stage(self, stage: Stage, items: list[Item]) -> list[Item]:
        active = [i for i in items if i.kept and _level_matches(stage, i)]
        if not active:
            return items
        started, cpu_started = time.perf_counter(), cpu_seconds()
        outputs = _process_guarded(stage, active)
        elapsed, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
        for item in outputs:
            _add_time(item, stage.name, elapsed / len(outputs), cpu / len(outputs))
        active_ids = {id(i) for i in active}
        return [i for i in items if id(i) not in active_ids] + outputs


def cpu_seconds() -> float:
    """CPU time of this process and the children it waited for (ffmpeg), user and system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _add_time(item: Item, stage: str, wall: float, cpu: float) -> None:
    item.timings[stage] = item.timings.get(stage, 0.0) + wall
    item.cpu_seconds[stage] = item.cpu_seconds.get(stage, 0.0) + cpu


def _drop_unneeded(items: list[Item], still_read: set[str]) -> None:
    """Arrays no later stage reads go; a rejected item keeps only what its index row needs."""
    for item in items:
        if not item.kept:
            item.members.clear()
        for name in [n for n in item.arrays if not (item.kept and matches_any(n, still_read))]:
            del item.arrays[name]


def _level_matches(stage: Stage, item: Item) -> bool:
    return (item.key is None) == (stage.level == "source")


def _process_guarded(stage: Stage, items: list[Item]) -> list[Item]:
    """A stage error rejects the item that caused it and never stops the run: the batch is retried
    item by item so one bad clip does not take its batch-mates down with it."""
    try:
        return stage.process(items)
    except Exception:  # noqa: BLE001
        if len(items) == 1:
            return [_reject_with_error(stage, items[0])]
    outputs = []
    for item in items:
        try:
            outputs += stage.process([item])
        except Exception:  # noqa: BLE001
            outputs.append(_reject_with_error(stage, item))
    return outputs


def _reject_with_error(stage: Stage, item: Item) -> Item:
    detail = traceback.format_exc(limit=3)
    log.warning("stage %s failed on %s: %s", stage.name, item.key or item.source_path, detail.strip().splitlines()[-1])
    item.reject = Reject(stage.name, "error", detail[-1000:])
    return item
