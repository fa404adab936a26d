"""Segments: how a pipeline's stages are grouped into units of execution, and how one unit runs.

Both executors run the same segments, so they do (and measure) the same work. A segment is a
maximal run of consecutive CPU stages, or one GPU stage. A segment whose stages need no setup runs as
a Ray task (fused with its neighbours); one with setup runs as a callable-class Ray actor pool that
sets every stage up once. Within a segment each clip is decoded once, for the union of the frames its
stages ask for, and the frames are dropped when the segment ends, before anything crosses to another
worker: CPU analysis stages share one decode, a GPU stage decodes its own resolution tier.
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass

from curation.frames import decode_frames
from curation.pipeline import Pipeline, StageConfig
from curation.stage import Item, Reject, Resources, Stage

log = logging.getLogger(__name__)


@dataclass
class Segment:
    stages: list[StageConfig]

    @property
    def on_gpu(self) -> bool:
        return any(_uses_gpu(s) for s in self.stages)

    @property
    def needs_actor(self) -> bool:
        return self.on_gpu or any(s.cls.has_setup() for s in self.stages)

    def resources(self) -> Resources:
        each = [s.build().resources() for s in self.stages]
        return Resources(cpus=max(r.cpus for r in each), gpus=max(r.gpus for r in each),
                         memory_gb=max(r.memory_gb for r in each))

    @property
    def batch_size(self) -> int:
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
    return segments


def _uses_gpu(config: StageConfig) -> bool:
    return config.build().resources().gpus > 0


class SegmentRunner:
    """Runs a segment's stages over a batch of items; set up once per worker."""

    def __init__(self, segment: Segment):
        self.stages: list[Stage] = [config.build() for config in segment.stages]
        for stage in self.stages:
            stage.setup()
        self.decodes = 0  # clips decoded by this runner, for tests and stats

    def __call__(self, items: list[Item]) -> list[Item]:
        for position, stage in enumerate(self.stages):
            self._decode_for(items, self.stages[position:])
            items = self._run_stage(stage, items)
        for item in items:
            item.frames = None
        return items

    def _decode_for(self, items: list[Item], remaining: list[Stage]) -> None:
        specs = list(dict.fromkeys(spec for stage in remaining for spec in stage.frame_specs()))
        if not specs or not remaining[0].frame_specs():
            return
        for item in items:
            if item.kept and item.frames is None and "mp4" in item.members:
                started = time.perf_counter()
                try:
                    item.frames = decode_frames(item.members["mp4"], specs)
                    self.decodes += 1
                except Exception as err:  # noqa: BLE001 - a clip that fails to decode is rejected, not fatal
                    item.reject = Reject("decode", "undecodable_clip", f"{type(err).__name__}: {err}")
                item.timings["decode"] = item.timings.get("decode", 0.0) + time.perf_counter() - started

    def _run_stage(self, stage: Stage, items: list[Item]) -> list[Item]:
        active = [i for i in items if i.kept and _level_matches(stage, i)]
        if not active:
            return items
        started = time.perf_counter()
        outputs = _process_guarded(stage, active)
        elapsed = time.perf_counter() - started
        for item in outputs:
            item.timings[stage.name] = item.timings.get(stage.name, 0.0) + elapsed / len(outputs)
        active_ids = {id(i) for i in active}
        return [i for i in items if id(i) not in active_ids] + outputs


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
