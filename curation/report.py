"""OUT/report.html: counts, reject reasons per stage, clip durations and throughput, with plots."""
from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from curation.index import read_table, run_records  # noqa: E402
from curation.status import corpus_status  # noqa: E402
from curation.storage import Storage  # noqa: E402


def write_report(storage: Storage) -> str:
    status = corpus_status(storage.root)
    clips = read_table(storage, "clips").to_pylist()
    runs, unreadable = run_records(storage)
    sections = [
        _section("Counts", _counts_table(status)),
        _section("Reject reasons per stage", _reject_table(status) + _figure(_plot_rejects(status))),
        _section("Clip durations (kept)", _figure(_plot_durations(clips))),
        _section("Throughput per run", _runs_table(runs) + _unreadable_note(unreadable)
                 + _figure(_plot_stage_time(runs))),
    ]
    if status["analysis"]:
        sections.append(_section("Corpus analysis (kept clips)", _figure(_plot_analysis(status["analysis"]))))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>corpus report</title>"
            f"<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}"
            f"table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}"
            f"</style></head><body><h1>Corpus {html.escape(storage.root)}</h1>"
            + "".join(f"<p>pipeline {html.escape(c['pipeline'])}, config {c['config_hash']}</p>"
                      for c in status["configurations"])
            + "".join(sections) + "</body></html>")
    storage.write_atomic("report.html", page.encode())
    return storage.url("report.html")


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>{body}"


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _counts_table(status: dict) -> str:
    sources, clips = status["sources"], status["clips"]
    rows = [["sources", sources["total"]], *[[f"sources {k}", v] for k, v in sources.items() if k != "total"],
            ["clips", clips["total"]], ["clips kept", clips["kept"]], ["clips rejected", clips["rejected"]],
            ["shards", status["shards"]], ["samples", status["samples"]], ["kept hours", status["kept_hours"]]]
    return _table(["what", "count"], rows)


def _reject_rows(status: dict) -> list[list]:
    rows = [["source", stage, reason, n] for stage, r in status["source_rejects"].items() for reason, n in r.items()]
    return rows + [["clip", stage, reason, n] for stage, r in status["clip_rejects"].items() for reason, n in r.items()]


def _reject_table(status: dict) -> str:
    rows = _reject_rows(status)
    return _table(["level", "stage", "reason", "count"], rows) if rows else "<p>nothing rejected</p>"


def _unreadable_note(unreadable: list[str]) -> str:
    if not unreadable:
        return ""
    return f"<p>run records that could not be read (left out): {html.escape(', '.join(unreadable))}</p>"


def _runs_table(runs: list[dict]) -> str:
    rows = [[r["run_id"], r["executor"], r["counts"]["processed"], r["wall_seconds"],
             r["throughput"]["source_seconds"], r["throughput"]["footage_seconds_per_wall_second"]] for r in runs]
    return _table(["run", "executor", "sources", "wall s", "footage s", "footage s / wall s"], rows)


def _plot_rejects(status: dict):
    rows = _reject_rows(status)
    if not rows:
        return None
    figure, axes = plt.subplots(figsize=(8, 0.4 * len(rows) + 1))
    axes.barh([f"{level} {stage}: {reason}" for level, stage, reason, _ in rows], [n for *_, n in rows])
    axes.set_xlabel("count")
    return figure


def _plot_durations(clips: list[dict]):
    durations = [c["duration"] for c in clips if c["status"] == "kept"]
    if not durations:
        return None
    figure, axes = plt.subplots(figsize=(8, 3))
    axes.hist(durations, bins=30)
    axes.set_xlabel("clip duration (s)")
    axes.set_ylabel("clips")
    return figure


def _plot_stage_time(runs: list[dict]):
    totals: dict[str, float] = {}
    for run in runs:
        for stage, seconds in run["stage_seconds"].items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    if not totals:
        return None
    figure, axes = plt.subplots(figsize=(8, 3))
    axes.bar(list(totals), list(totals.values()))
    axes.set_ylabel("worker seconds (all runs)")
    return figure


def _plot_analysis(analysis: dict[str, dict[str, int]]):
    figure, axes = plt.subplots(1, len(analysis), figsize=(4 * len(analysis), 3), squeeze=False)
    for axis, (dimension, counts) in zip(axes[0], analysis.items()):
        axis.bar(list(counts), list(counts.values()))
        axis.set_title(dimension.replace("_", " "))
        axis.tick_params(axis="x", labelrotation=45)
    return figure


def _figure(figure) -> str:
    if figure is None:
        return ""
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return f"<p><img src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'></p>"
