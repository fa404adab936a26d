"""Score generated videos against a test set of curated shards: the InterActHuman paper's metrics and a
per-identity lip-sync score for several speakers.

    python -m training.sample --config C --checkpoint CKPT --testset 'test/shard-*.tar' --out-dir generated/
    python -m training.evaluate --generated generated/ --testset 'test/shard-*.tar' --out report/ \\
        [--config configs/eval.yaml] [--set fvd.i3d_path=/models/i3d_torchscript.pt] [--limit 100]

A generated video is DIR/<key>.mp4 (with its audio) for the test sample <key>, with the sampler's mask
trace DIR/<key>.masks.npz when it wrote one. Writes REPORT/metrics.json (every metric's corpus value,
the per-video values, the skipped metrics with their reasons, the test samples without a generated
video), REPORT/report.md (tables laid out like the paper's Tables 1 and 3) and REPORT/layout_iou.png
(mask IoU over denoising steps). A metric whose model is not configured is listed as skipped with
the reason, never reported as zero. The models come from the evaluation config (configs/eval.yaml):
one section per metric family, checked when loaded as training configs are; relative paths are
resolved against the config's folder.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
from pydantic import field_validator

from training.config import Section, read_yaml, validated
from training.data import ClipSample, read_clips
from training.evaluation import fvd, hands, identity, layout, sync, visual_quality
from training.evaluation.common import GeneratedVideo, MetricUnavailable
from training.evaluation.fvd import FvdSettings
from training.evaluation.hands import HandSettings
from training.evaluation.identity import IdentitySettings
from training.evaluation.layout import LayoutSettings
from training.evaluation.sync import IdentitySyncSettings, SyncSettings
from training.evaluation.visual_quality import QualitySettings
from training.media import decode_audio, decode_video

log = logging.getLogger("training.evaluate")

BUILDERS = {"sync": sync.build_sync, "identity_sync": sync.build_identity_sync, "identity": identity.build,
            "fvd": fvd.build, "quality": visual_quality.build, "hands": hands.build, "layout": layout.build}

# (column, metric key, higher is better) in the order of the paper's Table 1 (single video quality and
# identity) and Table 3 (multi-person: lip sync per identity and layout).
TABLE_1 = [("Sync-C", "sync_c", True), ("Sync-D", "sync_d", False), ("CLIP-I", "clip_i", True),
           ("DINO-I", "dino_i", True), ("Face-Sim", "face_similarity", True), ("CLIP-T", "clip_t", True),
           ("FVD", "fvd", False), ("IQA", "qalign_quality", True), ("AES", "qalign_aesthetic", True),
           ("HKC", "hkc", True), ("HKV", "hkv", True)]
TABLE_3 = [("Sync-C", "sync_c", True), ("Sync-D", "sync_d", False), ("ID-sync speaker", "identity_sync_speaker", True),
           ("ID-sync listener", "identity_sync_listener", False), ("ID-sync margin", "identity_sync_margin", True),
           ("mixed-audio sync", "mixed_audio_sync", True), ("mask IoU", "layout_iou", True)]
SECTION_OF_KEY = {"sync_c": "sync", "sync_d": "sync", "clip_i": "identity", "dino_i": "identity",
                  "face_similarity": "identity", "clip_t": "identity", "fvd": "fvd", "qalign_quality": "quality",
                  "qalign_aesthetic": "quality", "hkc": "hands", "hkv": "hands", "identity_sync_speaker": "identity_sync",
                  "identity_sync_listener": "identity_sync", "identity_sync_margin": "identity_sync",
                  "mixed_audio_sync": "identity_sync", "layout_iou": "layout"}


class EvalConfig(Section):
    """The evaluation config: the device, and one section per metric family (the keys of BUILDERS)."""

    device: str = "cpu"
    sync: SyncSettings = SyncSettings()
    identity_sync: IdentitySyncSettings = IdentitySyncSettings()
    identity: IdentitySettings = IdentitySettings()
    fvd: FvdSettings = FvdSettings()
    quality: QualitySettings = QualitySettings()
    hands: HandSettings = HandSettings()
    layout: LayoutSettings = LayoutSettings()

    @field_validator(*BUILDERS, mode="before")
    @classmethod
    def _empty_section(cls, section):
        return {} if section is None else section  # `layout:` with nothing under it

    def with_paths_under(self, folder: Path) -> EvalConfig:
        """This config with every section's relative model paths taken as relative to `folder`."""
        return self.model_copy(update={name: getattr(self, name).with_paths_under(folder) for name in BUILDERS})


def load_eval_config(path: str | Path, overrides: list[str]) -> EvalConfig:
    """The checked evaluation config of a YAML file with `section.key=value` overrides."""
    config = validated(EvalConfig, read_yaml(path, overrides), str(path))
    return config.with_paths_under(Path(path).resolve().parent)


def build_metrics(config: EvalConfig) -> tuple[dict, dict[str, str]]:
    """The metrics that can run, and a reason for every one (or every value) that cannot."""
    metrics, skipped = {}, {}
    for name, builder in BUILDERS.items():
        try:
            metrics[name] = builder(getattr(config, name), config.device)
        except MetricUnavailable as reason:
            skipped[name] = str(reason)
            log.warning("skipping %s: %s", name, reason)
    return metrics, skipped


