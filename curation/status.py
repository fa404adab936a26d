"""What a corpus holds, from its committed index: sources, clips kept and rejected, shards, samples."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from curation.cost import DEFAULT_TARGET_HOURS, corpus_cost, cost_text
from curation.commit import COMMITS, inspect
from curation.index import CORPUS_FILE, committed_tables, configurations, run_records
from curation.storage import Storage
from curation.pipeline import available_stages, stage_class


def corpus_status(output: str | Path, target_hours: float | None = DEFAULT_TARGET_HOURS) -> dict:
    """From the commits that stand now (each checked against its files' sizes), not from the last
    consolidated index, so damage since the last run shows."""
    storage = Storage(str(output))
    if not storage.exists(CORPUS_FILE) and not storage.list(COMMITS, ".json"):
        raise FileNotFoundError(f"{output}: not a corpus folder (no corpus.json, no commits)")
    found = inspect(storage)
    clip_table, source_table = committed_tables(storage, found)
    clips, sources = clip_table.to_pylist(), source_table.to_pylist()
    kept = [c for c in clips if c["status"] == "kept"]
    rejects = Counter((c["reject_stage"], c["reject_reason"]) for c in clips if c["status"] == "rejected")
    source_rejects = Counter((s["reject_stage"], s["reject_reason"]) for s in sources if s["status"] == "rejected")
    runs, unreadable_runs = run_records(storage)
    return {
        "output": str(output),
        "configurations": configurations(storage),
        "sources": {"total": len(sources), **Counter(s["status"] for s in sources)},
        "source_rejects": _by_stage(source_rejects),
        "clips": {"total": len(clips), "kept": len(kept), "rejected": len(clips) - len(kept)},
        "clip_rejects": _by_stage(rejects),
        "shards": sum(1 for c in found.commits if c.shard),
        "needs_recovery": {"damaged_commits": [p["path"] for p in found.problems], "uncommitted_files": found.orphans},
        "samples": sum(1 for c in kept if c.get("shard")),
        "kept_hours": round(sum(c["duration"] for c in kept) / 3600, 4),
        "runs": len(runs),
        "unreadable_run_records": unreadable_runs,
        "analysis": corpus_analysis(kept),
        "cost": corpus_cost(storage, target_hours),  # the bill: docs/cost.md
    }


def analysis_columns(columns: set[str]) -> dict[str, str]:
    """The paper's corpus analysis (appendix E.2): dimension -> index column, as declared by the
    stages whose scores are among `columns` (a stage's scores are named "<stage>.<score>")."""
    found = {}
    for name in sorted({column.split(".", 1)[0] for column in columns} & set(available_stages())):
        for dimension, score in stage_class(name).analysis.items():
            if f"{name}.{score}" in columns:
                found[dimension] = f"{name}.{score}"
    return found


def corpus_analysis(kept: list[dict]) -> dict[str, dict[str, int]]:
    """Distributions over kept clips; a dimension appears once a stage that measures it has run."""
    analysis = {}
    columns = {column for clip in kept for column in clip}
    for dimension, column in analysis_columns(columns).items():
        analysis[dimension] = dict(Counter(str(clip.get(column) or "unknown") for clip in kept).most_common())
    return analysis


def _by_stage(counter: Counter) -> dict[str, dict[str, int]]:
    grouped: dict[str, dict[str, int]] = {}
    for (stage, reason), n in sorted(counter.items()):
        grouped.setdefault(stage, {})[reason] = n
    return grouped


def status_text(status: dict) -> str:
    sources = status["sources"]
    built = ", ".join(f"pipeline {c['pipeline']}, config {c['config_hash']}" for c in status["configurations"])
    lines = [
        f"corpus {status['output']}  ({built or 'no configuration recorded'}; {status['runs']} runs)",
        f"sources: {sources['total']} ({', '.join(f'{k} {v}' for k, v in sources.items() if k != 'total') or 'none'})",
    ]
    for stage, reasons in status["source_rejects"].items():
        lines += [f"  source rejected by {stage}: {reason} {n}" for reason, n in reasons.items()]
    clips = status["clips"]
    lines.append(f"clips: {clips['total']} (kept {clips['kept']}, rejected {clips['rejected']}); "
                 f"kept footage {status['kept_hours'] * 60:.2f} min")
    for stage, reasons in status["clip_rejects"].items():
        lines += [f"  clip rejected by {stage}: {reason} {n}" for reason, n in reasons.items()]
    lines.append(f"shards: {status['shards']}, samples: {status['samples']}")
    damaged, uncommitted = status["needs_recovery"].values()
    if damaged or uncommitted:
        lines.append(f"needs recovery: {len(damaged)} damaged commit(s), {len(uncommitted)} uncommitted file(s): "
                     "the next run quarantines them and redoes their sources (`curation verify` for detail)")
    if status["unreadable_run_records"]:
        lines.append(f"unreadable run records (left out): {', '.join(status['unreadable_run_records'])}")
    for dimension, counts in status["analysis"].items():
        lines.append(f"{dimension.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if "cost" in status:
        lines.append(cost_text(status["cost"]))
    return "\n".join(lines)
