"""One run: list and identify the inputs, skip what the corpus already has, execute, commit, report."""
from __future__ import annotations

import itertools
import json
import platform
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata

from tqdm import tqdm

from curation.commit import CommitWriter
from curation.executors import make_executor
from curation.index import RUNS, check_pipeline, consolidate, recover
from curation.lease import Lease
from curation.pipeline import REPO_ROOT, Pipeline
from curation.report import write_report
from curation.sources import Source, Unusable, identify, list_inputs
from curation.stage import Item
from curation.storage import Storage
from curation.writer import CorpusSink, WriterStats

_PACKAGES = ("torch", "ray", "scenedetect", "av", "webdataset", "pyarrow", "opencv-python",
             "onnxruntime", "transformers", "numpy")


@dataclass
class RunOptions:
    input: str
    output: str
    executor: str = "local"
    workers: int | None = None
    ray_address: str | None = None
    force: bool = False
    progress: bool = True
    chunk_sources: int = 10_000  # Ray: sources per streaming execution (the driver holds one chunk)
    announce: Callable[[str], None] = print  # the plan, before the run starts


def run_pipeline(pipeline: Pipeline, options: RunOptions) -> dict:
    """Under the output's lease: recover, skip what is committed, run, consolidate, record."""
    started = time.time()
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + "-" + secrets.token_hex(3)
    storage = Storage(options.output)
    storage.makedirs("")
    check_pipeline(storage, pipeline.name, pipeline.config_hash(), options.force)
    with Lease(storage, run_id):
        state = recover(storage, run_id)
        inputs = Inputs(identify(list_inputs(options.input), state.known_ids), state.done_sources,
                        {path for path, _, _ in state.known_ids})
        progress = tqdm(unit="source", desc=f"{pipeline.name} ({options.executor})",
                        disable=not options.progress or options.executor != "local")
        executor = make_executor(options.executor, options.workers, options.ray_address, options.progress,
                                 on_source_done=progress.update, chunk_sources=options.chunk_sources)
        todo = inputs.todo()
        first = next(todo, None)
        reports = []
        if first is not None:
            for line in executor.plan(pipeline):
                options.announce(line)
            partly_done = frozenset(k for k, source_id in state.committed_keys.items()
                                    if source_id not in state.done_sources)
            reports = executor.run(pipeline, itertools.chain([first], todo),
                                   CorpusSink(storage, pipeline, run_id, partly_done))
        progress.close()
        inputs.commit_duplicates(storage, pipeline.sink.params, run_id)
        consolidate(storage)
    stats = WriterStats()
    for report in reports:
        stats.merge(report.stats)
    record = _run_record(pipeline, options, run_id, started, stats, reports, inputs, state.quarantined)
    storage.write_atomic(f"{RUNS}/{run_id}.json", json.dumps(record, indent=1, sort_keys=True).encode())
    write_report(storage)
    return record


def _duplicate_row(source: Source) -> dict:
    return {"source_id": source.source_id, "path": source.path, "size_bytes": source.size_bytes,
            "mtime_ns": source.mtime_ns, "status": "duplicate", "reject_stage": None,
            "reject_reason": "duplicate", "reject_detail": "the same content as another input (same content id)",
            "n_clips": 0}


class Inputs:
    """The identified inputs as the run consumes them: the sources to process, as Items, and counts
    of the rest (already done, duplicate content, unusable), with a bounded list of examples each,
    so the driver's memory does not grow with the manifest."""

    EXAMPLES = 100

    def __init__(self, identified: Iterable[Source | Unusable], done: set[str], known_paths: set[str]):
        self.identified, self.done = identified, done
        self.counts: Counter[str] = Counter()
        self.unusable: Counter[str] = Counter()
        self.examples: dict[str, list] = {"unusable": [], "duplicates": []}
        self.seen: set[str] = set()
        self.not_listed = set(known_paths)  # the corpus's sources this input no longer names
        self.duplicate_rows: list[dict] = []

    def todo(self) -> Iterator[Item]:
        for found in self.identified:
            self.counts["inputs"] += 1
            self.not_listed.discard(found.path)
            if isinstance(found, Unusable):
                self.unusable[found.reason] += 1
                self._example("unusable", {"path": found.path, "reason": found.reason, "detail": found.detail})
            elif found.source_id in self.seen:
                self.counts["duplicates"] += 1
                self._example("duplicates", {"path": found.path, "source_id": found.source_id})
                self.duplicate_rows.append(_duplicate_row(found))
            else:
                self.seen.add(found.source_id)
                if found.source_id in self.done:
                    self.counts["already_done"] += 1
                    continue
                self.counts["processed"] += 1
                yield Item(source_id=found.source_id, source_path=found.path,
                           source_file={"size_bytes": found.size_bytes, "mtime_ns": found.mtime_ns})

    def commit_duplicates(self, storage: Storage, params, run_id: str) -> None:
        """Index rows for the inputs whose content an earlier one has (status "duplicate")."""
        CommitWriter(storage, run_id, "inputs", params.max_samples_per_shard, params.max_bytes_per_shard
                     ).commit([], self.duplicate_rows)

    def _example(self, kind: str, example: dict) -> None:
        if len(self.examples[kind]) < self.EXAMPLES:
            self.examples[kind].append(example)


