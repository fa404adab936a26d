"""Executors: run a pipeline's segments over source items and hand the results to write tasks.

The contract (`Executor`) is small: `plan` says how the pipeline would run, `run` runs it and returns
the write tasks' reports. Both executors run the same segments (curation/runner.py) and the same
write task (`CorpusSink.write`), so they do the same work and write the same samples; a Slurm or
Kubernetes launcher is one more class here.
"""
from __future__ import annotations

import itertools
import logging
import os
import pickle
from collections.abc import Iterable, Iterator
from typing import Protocol

from curation import reaper
from curation.pipeline import REPO_ROOT, Pipeline
from curation.runner import Segment, SegmentRunner, plan_segments
from curation.stage import Item
from curation.writer import CorpusSink, WriteReport


class Executor(Protocol):
    name: str

    def plan(self, pipeline: Pipeline) -> list[str]:
        """How the pipeline will run here: one line per segment, then the writer."""

    def run(self, pipeline: Pipeline, items: Iterable[Item], sink: CorpusSink) -> list[WriteReport]:
        """Process every item through every segment and write the results with `sink`."""


class LocalExecutor:
    """In-process and sequential, one source at a time through every segment, into one write task:
    for debugging and tests, and the reference the Ray executor must agree with."""

    name = "local"

    def __init__(self, on_source_done=None):
        self.on_source_done = on_source_done or (lambda: None)

    def plan(self, pipeline: Pipeline) -> list[str]:
        lines = [f"segment {i}: {s.label} (in this process)" for i, s in enumerate(plan_segments(pipeline), 1)]
        return lines + ["write: one task in this process, a shard every "
                        f"{pipeline.sink.params.max_samples_per_shard} samples"]

    def run(self, pipeline: Pipeline, items: Iterable[Item], sink: CorpusSink) -> list[WriteReport]:
        segments = plan_segments(pipeline)
        runners = [SegmentRunner(segment) for segment in segments]
        return [sink.write(self._processed(items, segments, runners), task="local")]

    def _processed(self, items: Iterable[Item], segments: list[Segment], runners: list[SegmentRunner]) -> Iterator[Item]:
        for item in items:
            batch = [item]
            for segment, runner in zip(segments, runners):
                batch = _in_batches(runner, batch, segment.items_per_batch)
            yield from batch
            self.on_source_done()


def _in_batches(runner: SegmentRunner, items: list[Item], size: int) -> list[Item]:
    return [out for start in range(0, len(items), size) for out in runner(items[start:start + size])]


class RayExecutor:
    """Ray Data, streaming: tasks for segments without setup (fused by Ray), actor pools for
    segments with setup or GPUs, sized by each stage's `pool:` and resources; then write tasks in the
    workers (a Ray Datasink), so the driver only schedules and sums the small reports. Items travel
    pickled in one binary column, so stage metadata never has to fit an Arrow schema."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None, progress: bool = True,
                 chunk_sources: int = 10_000):
        self.workers, self.address, self.progress = workers, address, progress
        self.chunk_sources = chunk_sources

    def plan(self, pipeline: Pipeline) -> list[str]:
        import ray

        self._init(ray)
        total, node = ray.cluster_resources(), _largest_node(ray)
        lines = [f"cluster: {len(ray.nodes())} node(s), {total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs"]
        for i, segment in enumerate(plan_segments(pipeline), 1):
            (low, high), options = self._workers(segment, total), _reservation(segment, node)
            kind = "actors" if segment.needs_actor else "tasks"
            gpu = f" + {options['num_gpus']:g} GPU" if options.get("num_gpus") else ""
            capped = " (capped to the largest node)" if options["memory"] < segment.resources().memory_gb * 2**30 else ""
            overlap = "; decodes the next batch while one runs" if segment.calls_at_once > 1 else ""
            lines.append(f"segment {i}: {segment.label} ({kind} {low}-{high}, {options['num_cpus']:g} CPU{gpu}, "
                         f"{options['memory'] / 2**30:.3g} GB{capped} each{overlap})")
        params = pipeline.sink.params
        return lines + [f"write: tasks in the workers, one shard per {params.max_samples_per_shard} samples "
                        f"(or {params.max_bytes_per_shard / 1e9:g} GB)"]

    def run(self, pipeline: Pipeline, items: Iterable[Item], sink: CorpusSink) -> list[WriteReport]:
        """The sources go to Ray in chunks of `chunk_sources`, so the driver never holds more of a
        manifest of millions than one chunk; each chunk is one streaming execution."""
        import ray

        self._init(ray)
        ray.data.DataContext.get_current().enable_progress_bars = self.progress
        reports = []
        for number, chunk in enumerate(_batched(items, self.chunk_sources)):
            reports += self._run_chunk(ray, pipeline, chunk, sink, f"c{number:04d}")
        return reports

    def _run_chunk(self, ray, pipeline: Pipeline, chunk: tuple[Item, ...], sink: CorpusSink, name: str) -> list[WriteReport]:
        dataset = ray.data.from_items([{"item": pickle.dumps(item)} for item in chunk], override_num_blocks=len(chunk))
        total, node = ray.cluster_resources(), _largest_node(ray)
        for segment in plan_segments(pipeline):
            dataset = self._add_segment(dataset, segment, total, node)
        datasink = _corpus_datasink(sink, name)
        # writing is I/O and hashing: a quarter CPU per task keeps it from waiting behind the actor pools
        dataset.write_datasink(datasink, ray_remote_args={"num_cpus": 0.25}, concurrency=self.workers)
        return datasink.reports

    def _init(self, ray) -> None:
        if ray.is_initialized():
            return
        if self.address:  # an existing cluster gets the project's code shipped to it
            runtime_env = {"working_dir": str(REPO_ROOT),
                           "excludes": [".venv/", ".git/", "out/", "**/__pycache__/", ".whl/", ".gl/"]}
        else:
            runtime_env = {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}}
            _watch_for_a_killed_driver()
        ray.init(address=self.address, runtime_env=runtime_env, include_dashboard=False,
                 logging_level=logging.WARNING, num_cpus=None if self.address else os.cpu_count())

    def _workers(self, segment: Segment, total: dict) -> tuple[int, int]:
        """(least, most) workers: the pool's, else as many as the cluster's resources fit; `--workers` caps both."""
        resources, pool = segment.resources(), segment.pool
        if pool.max_workers is not None:
            most = pool.max_workers
        elif resources.gpus:
            most = max(1, int(total.get("GPU", 0) // resources.gpus))
        else:
            most = max(1, int(total.get("CPU", 1) // max(resources.cpus, 1e-3)))
        if self.workers:
            most = min(most, self.workers)
        return min(pool.min_workers, most), most

    def _add_segment(self, dataset, segment: Segment, total: dict, node: dict):
        from ray.data import ActorPoolStrategy

        options = dict(batch_size=segment.items_per_batch, batch_format="numpy", **_reservation(segment, node))
        low, high = self._workers(segment, total)
        if segment.needs_actor:
            pool = ActorPoolStrategy(min_size=low, max_size=high, max_concurrent_calls_per_actor=segment.calls_at_once,
                                     enable_true_multi_threading=segment.calls_at_once > 1)
            return dataset.map_batches(_ActorSegment, fn_constructor_args=(segment,), compute=pool, **options)
        return dataset.map_batches(_task_segment, fn_args=(segment,), concurrency=high, **options)


_watched = False


def _watch_for_a_killed_driver() -> None:
    """The Ray this process starts dies with it, agents included, even after a kill -9 (curation/reaper.py)."""
    global _watched
    if not _watched:
        reaper.start(os.getpid())
        _watched = True


def _batched(items: Iterable[Item], size: int) -> Iterator[tuple[Item, ...]]:
    iterator = iter(items)
    while chunk := tuple(itertools.islice(iterator, size)):
        yield chunk


def _largest_node(ray) -> dict[str, float]:
    """Each resource's most on any one live node: no worker can reserve more than that."""
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    return {name: max(n.get(name, 0.0) for n in nodes) for name in ("CPU", "GPU", "memory")}


