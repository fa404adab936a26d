"""The corpus in its folder (local or object store): what is committed, recovery before a run, the
consolidated index after it, and the records of who built it.

The commits (curation/commit.py) are the truth; `index/clips.parquet`, `index/sources.parquet` and
`index/shards.txt` are rebuilt from them at the end of every run, for readers.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from curation.commit import Inspection, inspect, parquet_bytes, quarantine
from curation.storage import Storage

CORPUS_FILE, RUNS = "corpus.json", "runs"
INDEX_TABLES = {"clips": "index/clips.parquet", "sources": "index/sources.parquet"}
SHARD_LIST = "index/shards.txt"


@dataclass
class CorpusState:
    """What earlier runs committed: the resume point."""

    committed_keys: dict[str, str] = field(default_factory=dict)  # key -> its source id
    done_sources: set[str] = field(default_factory=set)
    known_ids: dict[tuple[str, int, int], str] = field(default_factory=dict)  # (path, size, mtime) -> source id
    quarantined: list[dict] = field(default_factory=list)


def recover(storage: Storage, run_id: str) -> CorpusState:
    """Check what is committed (held under the output's lease, so no writer is mid-commit), move
    what does not stand to quarantine/, and load the resume point from the commits that stand."""
    found = inspect(storage)
    state = CorpusState(quarantined=quarantine(storage, found, run_id))
    clips, sources = committed_tables(storage, found)
    if clips.num_rows:
        state.committed_keys = dict(zip(clips.column("key").to_pylist(), clips.column("source_id").to_pylist()))
    if sources.num_rows:
        rows = sources.select(["path", "size_bytes", "mtime_ns", "source_id", "status"]).to_pylist()
        state.done_sources = {r["source_id"] for r in rows if r["status"] not in ("incomplete", "duplicate")}
        state.known_ids = {(r["path"], r["size_bytes"], r["mtime_ns"]): r["source_id"] for r in rows}
    return state


def committed_tables(storage: Storage, found: Inspection) -> tuple[pa.Table, pa.Table]:
    """Clip rows and source rows of the commits that stand (the clip rows as `inspect` read them).
    A source's clips may be committed by several tasks: its row counts them, and it is
    "incomplete" until all of them are committed."""
    clips = _concat([rows for rows in found.clip_rows.values() if rows.num_rows])
    sources = [pq.read_table(io.BytesIO(storage.read_bytes(path))) for commit in found.commits
               for path in commit.files if path.endswith(".sources.parquet")]
    return clips, _sources_table(_concat([table for table in sources if table.num_rows]), clips)


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def _sources_table(rows: pa.Table, clips: pa.Table) -> pa.Table:
    if not rows.num_rows:
        return rows
    first, duplicates = {}, {}
    for row in rows.to_pylist():  # each task that saw a source wrote its row: keep one
        if row["status"] == "duplicate":  # another path with a source's content: a row of its own
            duplicates.setdefault((row["source_id"], row["path"]), row)
        else:
            first.setdefault(row["source_id"], row)
    counted, kept = {}, {}
    if clips.num_rows:
        for source_id, status in zip(clips.column("source_id").to_pylist(), clips.column("status").to_pylist()):
            counted[source_id] = counted.get(source_id, 0) + 1
            kept[source_id] = kept.get(source_id, 0) + (status == "kept")
    for source_id, row in first.items():
        row["n_kept"] = kept.get(source_id, 0)
        if row["status"] == "ok" and counted.get(source_id, 0) < row["n_clips"]:
            row["status"] = "incomplete"
    return pa.Table.from_pylist(list(first.values()) + list(duplicates.values()))


def read_table(storage: Storage, kind: str) -> pa.Table:
    """The consolidated `kind` ("clips" or "sources") table, as the last run left it."""
    path = INDEX_TABLES[kind]
    if not storage.exists(path):
        return pa.table({})
    return pq.read_table(io.BytesIO(storage.read_bytes(path)))


def consolidate(storage: Storage) -> Inspection:
    """Rewrite the index tables and the shard list from the commits that stand."""
    found = inspect(storage)
    clips, sources = committed_tables(storage, found)
    for kind, table in (("clips", clips), ("sources", sources)):
        storage.write_atomic(INDEX_TABLES[kind], parquet_bytes(table.to_pylist()))
    shards = sorted(c.shard for c in found.commits if c.shard)
    storage.write_atomic(SHARD_LIST, "".join(f"{shard}\n" for shard in shards).encode())
    return found


def configurations(storage: Storage) -> list[dict]:
    """The pipeline configurations that built this corpus, in the order they first wrote to it."""
    if not storage.exists(CORPUS_FILE):
        return []
    try:
        return json.loads(storage.read_bytes(CORPUS_FILE))["configurations"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{storage.url(CORPUS_FILE)}: unreadable ({type(err).__name__}: {err}); it lists the "
                         "configurations that built this corpus: restore it or use a new --output") from None


def check_pipeline(storage: Storage, pipeline_name: str, config_hash: str, force: bool) -> None:
    """A corpus is built by one pipeline configuration; mixing two would mix incomparable clips."""
    recorded = configurations(storage)
    known = [(c["pipeline"], c["config_hash"]) for c in recorded]
    if recorded and not force and (pipeline_name, config_hash) not in known:
        built = ", ".join(f"{c['pipeline']!r} (config {c['config_hash']})" for c in recorded)
        raise ValueError(f"{storage.root} was built by pipeline {built}; this run is {pipeline_name!r} "
                         f"(config {config_hash}). Use a new --output, or --force to add to it anyway.")


def record_configuration(storage: Storage, pipeline_name: str, config_hash: str, run_id: str) -> None:
    """Add this run's configuration to corpus.json. Called once the run has work to do, so a run
    that fails before any (a model missing at setup) leaves the folder unclaimed."""
    recorded = configurations(storage)
    if any((c["pipeline"], c["config_hash"]) == (pipeline_name, config_hash) for c in recorded):
        return
    recorded.append({"pipeline": pipeline_name, "config_hash": config_hash, "first_run": run_id})
    storage.write_atomic(CORPUS_FILE, json.dumps({"configurations": recorded}, indent=1).encode())


def run_records(storage: Storage) -> tuple[list[dict], list[str]]:
    """The run records, oldest first, and the files that could not be read (a kill at the end of a
    run before records were written atomically): those are reported, never fatal."""
    records, unreadable = [], []
    for name in storage.list(RUNS, ".json"):
        try:
            records.append(json.loads(storage.read_bytes(f"{RUNS}/{name}")))
        except ValueError:
            unreadable.append(storage.url(f"{RUNS}/{name}"))
    return sorted(records, key=lambda r: r["started"]), unreadable