def _run_record(pipeline, options, run_id, started, stats, reports, inputs: Inputs, quarantined) -> dict:
    wall = time.time() - started
    shards = sorted(shard for report in reports for shard in report.shards)
    return {
        "run_id": run_id,
        "pipeline": pipeline.lineage(),
        "config_hash": pipeline.config_hash(),
        "input": options.input,
        "executor": options.executor,
        "workers": options.workers,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(wall, 3),
        "counts": {
            "inputs": inputs.counts["inputs"], "already_done": inputs.counts["already_done"],
            "processed": inputs.counts["processed"], "unusable": dict(inputs.unusable),
            "duplicates": inputs.counts["duplicates"], "not_listed": len(inputs.not_listed),
            "sources": dict(stats.sources), "clips": dict(stats.clips),
            "rejects": {f"{stage}:{reason}": n for (stage, reason), n in sorted(stats.rejects.items())},
            "shards_written": len(shards),
        },
        "shards_written": shards,
        "commits_lost_to_another_attempt": sorted(name for report in reports for name in report.lost_races),
        "unusable_inputs": inputs.examples["unusable"],  # the first Inputs.EXAMPLES of each
        "duplicate_paths": inputs.examples["duplicates"],
        "not_listed_paths": sorted(inputs.not_listed)[:Inputs.EXAMPLES],  # in the corpus, not in this input
        "quarantined": quarantined,
        "stage_seconds": {k: round(v, 3) for k, v in stats.stage_seconds.items()},
        "stage_cpu_seconds": {k: round(v, 3) for k, v in stats.stage_cpu_seconds.items()},
        "throughput": {
            "source_seconds": round(stats.source_seconds, 2),
            "kept_clip_seconds": round(stats.kept_seconds, 2),
            "footage_seconds_per_wall_second": round(stats.source_seconds / wall, 3) if wall else None,
        },
        "versions": _versions(),
    }


def _versions() -> dict:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in _PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        first_line = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.split("\n")[0]
        versions["ffmpeg"] = first_line
    commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    versions["git_commit"] = commit.stdout.strip() or None
    versions["argv"] = sys.argv
    return versions


def summary_text(record: dict, output: str) -> str:
    counts = record["counts"]
    clips = counts["clips"]
    lines = [
        f"run {record['run_id']} ({record['pipeline']['pipeline']}, {record['executor']}): "
        f"{record['wall_seconds']:.1f} s",
        f"  inputs {counts['inputs']}: processed {counts['processed']}, already done {counts['already_done']}, "
        f"unusable {sum(counts['unusable'].values())}, duplicate content {counts['duplicates']}",
        f"  sources ok {counts['sources'].get('ok', 0)}, rejected {counts['sources'].get('rejected', 0)}; "
        f"clips kept {clips.get('kept', 0)}, rejected {clips.get('rejected', 0)}; "
        f"shards written {counts['shards_written']}",
    ]
    for reason, n in counts["unusable"].items():
        lines.append(f"  unusable {n:>5}  {reason}  (examples with details in the run record)")
    if counts["not_listed"]:
        lines.append(f"  {counts['not_listed']} source(s) of the corpus are not in this input (moved, renamed or "
                     "removed; their samples stay: examples in the run record)")
    for reason, n in counts["rejects"].items():
        lines.append(f"  rejected {n:>5}  {reason}")
    throughput = record["throughput"]
    if throughput["source_seconds"]:
        lines.append(f"  footage {throughput['source_seconds']:.1f} s -> kept clips {throughput['kept_clip_seconds']:.1f} s; "
                     f"{throughput['footage_seconds_per_wall_second']:.2f} s of footage per second")
    if record["quarantined"]:
        lines.append(f"  quarantined {len(record['quarantined'])} damaged or uncommitted file group(s) before the run "
                     f"(under {output.rstrip('/')}/quarantine/; reasons in the run record)")
    lines.append(f"  report: {output.rstrip('/')}/report.html   status: curation status {output}")
    return "\n".join(lines)
