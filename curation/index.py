"""The corpus on disk: committed index parts, recovery after a crash, and the consolidated index.

A part `index/parts/part-NNNNNN/` (clips.parquet + sources.parquet) is the commit record: it is
renamed into place after the shard it indexes, so a shard without a part is from a crashed run.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PART_PATTERN = re.compile(r"^part-(\d{6})$")
SHARD_PATTERN = re.compile(r"^shard-(\d{6})\.tar$")


@dataclass
class CorpusPaths:
    root: Path

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def parts(self) -> Path:
        return self.root / "index" / "parts"

    @property
    def index(self) -> Path:
        return self.root / "index"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def corpus_file(self) -> Path:
        return self.root / "corpus.json"

    def make(self) -> None:
        for folder in (self.shards, self.parts, self.runs):
            folder.mkdir(parents=True, exist_ok=True)


@dataclass
class CorpusState:
    """What earlier runs committed: the resume point."""

    committed_keys: set[str] = field(default_factory=set)
    done_sources: set[str] = field(default_factory=set)
    known_hashes: dict[tuple[str, int, int], str] = field(default_factory=dict)
    next_shard: int = 0
    next_part: int = 0
    removed_orphans: list[str] = field(default_factory=list)


def committed_parts(paths: CorpusPaths) -> list[Path]:
    if not paths.parts.exists():
        return []
    return sorted(p for p in paths.parts.iterdir() if p.is_dir() and PART_PATTERN.match(p.name))


def read_table(paths: CorpusPaths, kind: str) -> pa.Table:
    """All committed rows of `kind` ("clips" or "sources"), from the parts (always current)."""
    tables = [pq.read_table(part / f"{kind}.parquet") for part in committed_parts(paths)
              if (part / f"{kind}.parquet").exists()]
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")


def recover(paths: CorpusPaths) -> CorpusState:
    """Load the resume point and remove what a crashed run left half-done: temporary files and
    shards that no committed part references."""
    paths.make()
    state = CorpusState()
    for leftover in list(paths.parts.glob(".tmp-*")) + list(paths.shards.glob("*.tmp")):
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        state.removed_orphans.append(str(leftover))
    clips, sources = read_table(paths, "clips"), read_table(paths, "sources")
    referenced: set[str] = set()
    if clips.num_rows:
        state.committed_keys = set(clips.column("key").to_pylist())
        referenced = {s for s in clips.column("shard").to_pylist() if s}
    if sources.num_rows:
        rows = sources.select(["path", "size_bytes", "mtime_ns", "sha256", "source_id"]).to_pylist()
        state.done_sources = {r["source_id"] for r in rows}
        state.known_hashes = {(r["path"], r["size_bytes"], r["mtime_ns"]): r["sha256"] for r in rows}
    for shard in paths.shards.glob("shard-*.tar"):
        if shard.name not in referenced:
            shard.unlink()
            state.removed_orphans.append(str(shard))
    shard_numbers = [int(SHARD_PATTERN.match(s).group(1)) for s in referenced if SHARD_PATTERN.match(s)]
    state.next_shard = max(shard_numbers, default=-1) + 1
    parts = committed_parts(paths)
    state.next_part = int(PART_PATTERN.match(parts[-1].name).group(1)) + 1 if parts else 0
    return state


def consolidate(paths: CorpusPaths) -> None:
    """Rewrite index/clips.parquet and index/sources.parquet from the committed parts."""
    for kind in ("clips", "sources"):
        table = read_table(paths, kind)
        target = paths.index / f"{kind}.parquet"
        temporary = target.with_suffix(".parquet.tmp")
        pq.write_table(table, temporary)
        temporary.replace(target)


def check_pipeline(paths: CorpusPaths, pipeline_name: str, config_hash: str, force: bool) -> None:
    """A corpus is built by one pipeline configuration; mixing two would mix incomparable clips."""
    if paths.corpus_file.exists():
        recorded = json.loads(paths.corpus_file.read_text())
        same = (recorded["pipeline"], recorded["config_hash"]) == (pipeline_name, config_hash)
        if not same and not force:
            raise ValueError(
                f"{paths.root} was built by pipeline {recorded['pipeline']!r} (config {recorded['config_hash']}); "
                f"this run is {pipeline_name!r} (config {config_hash}). Use a new --output, or --force to add to it anyway.")
        if same:
            return
    paths.corpus_file.write_text(json.dumps({"pipeline": pipeline_name, "config_hash": config_hash}, indent=1))
