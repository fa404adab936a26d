"""Segments: one decode per clip shared by the stages that need frames, errors become rejects,
and the Ray executor runs actor stages with the same results as the local one."""
from __future__ import annotations

import types

import pytest

from conftest import ADAPTIVE_SHOTS
from curation.executors import LocalExecutor, RayExecutor
from curation.pipeline import Pipeline, StageConfig, load_pipeline
from curation.runner import SegmentRunner, plan_segments
from curation.stage import FrameSpec, Item, Params, Resources, Stage

SMALL = FrameSpec(fps=2, max_side=64, gray=True)
FULL = FrameSpec(fps=5)


class MeanLuma(Stage):
    name = "mean_luma"

    def frame_specs(self):
        return [SMALL]

    def process_item(self, item):
        frames = item.frames[SMALL]
        self.record(item, {"shape": list(frames.images.shape)}, value=float(frames.images.mean()))


class FrameCount(Stage):
    name = "frame_count"

    def frame_specs(self):
        return [FULL]

    def process_item(self, item):
        self.record(item, n=len(item.frames[FULL].images))


class FailsOnSecondClip(Stage):
    name = "fails_on_second"

    def process_item(self, item):
        if item.clip_index == 1:
            raise RuntimeError("model exploded")
        self.record(item, ok=True)


class WithSetup(Stage):
    """Has setup, so its segment runs as a Ray actor pool."""

    name = "with_setup"

    def setup(self):
        self.factor = 2.0

    def frame_specs(self):
        return [SMALL]

    def process_item(self, item):
        self.record(item, doubled=self.factor * len(item.frames[SMALL].images))


def _pipeline(*extra: type[Stage]) -> Pipeline:
    ingest = load_pipeline("ingest", overrides=["clips.max_clip_s=8", ADAPTIVE_SHOTS])
    added = [StageConfig(cls.name, cls, Params(), "test") for cls in extra]
    *cutting, encode, sink = ingest.stages  # the extra stages go where filters go: before the encode
    return Pipeline("test", cutting + added + [encode, sink])


def _clips(demo_inputs):
    return [Item(source_id="demo", source_path=str(demo_inputs / "demo_two_shots.mp4"))]


def test_stages_in_a_segment_share_one_decode(demo_inputs):
    pipeline = _pipeline(MeanLuma, FrameCount)
    (segment,) = plan_segments(pipeline)
    runner = SegmentRunner(segment)
    clips = runner(_clips(demo_inputs))
    kept = [c for c in clips if c.kept]
    assert len(kept) == 2 and runner.decodes == len(kept)  # two frame-reading stages, one decode each
    for clip in kept:
        duration = clip.end - clip.start
        assert clip.meta["mean_luma"]["shape"][1:] == [48, 64]  # 320x240 scaled to 64 on the long side
        assert abs(clip.meta["mean_luma"]["shape"][0] - duration * 2) <= 1
        assert abs(clip.scores["frame_count.n"] - duration * 5) <= 1
        assert clip.frames is None and "decode" in clip.timings


def test_a_failing_stage_rejects_its_item_and_the_run_goes_on(demo_inputs):
    (segment,) = plan_segments(_pipeline(FailsOnSecondClip))
    clips = {c.clip_index: c for c in SegmentRunner(segment)(_clips(demo_inputs))}
    assert clips[0].kept and clips[0].scores["fails_on_second.ok"] is True
    assert clips[1].reject.stage == "fails_on_second" and clips[1].reject.reason == "error"
    assert "model exploded" in clips[1].reject.detail


class OnGpu(Stage):
    name = "on_gpu"

    def resources(self):
        return Resources(gpus=0.5)


def test_cpu_stages_share_a_segment_and_gpu_stages_get_their_own():
    segments = plan_segments(_pipeline(MeanLuma, WithSetup, FrameCount, OnGpu, FailsOnSecondClip))
    assert [s.label for s in segments] == ["probe+shots+clips+mean_luma+with_setup+frame_count", "on_gpu",
                                           "fails_on_second+encode"]
    assert [s.needs_actor for s in segments] == [True, True, False]
    assert [s.resources().gpus for s in segments] == [0, 0.5, 0]


