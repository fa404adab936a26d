"""The bill: CPU- and GPU-seconds per hour of input footage, from the run records, and what a target
corpus would cost at that rate. The formula and its caveats are in docs/cost.md."""
from __future__ import annotations

import math

from curation.index import run_records
from curation.pipeline import stage_class
from curation.storage import Storage

DEFAULT_TARGET_HOURS = 7200.0  # the corpus the project builds: ~7,200 h of kept footage


def corpus_cost(storage: Storage, target_hours: float | None = DEFAULT_TARGET_HOURS) -> dict:
    """Per-stage CPU-/GPU-seconds per footage hour, summed over every readable run record, the keep
    ratio, and (with `target_hours` of kept footage) the raw hours, CPU-hours and GPU-hours needed."""
    records, unreadable = run_records(storage)
    footage = sum(_throughput(r, "source_seconds") for r in records)
    kept = sum(_throughput(r, "kept_clip_seconds") for r in records)
    rows: dict[str, dict] = {}
    notes: list[str] = []
    for record in records:
        declared = _declared_resources(record, notes)
        cpu_measured = record.get("stage_cpu_seconds")
        wall_by_stage = record.get("stage_seconds") or {}
        for name in list(wall_by_stage) + [n for n in cpu_measured or {} if n not in wall_by_stage]:
            wall = float(wall_by_stage.get(name, 0.0))
            cpus, gpus = declared.get(name, (1.0, 0.0))  # not a stage (the segment's "decode"): 1 CPU
            row = rows.setdefault(name, {"stage": name, "in_pipeline": name in declared, "wall_s": 0.0,
                                         "cpu_s": 0.0, "gpu_s": 0.0, "cpu_estimated_s": 0.0,
                                         "declared_cpus": set(), "declared_gpus": set(), "_runs": [0, 0]})
            row["in_pipeline"] = row["in_pipeline"] or name in declared
            row["wall_s"] += wall
            if cpu_measured is not None and name in cpu_measured:
                row["cpu_s"] += float(cpu_measured[name])
                row["_runs"][0] += 1
            else:  # a record from before CPU was measured: wall x the declared CPU share
                row["cpu_s"] += wall * cpus
                row["cpu_estimated_s"] += wall * cpus
                row["_runs"][1] += 1
            row["gpu_s"] += wall * gpus
            row["declared_cpus"].add(cpus)
            row["declared_gpus"].add(gpus)
    estimated_runs = [r.get("run_id", "?") for r in records if r.get("stage_cpu_seconds") is None]
    if estimated_runs:
        notes.append(f"{len(estimated_runs)} run record(s) predate CPU measurement ({', '.join(estimated_runs)}): "
                     "their CPU-seconds are estimated as wall seconds x the stage's declared cpus")
    configs = {r.get("config_hash") for r in records}
    if len(configs) > 1:
        notes.append(f"the runs used {len(configs)} pipeline configurations: every stage's seconds are "
                     "divided by the footage of all runs, so the bill mixes them")

    hours = footage / 3600
    ordered = _pipeline_order(records, rows)
    for row in ordered:
        row["declared_cpus"] = sorted(row["declared_cpus"])
        row["declared_gpus"] = sorted(row["declared_gpus"])
        n_measured, n_estimated = row.pop("_runs")
        row["cpu_measured"] = "estimated" if not n_measured else "partly estimated" if n_estimated else "measured"
        row["wall_s_per_footage_h"] = row["wall_s"] / hours if hours else None
        row["cpu_s_per_footage_h"] = row["cpu_s"] / hours if hours else None
        row["gpu_s_per_footage_h"] = row["gpu_s"] / hours if hours else None
    totals = {key: sum(r[key] for r in ordered) for key in ("wall_s", "cpu_s", "gpu_s")}
    totals["cpu_s_per_footage_h"] = totals["cpu_s"] / hours if hours else None
    totals["gpu_s_per_footage_h"] = totals["gpu_s"] / hours if hours else None
    keep_ratio = kept / footage if footage else None
    return {
        "runs": len(records),
        "unreadable_run_records": unreadable,
        "footage_s": footage,
        "kept_s": kept,
        "keep_ratio": keep_ratio,
        "stages": ordered,
        "totals": totals,
        "projection": _projection(target_hours, keep_ratio, totals),
        "notes": notes,
    }


def _projection(target_hours: float | None, keep_ratio: float | None, totals: dict) -> dict | None:
    """raw h = target kept h / keep ratio; CPU-h = CPU-s per footage h x raw h / 3600 (GPU alike)."""
    if target_hours is None:
        return None
    projection = {"target_kept_h": float(target_hours), "raw_h": None, "cpu_h": None, "gpu_h": None}
    if not keep_ratio:  # no footage measured, or nothing kept yet: no rate to scale by
        return projection
    raw_h = target_hours / keep_ratio
    projection.update(raw_h=raw_h, cpu_h=totals["cpu_s_per_footage_h"] * raw_h / 3600,
                      gpu_h=totals["gpu_s_per_footage_h"] * raw_h / 3600)
    return projection


