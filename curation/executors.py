"""Executors: run a pipeline's segments over source items and hand every result to a sink.

Both run the same segments (curation/runner.py); swapping one for the other touches no stage.
"""
from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Iterable

from curation.pipeline import REPO_ROOT, Pipeline
from curation.runner import Segment, SegmentRunner, plan_segments
from curation.stage import Item

Sink = Callable[[Item], None]


class LocalExecutor:
    """In-process and sequential, one source at a time through every segment: for debugging and
    tests, and the reference the Ray executor must agree with."""

    name = "local"

    def run(self, pipeline: Pipeline, items: Iterable[Item], sink: Sink) -> None:
        segments = plan_segments(pipeline)
        runners = [SegmentRunner(segment) for segment in segments]
        for item in items:
            batch = [item]
            for segment, runner in zip(segments, runners):
                batch = _in_batches(runner, batch, segment.batch_size)
            for result in batch:
                sink(result)


def _in_batches(runner: SegmentRunner, items: list[Item], size: int) -> list[Item]:
    return [out for start in range(0, len(items), size) for out in runner(items[start:start + size])]


class RayExecutor:
    """Ray Data, streaming: tasks for stages without setup (fused by Ray), callable-class actor
    pools for stages with setup or GPUs. Items travel pickled in one binary column, so stage
    metadata never has to fit an Arrow schema. The sink runs in the driver."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None):
        self.workers = workers
        self.address = address

    def run(self, pipeline: Pipeline, items: Iterable[Item], sink: Sink) -> None:
        import ray

        self._init(ray)
        items = list(items)
        if not items:
            return
        dataset = ray.data.from_items([{"item": pickle.dumps(i)} for i in items], override_num_blocks=len(items))
        total_cpus = ray.cluster_resources().get("CPU", 1)
        for segment in plan_segments(pipeline):
            dataset = self._add_segment(dataset, segment, total_cpus)
        for batch in dataset.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=2):
            for blob in batch["item"]:
                sink(pickle.loads(blob))

    def _init(self, ray) -> None:
        if ray.is_initialized():
            return
        if self.address:  # an existing cluster gets the project's code shipped to it
            runtime_env = {"working_dir": str(REPO_ROOT),
                           "excludes": [".venv/", ".git/", "out/", "**/__pycache__/"]}
        else:
            runtime_env = {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}}
        ray.init(address=self.address, runtime_env=runtime_env, include_dashboard=False,
                 logging_level=logging.WARNING, num_cpus=None if self.address else os.cpu_count())

    def _add_segment(self, dataset, segment: Segment, total_cpus: float):
        resources = segment.resources()
        options = dict(batch_size=segment.batch_size, batch_format="numpy",
                       num_cpus=min(resources.cpus, total_cpus),
                       memory=resources.memory_gb * 2**30)
        if resources.gpus:
            options["num_gpus"] = resources.gpus
        if segment.needs_actor:
            return dataset.map_batches(_ActorSegment, fn_constructor_args=(segment,),
                                       concurrency=self.workers or 1, **options)
        if self.workers:
            options["concurrency"] = self.workers
        return dataset.map_batches(_task_segment, fn_args=(segment,), **options)


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


def make_executor(name: str, workers: int | None = None, address: str | None = None):
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(workers, address)
    raise ValueError(f"unknown executor {name!r}: use local or ray")