def test_rejected_clips_are_never_encoded_and_clip_bytes_repeat(demo_inputs):
    (segment,) = plan_segments(_pipeline(FrameCount, FailsOnSecondClip))
    runs = []
    for _ in range(2):
        runner = SegmentRunner(segment)
        clips = runner(_clips(demo_inputs))
        encode = next(stage for stage in runner.stages if stage.name == "encode")
        kept = [c for c in clips if c.kept]
        assert len(kept) == 1 and encode.clips_encoded == 1  # the clip the filter rejected was not cut
        assert abs(kept[0].scores["frame_count.n"] - kept[0].meta["clips"]["duration"] * 5) <= 1  # from the source window
        runs.append(kept[0].members["mp4"])
    assert runs[0] == runs[1]


def test_a_segment_with_setup_decodes_once_too(demo_inputs):
    (segment,) = plan_segments(_pipeline(MeanLuma, WithSetup, FrameCount))
    runner = SegmentRunner(segment)
    kept = [c for c in runner(_clips(demo_inputs)) if c.kept]
    assert runner.decodes == len(kept) == 2
    assert all(c.scores["with_setup.doubled"] == 2 * c.meta["mean_luma"]["shape"][0] for c in kept)


@pytest.mark.slow
def test_ray_actor_segments_match_the_local_executor(demo_inputs):
    import ray

    from conftest import REPO_ROOT

    pipeline = _pipeline(MeanLuma, WithSetup, FailsOnSecondClip)
    # the stages above live in this test module: Ray's workers must be able to import it
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'tests'}"}}, include_dashboard=False)
    local = LocalExecutor().run(pipeline, _clips(demo_inputs), SummarisingSink())
    try:
        distributed = RayExecutor(workers=1).run(pipeline, _clips(demo_inputs), SummarisingSink())
    finally:
        ray.shutdown()
    summary = lambda reports: sorted(row for report in reports for row in report)
    assert summary(local) == summary(distributed)
    assert any(row[1] for row in summary(local))


class SummarisingSink:
    """Stands in for the corpus writer: each write task returns a summary of the items it got."""

    params = types.SimpleNamespace(max_samples_per_shard=1000)

    def write(self, items, task):
        return [(i.key, i.scores.get("with_setup.doubled"), i.reject and i.reject.reason) for i in items]


class HoldsAGpuShare(Stage):
    """Records what Ray reserved for the worker it runs in (tests may import Ray; stages may not),
    and holds the item long enough that workers sharing a GPU overlap in time. It reads frames, so
    its worker takes two batches at once: one decoding while the other runs."""

    name = "holds_a_gpu_share"

    def frame_specs(self):
        return [SMALL]

    def setup(self):
        import os

        self.pid = os.getpid()

    def process_item(self, item):
        import time

        import ray

        started = time.time()
        time.sleep(1.0)
        self.record(item, {"resources": ray.get_runtime_context().get_assigned_resources(), "pid": self.pid,
                           "span": [started, time.time()]})


class RecordingSink(SummarisingSink):
    def write(self, items, task):
        return [item.meta.get("holds_a_gpu_share") for item in items if item.kept]


@pytest.mark.slow
def test_a_half_gpu_pool_runs_two_workers_per_gpu(demo_inputs):
    """A node that declares one GPU; the pool's `gpus: 0.5` stands in for a GPU stage while the
    stage itself computes on the CPU (no GPU here): Ray packs two of its workers onto the one GPU."""
    import ray

    from conftest import REPO_ROOT
    from curation.pipeline import Pool

    pipeline = _pipeline(HoldsAGpuShare)
    next(s for s in pipeline.stages if s.name == "holds_a_gpu_share").pool = Pool(min_workers=2, max_workers=2, gpus=0.5)
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False,  # CPUs left for the cutting and write tasks
             runtime_env={"env_vars": {"PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'tests'}"}})
    try:
        executor = RayExecutor()
        plan = executor.plan(pipeline)
        records = [r for report in executor.run(pipeline, _clips(demo_inputs) * 2, RecordingSink()) for r in report]
    finally:
        ray.shutdown()
    assert "segment 2: holds_a_gpu_share (actors 2-2, 1 CPU + 0.5 GPU" in "\n".join(plan)
    assert "decodes the next batch while one runs" in plan[2]
    assert len(records) == 4 and all(r["resources"]["GPU"] == 0.5 for r in records)
    spans = {}
    for record in records:
        spans.setdefault(record["pid"], []).append(record["span"])
    assert len(spans) == 2  # two workers on the one GPU
    first, second = (sorted(s) for s in spans.values())
    assert any(a[0] < b[1] and b[0] < a[1] for a in first for b in second)  # at the same time
    for own in (first, second):  # a worker takes two batches at once, but runs its stage on one at a time
        assert all(earlier[1] <= later[0] for earlier, later in zip(own, own[1:]))
