"""The sink: each write task turns the items it is given into samples and index rows and commits
them by the protocol of curation/commit.py, so every worker writes its own shards and nothing large
reaches the driver, which only merges the tasks' small reports.

A key already committed (by a run that crashed part way through its source) is skipped, so a resumed
run writes each sample exactly once.
"""
from __future__ import annotations

import copy
import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from curation.commit import CommitWriter
from curation.index import record_configuration
from curation.pipeline import Pipeline
from curation.stage import Item
from curation.storage import Storage


@dataclass
class WriteReport:
    """What one write task did: its counts and timings, and the commits it published."""

    stats: WriterStats
    commits: list[str] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    lost_races: list[str] = field(default_factory=list)  # commits another attempt of the task had made


class CorpusSink:
    """Everything a write task needs, picklable: the output, the sink's parameters, how samples are
    shaped, and the keys to skip. `write` is one write task; the executors decide how many run."""

    def __init__(self, storage: Storage, pipeline: Pipeline, run_id: str, skip_keys: frozenset[str]):
        self.storage, self.params, self.run_id = storage, pipeline.sink.params, run_id
        self.sample = SampleDocument(pipeline)
        self.configuration = (pipeline.name, pipeline.config_hash())
        self.skip_keys = skip_keys

    def write(self, items: Iterable[Item], task: str) -> WriteReport:
        """One write task. `task` names it uniquely within the run, and the same way when retried."""
        writer = _TaskWriter(self, CommitWriter(self.storage, self.run_id, task, self.params.max_samples_per_shard,
                                                self.params.max_bytes_per_shard))
        try:
            for item in items:
                writer.add(item)
        except BaseException:
            writer.commits.abandon()
            raise
        writer.commit()
        return writer.report()


class _TaskWriter:
    def __init__(self, sink: CorpusSink, commits: CommitWriter):
        self.sink, self.commits = sink, commits
        self.stats = WriterStats()
        self.clip_rows: list[dict] = []
        self.source_rows: dict[str, dict] = {}
        self.last_commit = time.monotonic()

    def add(self, item: Item) -> None:
        self.stats.count(item)
        self.source_rows.setdefault(item.source_id, source_row(item, self.sink))
        if item.key is not None and item.key not in self.sink.skip_keys:
            row = clip_row(item, self.sink.run_id)
            if item.kept:
                row["shard"] = self.commits.add_sample(self.sink.sample.members(item))
            self.clip_rows.append(row)
        if self.commits.shard_full or time.monotonic() - self.last_commit > self.sink.params.commit_interval_s:
            self.commit()

    def commit(self) -> None:
        if not self.commits.published and (self.clip_rows or self.source_rows):
            record_configuration(self.sink.storage, *self.sink.configuration, self.sink.run_id)
        self.commits.commit(self.clip_rows, list(self.source_rows.values()))
        self.clip_rows, self.source_rows = [], {}
        self.last_commit = time.monotonic()

    def report(self) -> WriteReport:
        published = self.commits.published
        return WriteReport(self.stats, [c.name for c in published], [c.shard for c in published if c.shard],
                           self.commits.lost_races)


class SampleDocument:
    """A sample's members: the stages' members plus the json, which each stage shapes from its own
    metadata (`Stage.annotate_sample`), in pipeline order."""

    def __init__(self, pipeline: Pipeline):
        self.lineage = pipeline.lineage()
        self.stage_classes = [config.cls for config in pipeline.stages]
        self.source_score_prefixes = tuple(f"{cls.name}." for cls in self.stage_classes if cls.source_scores)
        self.source_columns = [(cls.name, field) for cls in self.stage_classes for field in cls.source_columns]
        self.sample_fields = {name: value for cls in self.stage_classes for name, value in cls.sample_fields.items()}

    def members(self, item: Item) -> dict[str, Any]:
        return {"__key__": item.key, "json": self.json(item), **item.members}

    def json(self, item: Item) -> bytes:
        document = {
            "key": item.key,
            "source": {"id": item.source_id, "path": item.source_path, "sha256": item.source_file.get("sha256")},
            **copy.deepcopy(self.sample_fields),
            "scores": item.scores,
            "stages": dict(item.meta),
            "lineage": self.lineage,
        }
        for cls in self.stage_classes:
            cls.annotate_sample(document)
        return json.dumps(document, sort_keys=True, ensure_ascii=False, default=_json_default).encode()


def clip_row(item: Item, run_id: str) -> dict[str, Any]:
    reject = item.reject
    return {
        "key": item.key, "source_id": item.source_id, "source_path": item.source_path,
        "clip_index": item.clip_index, "start": item.start, "end": item.end,
        "duration": round(item.end - item.start, 4),
        "status": "kept" if reject is None else "rejected",
        "reject_stage": reject.stage if reject else None,
        "reject_reason": reject.reason if reject else None,
        "reject_detail": reject.detail if reject else None,
        "shard": None, "run_id": run_id, **item.scores,
    }


def source_row(item: Item, sink: CorpusSink) -> dict[str, Any]:
    """The source's row as this item knows it; n_kept and the final status are counted from the
    committed clip rows when the index is consolidated (its clips may be committed by many tasks)."""
    source_reject = item.reject if item.key is None else None
    prefixes = sink.sample.source_score_prefixes
    return {
        "source_id": item.source_id, "path": item.source_path, **item.source_file,
        "status": "rejected" if source_reject else "ok",
        "reject_stage": source_reject.stage if source_reject else None,
        "reject_reason": source_reject.reason if source_reject else None,
        "reject_detail": source_reject.detail if source_reject else None,
        "n_clips": item.clips_in_source or 0, "run_id": sink.run_id,
        **{k: v for k, v in item.scores.items() if k.startswith(prefixes)},
        **{f"{stage}.{field}": json.dumps(item.meta[stage][field]) for stage, field in sink.sample.source_columns
           if field in item.meta.get(stage, {})},
    }


class WriterStats:
    """Counts and stage timings of what a run processed (including clips skipped on resume)."""

    def __init__(self):
        self.sources = Counter()
        self.clips = Counter()
        self.rejects: Counter[tuple[str, str]] = Counter()
        self.stage_seconds: Counter[str] = Counter()
        self.stage_cpu_seconds: Counter[str] = Counter()
        self.kept_seconds = 0.0
        self.source_seconds = 0.0

    def count(self, item: Item) -> None:
        self.stage_seconds.update(item.timings)
        self.stage_cpu_seconds.update(item.cpu_seconds)
        if item.key is None or item.clip_index == 0:
            self.source_seconds += item.source_duration or 0.0
            self.sources["rejected" if item.key is None and item.reject else "ok"] += 1
        if item.reject:
            self.rejects[(item.reject.stage, item.reject.reason)] += 1
        if item.key is not None:
            self.clips["kept" if item.kept else "rejected"] += 1
            if item.kept:
                self.kept_seconds += item.end - item.start

    def merge(self, other: WriterStats) -> None:
        for name in ("sources", "clips", "rejects", "stage_seconds", "stage_cpu_seconds"):
            getattr(self, name).update(getattr(other, name))
        self.kept_seconds += other.kept_seconds
        self.source_seconds += other.source_seconds


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
