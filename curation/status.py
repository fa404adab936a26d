"""What a corpus holds, from its committed index: sources, clips kept and rejected, shards, samples."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from curation.index import CorpusPaths, read_table


def corpus_status(output: str | Path) -> dict:
    paths = CorpusPaths(Path(output))
    if not paths.parts.exists():
        raise FileNotFoundError(f"{output}: not a corpus folder (no index/parts)")
    clips = read_table(paths, "clips").to_pylist()
    sources = read_table(paths, "sources").to_pylist()
    kept = [c for c in clips if c["status"] == "kept"]
    rejects = Counter((c["reject_stage"], c["reject_reason"]) for c in clips if c["status"] == "rejected")
    source_rejects = Counter((s["reject_stage"], s["reject_reason"]) for s in sources if s["status"] == "rejected")
    shards = sorted(p.name for p in paths.shards.glob("shard-*.tar"))
    corpus = json.loads(paths.corpus_file.read_text()) if paths.corpus_file.exists() else {}
    return {
        "output": str(output),
        "pipeline": corpus.get("pipeline"),
        "config_hash": corpus.get("config_hash"),
        "sources": {"total": len(sources), **Counter(s["status"] for s in sources)},
        "source_rejects": _by_stage(source_rejects),
        "clips": {"total": len(clips), "kept": len(kept), "rejected": len(clips) - len(kept)},
        "clip_rejects": _by_stage(rejects),
        "shards": len(shards),
        "samples": sum(1 for c in kept if c.get("shard")),
        "kept_hours": round(sum(c["duration"] for c in kept) / 3600, 4),
        "runs": len(list(paths.runs.glob("*.json"))),
        "analysis": corpus_analysis(kept),
    }


# The paper's corpus analysis (appendix E.2): what the kept clips show, from the stages' index columns.
ANALYSIS_COLUMNS = {
    "human_size": "people.human_size",
    "motion_amplitude": "people.motion_class",
    "scene": "human_caption_rule.scene",
    "language": "subtitles.language",
}


def corpus_analysis(kept: list[dict]) -> dict[str, dict[str, int]]:
    """Distributions over kept clips; a dimension appears once a stage that measures it has run."""
    analysis = {}
    for dimension, column in ANALYSIS_COLUMNS.items():
        if kept and any(column in clip for clip in kept):
            analysis[dimension] = dict(Counter(str(clip.get(column) or "unknown") for clip in kept).most_common())
    return analysis


def _by_stage(counter: Counter) -> dict[str, dict[str, int]]:
    grouped: dict[str, dict[str, int]] = {}
    for (stage, reason), n in sorted(counter.items()):
        grouped.setdefault(stage, {})[reason] = n
    return grouped


def status_text(status: dict) -> str:
    sources = status["sources"]
    lines = [
        f"corpus {status['output']}  (pipeline {status['pipeline']}, config {status['config_hash']}, {status['runs']} runs)",
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
    for dimension, counts in status["analysis"].items():
        lines.append(f"{dimension.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(lines)