def _throughput(record: dict, key: str) -> float:
    return float((record.get("throughput") or {}).get(key) or 0.0)


def _declared_resources(record: dict, notes: list[str]) -> dict[str, tuple[float, float]]:
    """Stage name -> (cpus, gpus) its workers reserved in this run, rebuilt from the run's lineage."""
    declared = {}
    for entry in (record.get("pipeline") or {}).get("stages", []):
        name = entry["name"]
        try:
            cls = stage_class(name)
            resources = cls(cls.Params(**entry.get("params", {}))).resources()
            declared[name] = (float(resources.cpus), float(resources.gpus))
        except Exception as err:  # noqa: BLE001 - a stage renamed or re-parameterised since that run
            declared[name] = (1.0, 0.0)
            note = (f"stage {name!r} of run {record.get('run_id', '?')}: resources not rebuilt from its lineage "
                    f"({type(err).__name__}); counted as 1 CPU and no GPU")
            if note not in notes:
                notes.append(note)
    return declared


def _pipeline_order(records: list[dict], rows: dict[str, dict]) -> list[dict]:
    """Rows in the order the stages ran in the latest run; rows of non-stages ("decode") at the end."""
    order = []
    for record in reversed(records):
        order += [e["name"] for e in (record.get("pipeline") or {}).get("stages", []) if e["name"] not in order]
    rank = {name: i for i, name in enumerate(order)}
    return sorted(rows.values(), key=lambda r: (rank.get(r["stage"], len(rank)), r["stage"]))


def cost_text(cost: dict) -> str:
    """A compact per-stage table and one summary line."""
    if not cost["footage_s"]:
        why = f"{cost['runs']} run records, footage 0 s" if cost["runs"] else "no run records"
        return f"bill: no footage measured yet ({why}): no rate per hour of footage, nothing to project"
    lines = ["bill per hour of input footage "
             f"({cost['runs']} run{'s' * (cost['runs'] != 1)}, {cost['footage_s'] / 3600:.3g} h of footage):",
             f"  {'stage':<16} {'wall-s':>9} {'CPU-s':>9} {'GPU-s':>9}  reserved"]
    for row in cost["stages"]:
        cpus = "/".join(_number(c) for c in row["declared_cpus"])
        gpus = "/".join(_number(g) for g in row["declared_gpus"])
        reserved = f"{cpus} cpu" + (f", {gpus} gpu" if any(row["declared_gpus"]) else "")
        flags = ([] if row["in_pipeline"] else ["not a stage: CPU"]) + \
            ([f"CPU {row['cpu_measured']}"] if row["cpu_measured"] != "measured" else [])
        lines.append(f"  {row['stage']:<16} {_number(row['wall_s_per_footage_h']):>9} "
                     f"{_number(row['cpu_s_per_footage_h']):>9} {_number(row['gpu_s_per_footage_h']):>9}  "
                     f"{reserved}" + (f"  ({'; '.join(flags)})" if flags else ""))
    totals = cost["totals"]
    wall_per_h = totals["wall_s"] / (cost["footage_s"] / 3600)
    lines.append(f"  {'total':<16} {_number(wall_per_h):>9} {_number(totals['cpu_s_per_footage_h']):>9} "
                 f"{_number(totals['gpu_s_per_footage_h']):>9}")
    lines += [f"  note: {note}" for note in cost["notes"]]
    summary = (f"bill: {_number(totals['cpu_s_per_footage_h'])} CPU-s and {_number(totals['gpu_s_per_footage_h'])} "
               f"GPU-s per hour of footage; keep {cost['keep_ratio'] * 100:.0f} %")
    projection = cost["projection"]
    if projection is not None:
        target = _approximately(projection["target_kept_h"])
        if projection["raw_h"] is None:
            summary += f"; {target} h kept: cannot project, nothing kept yet"
        else:
            summary += (f"; {target} h kept needs {_approximately(projection['raw_h'], '~')} h raw, "
                        f"{_approximately(projection['cpu_h'], '~')} CPU-h, {_approximately(projection['gpu_h'], '~')} GPU-h")
    lines.append(summary)
    return "\n".join(lines)


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _approximately(value: float, tilde: str = "") -> str:
    """Three significant figures, with thousands separators: 23,187.4 -> 23,200 (0 stays exact)."""
    if value == 0:
        return "0"
    digits = 3 - int(math.floor(math.log10(abs(value)))) - 1
    rounded = round(value, digits)
    return f"{tilde}{rounded:,.{max(digits, 0)}f}"