def load_generated(folder: Path, key: str) -> GeneratedVideo | None:
    video = folder / f"{key}.mp4"
    if not video.is_file():
        return None
    data = video.read_bytes()
    frames, fps = decode_video(data)
    trace_path = folder / f"{key}.masks.npz"
    trace = dict(np.load(trace_path)) if trace_path.is_file() else None
    return GeneratedVideo(key, frames, fps, decode_audio(data, 16000), trace)


def evaluate(generated_dir: str, testset: str, config: EvalConfig, limit: int | None = None) -> dict:
    metrics, skipped = build_metrics(config)
    per_video, missing, errors = [], [], []
    started = time.monotonic()
    for sample in read_clips(testset):
        if limit is not None and len(per_video) >= limit:
            break
        generated = load_generated(Path(generated_dir), sample.key)
        if generated is None:
            missing.append(sample.key)
            continue
        row = {"key": sample.key, **score_video(metrics, generated, sample, errors)}
        per_video.append(row)
        log.info("[%d] %s scored in %.0f s so far", len(per_video), sample.key, time.monotonic() - started)
    corpus = {}
    for name, metric in metrics.items():
        corpus.update(metric.summary())
        skipped.update(getattr(metric, "skipped", {}))
    curves = metrics["layout"].curves() if "layout" in metrics else {}
    return {"generated": str(generated_dir), "testset": testset, "videos": len(per_video), "metrics": corpus,
            "skipped": skipped, "errors": errors, "missing_generated": missing, "layout_curves": curves,
            "per_video": per_video, "seconds": round(time.monotonic() - started, 1)}


def score_video(metrics: dict, generated: GeneratedVideo, sample: ClipSample, errors: list) -> dict[str, float]:
    """Every metric's values for one video; a metric that fails on it is recorded, the others go on."""
    values = {}
    for name, metric in metrics.items():
        try:
            values.update(metric.score(generated, sample))
        except Exception as error:  # noqa: BLE001 - one bad video must not end the evaluation
            errors.append({"key": sample.key, "metric": name, "error": f"{type(error).__name__}: {error}"})
            log.exception("%s failed on %s", name, sample.key)
    return values


def markdown_report(result: dict) -> str:
    lines = [f"# Evaluation of {result['generated']}", "",
             f"{result['videos']} generated videos scored against `{result['testset']}` "
             f"({len(result['missing_generated'])} test samples without a generated video).", ""]
    for title, columns in (("Table 1 layout: quality, identity, prompt, hands", TABLE_1),
                           ("Table 3 layout: multi-person lip sync and layout", TABLE_3)):
        lines += [f"## {title}", "", "| " + " | ".join(f"{c} {'↑' if up else '↓'}" for c, _, up in columns) + " |",
                  "|" + "---|" * len(columns), "| " + " | ".join(_cell(result, key) for _, key, _ in columns) + " |", ""]
    if result["skipped"]:
        lines += ["## Skipped", ""] + [f"- **{name}**: {reason}" for name, reason in result["skipped"].items()] + [""]
    if result["errors"]:
        lines += ["## Errors", ""] + [f"- {e['key']} / {e['metric']}: {e['error']}" for e in result["errors"]] + [""]
    lines += ["ID-sync: each identity's face against its own audio where it speaks (speaker) and against the mixed",
              "audio where only others speak (listener); margin = speaker - listener. Mixed-audio sync scores every",
              "face against the mix and cannot tell which face the audio was meant for.", ""]
    return "\n".join(lines)


def _cell(result: dict, key: str) -> str:
    value = result["metrics"].get(key)
    if value is not None and not math.isnan(value):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    skipped = SECTION_OF_KEY.get(key) in result["skipped"] or any(key.startswith(name) for name in result["skipped"])
    return "skipped" if skipped else "n/a"


def plot_layout(curves: dict, path: Path) -> bool:
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.5))
    steps = np.arange(1, len(curves["iou_by_step"]) + 1)
    axis.plot(steps, curves["iou_by_step"], label="final mask", linewidth=2)
    for layer, values in enumerate(np.asarray(curves["iou_by_step_and_layer"]).T):
        axis.plot(steps, values, label=f"layer {layer}", alpha=0.5, linewidth=1)
    axis.set(xlabel="denoising step", ylabel="mask IoU", ylim=(0, 1), title="predicted vs reference masks")
    axis.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def write_report(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=1, default=float))
    (out / "report.md").write_text(markdown_report(result))
    plot_layout(result["layout_curves"], out / "layout_iou.png")


def print_summary(result: dict, out: Path) -> None:
    print(f"\nscored {result['videos']} videos in {result['seconds']} s "
          f"({len(result['missing_generated'])} test samples without a generated video, {len(result['errors'])} errors)")
    for key, value in sorted(result["metrics"].items()):
        print(f"  {key:<28} {value:.4f}")
    for name, reason in result["skipped"].items():
        print(f"  skipped {name}: {reason}")
    print(f"report: {out / 'report.md'}, {out / 'metrics.json'}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generated", required=True, help="folder of <key>.mp4 (and <key>.masks.npz)")
    parser.add_argument("--testset", required=True, help="glob or brace pattern of the test set's shards")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--config", default=str(Path(__file__).resolve().parent.parent / "configs" / "eval.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--limit", type=int, help="score at most this many videos")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = evaluate(args.generated, args.testset, load_eval_config(args.config, args.set), args.limit)
    write_report(result, Path(args.out))
    print_summary(result, Path(args.out))
    return result


if __name__ == "__main__":
    main()
