"""One run: list and identify the inputs, skip what the corpus already has, execute, commit, report."""
from __future__ import annotations

import json
import platform
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from tqdm import tqdm

from curation.executors import make_executor
from curation.index import CorpusPaths, check_pipeline, consolidate, recover
from curation.pipeline import REPO_ROOT, Pipeline
from curation.report import write_report
from curation.sources import identify, list_inputs
from curation.stage import Item
from curation.writer import CorpusWriter

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


def run_pipeline(pipeline: Pipeline, options: RunOptions) -> dict:
    started = time.time()
    paths = CorpusPaths(Path(options.output))
    paths.make()
    check_pipeline(paths, pipeline.name, pipeline.config_hash(), options.force)
    state = recover(paths)
    sources, missing, duplicates = identify(list_inputs(options.input), state.known_hashes)
    todo = [s for s in sources if s.source_id not in state.done_sources]
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + "-" + secrets.token_hex(3)
    progress = tqdm(total=len(todo), unit="source", desc=f"{pipeline.name} ({options.executor})",
                    disable=not options.progress or not todo)
    writer = CorpusWriter(paths, pipeline.sink.params, pipeline.lineage(), run_id, state,
                          {s.source_id: s for s in sources}, on_source_done=lambda _: progress.update())
    if todo:
        executor = make_executor(options.executor, options.workers, options.ray_address)
        executor.run(pipeline, (Item(source_id=s.source_id, source_path=s.path) for s in todo), writer.add)
    writer.close()
    progress.close()
    consolidate(paths)
    record = _run_record(pipeline, options, run_id, started, writer, len(sources), len(todo), missing,
                         duplicates, state.removed_orphans)
    (paths.runs / f"{run_id}.json").write_text(json.dumps(record, indent=1, sort_keys=True))
    write_report(paths)
    return record


def _run_record(pipeline, options, run_id, started, writer, n_inputs, n_todo, missing, duplicates,
                removed) -> dict:
    stats = writer.stats
    wall = time.time() - started
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
            "missing": len(missing), "duplicates": len(duplicates),
            "sources": dict(stats.sources), "clips": dict(stats.clips),
            "rejects": {f"{stage}:{reason}": n for (stage, reason), n in sorted(stats.rejects.items())},
            "shards_written": len(stats.shards),
        },
        "shards_written": stats.shards,
        "missing_paths": missing,
        "duplicate_paths": [{"path": p, "source_id": s} for p, s in duplicates],
        "removed_after_crash": removed,
        "stage_seconds": {k: round(v, 3) for k, v in stats.stage_seconds.items()},
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
        f"missing {counts['missing']}, duplicate content {counts['duplicates']}",
        f"  sources ok {counts['sources'].get('ok', 0)}, rejected {counts['sources'].get('rejected', 0)}; "
        f"clips kept {clips.get('kept', 0)}, rejected {clips.get('rejected', 0)}; "
        f"shards written {counts['shards_written']}",
    ]
    for reason, n in counts["rejects"].items():
        lines.append(f"  rejected {n:>5}  {reason}")
    throughput = record["throughput"]
    if throughput["source_seconds"]:
        lines.append(f"  footage {throughput['source_seconds']:.1f} s -> kept clips {throughput['kept_clip_seconds']:.1f} s; "
                     f"{throughput['footage_seconds_per_wall_second']:.2f} s of footage per second")
    lines.append(f"  report: {Path(output) / 'report.html'}   status: curation status {output}")
    return "\n".join(lines)