def _reservation(segment: Segment, node: dict[str, float]) -> dict:
    """What each worker of the segment asks Ray for, capped to what one node has: a request no node
    can meet would wait forever (e.g. a stage sized for a 7B model, run with a tiny one on a laptop)."""
    resources = segment.resources()
    options = {"num_cpus": min(resources.cpus, node["CPU"] or resources.cpus),
               "memory": min(resources.memory_gb * 2**30, node["memory"] or float("inf"))}
    if resources.gpus:
        options["num_gpus"] = resources.gpus
    return options


def _task_segment(batch: dict, segment: Segment) -> dict:
    return _run_pickled(SegmentRunner(segment), batch)


class _ActorSegment:
    def __init__(self, segment: Segment):
        self.runner = SegmentRunner(segment)

    def __call__(self, batch: dict) -> dict:
        return _run_pickled(self.runner, batch)


def _run_pickled(runner: SegmentRunner, batch: dict) -> dict:
    items = runner([pickle.loads(blob) for blob in batch["item"]])
    return {"item": [pickle.dumps(item) for item in items]}


def _corpus_datasink(sink: CorpusSink, chunk: str):
    """A Ray Datasink whose write tasks each run `CorpusSink.write` on the items they are given
    (about a shard's worth); their reports come back to the driver once the writes are done. Built
    here so that importing this module does not import Ray."""
    from ray.data import Datasink

    class CorpusDatasink(Datasink):
        def __init__(self):
            self.reports: list[WriteReport] = []

        @property
        def min_rows_per_write(self) -> int:
            return sink.params.max_samples_per_shard

        def write(self, blocks, ctx) -> WriteReport:
            items = (pickle.loads(blob) for block in blocks for blob in _column(block, "item"))
            # a retried task has the same task index, hence the same commit names: one attempt wins
            return sink.write(items, task=f"{chunk}t{ctx.task_idx:05d}")

        def on_write_complete(self, write_result) -> None:
            self.reports = list(write_result.write_returns)

    return CorpusDatasink()


def _column(block, name: str) -> list:
    return block.column(name).to_pylist() if hasattr(block, "column") else list(block[name])


def make_executor(name: str, workers: int | None = None, address: str | None = None, progress: bool = True,
                  on_source_done=None, chunk_sources: int = 10_000) -> Executor:
    if name == "local":
        return LocalExecutor(on_source_done)
    if name == "ray":
        return RayExecutor(workers, address, progress, chunk_sources)
    raise ValueError(f"unknown executor {name!r}: use local or ray")
