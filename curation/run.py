"""One run: list and identify the inputs, skip what the corpus already has, execute, commit, report."""
from __future__ import annotations

import json
import platform
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from tqdm import tqdm

from curation.executors import make_executor
from curation.index import RUNS, check_pipeline, consolidate, recover
from curation.lease import Lease
from curation.pipeline import REPO_ROOT, Pipeline
from curation.report import write_report
from curation.sources import Source, identify, list_inputs
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
        sources, unusable, duplicates = identify(list_inputs(options.input), state.known_hashes)
        todo = [s for s in sources if s.source_id not in state.done_sources]
        progress = tqdm(total=len(todo), unit="source", desc=f"{pipeline.name} ({options.executor})",
                        disable=not options.progress or not todo or options.executor != "local")
        executor = make_executor(options.executor, options.workers, options.ray_address, options.progress,
                                 on_source_done=progress.update)
        reports = []
        if todo:
            for line in executor.plan(pipeline):
                options.announce(line)
            todo_ids = {s.source_id for s in todo}
            skip = frozenset(k for k, source_id in state.committed_keys.items() if source_id in todo_ids)
            reports = executor.run(pipeline, (_item(s) for s in todo), CorpusSink(storage, pipeline, run_id, skip))
        progress.close()
        consolidate(storage)
    stats = WriterStats()
    for report in reports:
        stats.merge(report.stats)
    record = _run_record(pipeline, options, run_id, started, stats, reports, len(sources), len(todo), unusable,
                         duplicates, state.quarantined)
    storage.write_atomic(f"{RUNS}/{run_id}.json", json.dumps(record, indent=1, sort_keys=True).encode())
    write_report(storage)
    return record


def _item(source: Source) -> Item:
    return Item(source_id=source.source_id, source_path=source.path,
                source_file={"sha256": source.sha256, "size_bytes": source.size_bytes, "mtime_ns": source.mtime_ns})


def _run_record(pipeline, options, run_id, started, stats, reports, n_inputs, n_todo, unusable, duplicates,
                quarantined) -> dict:
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
            "inputs": n_inputs, "already_done": n_inputs - n_todo, "processed": n_todo,
            "unusable": dict(Counter(u["reason"] for u in unusable)), "duplicates": len(duplicates),
            "sources": dict(stats.sources), "clips": dict(stats.clips),
            "rejects": {f"{stage}:{reason}": n for (stage, reason), n in sorted(stats.rejects.items())},
            "shards_written": len(shards),
        },
        "shards_written": shards,
        "commits_lost_to_another_attempt": sorted(name for report in reports for name in report.lost_races),
        "unusable_inputs": unusable,
        "duplicate_paths": [{"path": p, "source_id": s} for p, s in duplicates],
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
        lines.append(f"  unusable {n:>5}  {reason}  (paths and details in the run record)")
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
