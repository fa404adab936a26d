"""The sink: WebDataset shards and index parts, committed so that a crash loses no work twice.

Rows wait in memory until what they describe is durable: a kept clip's row until its shard is
renamed into place, a source's row until all its clips are committed. A key already committed (by a
crashed run that got part way) is skipped, so a resumed run writes each sample exactly once.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from curation.index import CorpusPaths, CorpusState
from curation.sources import Source
from curation.stage import Item

TAR_MTIME = 0  # fixed member times: the same samples give the same shard bytes


class CorpusWriter:
    def __init__(self, paths: CorpusPaths, params, lineage: dict, run_id: str, state: CorpusState,
                 sources: dict[str, Source], on_source_done=None):
        self.paths, self.params, self.lineage, self.run_id = paths, params, lineage, run_id
        self.state, self.sources = state, sources
        self.on_source_done = on_source_done or (lambda source_id: None)
        self.shard: _OpenShard | None = None
        self.shard_rows: list[dict] = []  # rows of samples in the open shard
        self.free_rows: list[dict] = []  # rows of rejected clips: durable once their part is
        self.waiting_sources: dict[str, dict] = {}  # complete sources with samples not yet durable
        self.received: Counter[str] = Counter()
        self.kept: Counter[str] = Counter()
        self.last_commit = time.monotonic()
        self.stats = WriterStats()

    def add(self, item: Item) -> None:
        self.stats.count(item)
        if item.key is None:
            self._source_complete(item, n_clips=0)
        else:
            self.received[item.source_id] += 1
            self.kept[item.source_id] += item.kept
            if item.key not in self.state.committed_keys:
                self._add_clip(item)
            if self.received[item.source_id] == item.clips_in_source:
                self._source_complete(item, n_clips=item.clips_in_source)
        if time.monotonic() - self.last_commit > self.params.commit_interval_s:
            self._commit(close_shard=False)

    def close(self) -> None:
        self._commit(close_shard=True)

    def _add_clip(self, item: Item) -> None:
        row = clip_row(item, self.run_id)
        if not item.kept:
            self.free_rows.append(row)
            return
        if self.shard is None:
            self.shard = _OpenShard(self.paths.shards, self.state.next_shard)
        self.shard.write(sample_members(item, self.sources[item.source_id], self.lineage))
        row["shard"] = self.shard.name
        self.shard_rows.append(row)
        if (self.shard.samples >= self.params.max_samples_per_shard
                or self.shard.bytes >= self.params.max_bytes_per_shard):
            self._commit(close_shard=True)

    def _source_complete(self, item: Item, n_clips: int) -> None:
        row = source_row(item, self.sources[item.source_id], n_clips, self.kept[item.source_id], self.run_id)
        self.waiting_sources[item.source_id] = row
        self.on_source_done(item.source_id)

    def _commit(self, close_shard: bool) -> None:
        """Durable order: shard file, then the part naming it. A rows-only commit leaves the open
        shard (and the sources with samples in it) for later."""
        in_open_shard = {row["source_id"] for row in self.shard_rows} if not close_shard else set()
        clip_rows = self.free_rows + (self.shard_rows if close_shard else [])
        source_rows = [row for sid, row in self.waiting_sources.items() if sid not in in_open_shard]
        if not clip_rows and not source_rows:
            return
        part = self.paths.parts / f"part-{self.state.next_part:06d}"
        staging = self.paths.parts / f".tmp-{part.name}"
        staging.mkdir()
        _write_rows(staging / "clips.parquet", clip_rows)
        _write_rows(staging / "sources.parquet", source_rows)
        if close_shard and self.shard is not None:
            self.stats.shards.append(self.shard.commit())
            self.state.next_shard += 1
            self.shard = None
        os.replace(staging, part)
        self.state.next_part += 1
        self.state.committed_keys.update(row["key"] for row in clip_rows)
        self.free_rows = []
        if close_shard:
            self.shard_rows = []
        for row in source_rows:
            del self.waiting_sources[row["source_id"]]
            self.state.done_sources.add(row["source_id"])
        self.last_commit = time.monotonic()


class _OpenShard:
    def __init__(self, folder: Path, number: int):
        self.name = f"shard-{number:06d}.tar"
        self.final = folder / self.name
        self.temporary = folder / f"{self.name}.tmp"
        self.handle = open(self.temporary, "wb")
        self.tar = wds.TarWriter(self.handle, mtime=TAR_MTIME, encoder=False)
        self.samples = 0
        self.bytes = 0

    def write(self, members: dict[str, Any]) -> None:
        self.bytes += self.tar.write(members)
        self.samples += 1

    def commit(self) -> str:
        self.tar.close()  # closes the file too
        with open(self.temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(self.temporary, self.final)
        return self.name


def sample_members(item: Item, source: Source, lineage: dict) -> dict[str, Any]:
    members: dict[str, Any] = {"__key__": item.key, "json": sample_json(item, source, lineage)}
    members.update(item.members)
    return members


def sample_json(item: Item, source: Source, lineage: dict) -> bytes:
    meta = item.meta
    document = {
        "key": item.key,
        "source": {"id": item.source_id, "path": item.source_path, "sha256": source.sha256,
                   "probe": meta.get("probe")},
        "clip": meta.get("clips"),
        "caption": meta.get("caption", {}).get("text"),
        "identities": _identities(meta),
        "scores": item.scores,
        "stages": {name: value for name, value in meta.items() if name not in ("probe", "clips")},
        "lineage": lineage,
    }
    return json.dumps(document, sort_keys=True, ensure_ascii=False, default=_json_default).encode()


def _identities(meta: dict) -> list:
    """From the most specific stage that defines identities: the audio-visual `identities` stage
    (people matched to faces and speech), else `people`; with the grounding phrase of identity i
    from the `masks` stage when it ran (its identity i is the same person)."""
    found: list = []
    for stage in ("identities", "people"):
        if "identities" in meta.get(stage, {}):
            found = [dict(identity) for identity in meta[stage]["identities"]]
            break
    masked = meta.get("masks", {}).get("identities", [])
    if not found:
        return [dict(identity) for identity in masked]
    for identity, grounded in zip(found, masked):
        identity.setdefault("phrase", grounded.get("phrase"))
    return found


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


def source_row(item: Item, source: Source, n_clips: int, n_kept: int, run_id: str) -> dict[str, Any]:
    source_reject = item.reject if item.key is None else None
    probe_scores = {k: v for k, v in item.scores.items() if k.startswith(("probe.", "shots."))}
    return {
        "source_id": item.source_id, "path": source.path, "sha256": source.sha256,
        "size_bytes": source.size_bytes, "mtime_ns": source.mtime_ns,
        "status": "rejected" if source_reject else "ok",
        "reject_stage": source_reject.stage if source_reject else None,
        "reject_reason": source_reject.reason if source_reject else None,
        "reject_detail": source_reject.detail if source_reject else None,
        "n_clips": n_clips, "n_kept": n_kept, "run_id": run_id, **probe_scores,
    }


class WriterStats:
    """Counts and stage timings of what this run processed (including clips skipped on resume)."""

    def __init__(self):
        self.sources = Counter()
        self.clips = Counter()
        self.rejects: Counter[tuple[str, str]] = Counter()
        self.stage_seconds: Counter[str] = Counter()
        self.kept_seconds = 0.0
        self.source_seconds = 0.0
        self.shards: list[str] = []

    def count(self, item: Item) -> None:
        for stage, seconds in item.timings.items():
            self.stage_seconds[stage] += seconds
        if item.key is None or item.clip_index == 0:
            self.source_seconds += float(item.meta.get("probe", {}).get("duration") or 0.0)
            self.sources["rejected" if item.key is None and item.reject else "ok"] += 1
        if item.reject:
            self.rejects[(item.reject.stage, item.reject.reason)] += 1
        if item.key is not None:
            self.clips["kept" if item.kept else "rejected"] += 1
            if item.kept:
                self.kept_seconds += item.end - item.start


def _write_rows(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(name for row in rows for name in row))  # rows differ in scores
    table = pa.Table.from_pylist([{name: row.get(name) for name in columns} for row in rows]) if rows else pa.table({})
    pq.write_table(table, path)


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
