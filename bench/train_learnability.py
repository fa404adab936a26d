"""Can the tiny InterActHuman learn layout-aligned audio on the synthetic two-identity corpus?

Trains configs/model_tiny.yaml on synthetic shards (training/synthetic.py) for a fixed time, then
measures on held-out clips:

1. Mask IoU over denoising steps (and two diagnostics, see mask_iou_curves): each held-out clip is
   noised to every noise level of the 50-step sampling schedule (one fixed noise draw per clip) and
   the final mask (average of the last predictor layers, binarised at 0.5) is compared with the
   ground-truth token mask, over frames whose mask confidence is >= 0.5. Audio is gated by the
   ground-truth masks, as in training. Target: >= 0.8 at the last step.
2. Audio routing: videos are generated from each held-out clip's two references and two audio tracks
   with the mask cache (Algorithm 1), without it (each block gated by the mask it predicts in the same
   pass), and with global audio (no gating). In each generated video the figure regions come from the
   final predicted masks and the mouth activity of a figure is the dark mass in the top of its region;
   its motion energy is the mean absolute frame-to-frame change. The routing error is the silent
   figure's mouth energy over the speaking figure's (0: only the speaker's mouth moves; about 1: audio
   drives both mouths). "located" is the share of figures x latent frames that had a predicted region
   to measure in. The same measure on the real clips (ground-truth masks) is the floor.

    python bench/train_learnability.py                 # 7 min of training on one GPU, about 9 min in all
    python bench/train_learnability.py --minutes 8 --work-dir /tmp/learnability --set train.seed=1
    python bench/train_learnability.py --cpu-smoke     # ~30 s on a CPU, tiny clips, few steps
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.batch import prepare_inputs  # noqa: E402
from training.config import GATE_MODES, load_config  # noqa: E402
from training.data import ExampleMaker, collate, identity_audio, read_clips  # noqa: E402
from training.dit import AudioGate, final_mask  # noqa: E402
from training.flow import TIMESTEP_SCALE, add_noise, inference_sigmas  # noqa: E402
from training.sample import Sampler, conditions_from_arrays  # noqa: E402
from training.synthetic import SAMPLE_RATE, SyntheticSpec, write_corpus  # noqa: E402
from training.train import Trainer, data_loader  # noqa: E402

GATE_MODE_LABELS = {"cache": "mask cache (Algorithm 1)", "current": "no cache (same-pass masks)", "global": "global audio (no gating)"}
HEAD_SHARE = 0.5  # top share of a figure's box that holds its head and mouth
DARK_LUMA = 80.0  # darkness = how far below this a pixel's luma is (the mouth is black; generated ones blur)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=7.0, help="training time")
    parser.add_argument("--work-dir", default="/tmp/interact_learnability")
    parser.add_argument("--clips", type=int, default=2048, help="training clips to synthesise (with 192 the model learns "
                                                                 "the training identities, not matching)")
    parser.add_argument("--eval-clips", type=int, default=16)
    parser.add_argument("--generate-clips", type=int, default=8, help="held-out clips to generate videos for")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=max(1, min(12, (os.cpu_count() or 4) - 2)), help="data loader workers")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny clips, 30 s of training, 6 sampling steps, on the CPU")
    parser.add_argument("--out", default="bench/results/train_learnability.json")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config override")
    if parser.parse_known_args(argv)[0].cpu_smoke:  # smaller defaults; flags given still win
        parser.set_defaults(minutes=0.5, clips=6, eval_clips=2, generate_clips=1, batch_size=2, workers=0)
    return parser.parse_args(argv)


def learnability_config(args, work: Path):
    overrides = [
        f"data.shards='{work / 'train' / 'shards' / 'shard-*.tar'}'",
        f"train.out_dir='{work / 'run'}'",
        f"audio.cache_dir='{work / 'audio_cache'}'",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        "train.lr=1e-3",
        "data.frame_counts=[32]",
        "sample.window_frames=8",
        "train.steps=1000000",
        f"train.max_minutes={args.minutes}",
        "train.save_every=1000000",
        "train.resume=false",
    ]
    if args.cpu_smoke:
        overrides += ["data.resolutions=[[32, 64]]", "data.frame_counts=[8]", "data.ref_size=[16, 16]", "data.shuffle_buffer=4",
                      "train.precision=fp32", "train.log_every=5", "sample.steps=6", "sample.gate_start_step=1", "sample.window_frames=2"]
    return load_config(Path(__file__).resolve().parent.parent / "configs" / "model_tiny.yaml", overrides + args.set)


def ensure_corpus(folder: Path, clips: int, seed: int) -> str:
    """Synthesise the corpus unless the folder already holds one made with these settings."""
    marker = folder / "corpus.json"
    made = json.loads(marker.read_text()) if marker.exists() else {}
    if (made.get("clips"), made.get("seed")) != (clips, seed):
        write_corpus(folder, clips, seed, SyntheticSpec(), workers=os.cpu_count() or 1)
    return str(folder / "shards" / "shard-*.tar")


def held_out_examples(config, companions, pattern: str, count: int, kind: str = "body") -> list[tuple]:
    """(clip, example) pairs with references of one kind (full body by default); windows drawn with a
    fixed seed."""
    maker = ExampleMaker(config.data.model_copy(update={"ref_probs": {kind: 1.0}}), companions.geometry, companions.featurizer, seed=123)
    pairs = []
    for clip in read_clips(pattern):
        example = maker(clip)
        if example is not None:
            pairs.append((clip, example))
        if len(pairs) == count:
            break
    return pairs


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


@torch.no_grad()
def mask_iou_curves(model, companions, config, pairs, device) -> dict[str, list[float]]:
    """Mean IoU of the final predicted masks with the truth at every step's noise level ("identity"),
    and two diagnostics that tell localisation from identification: "any identity" (the union of the
    predicted masks against the union of the true ones: are people found at all) and "swapped" (each
    identity's prediction against the other identity's truth: about "identity" when the predictor finds
    people but cannot tell which reference is which)."""
    sigmas = inference_sigmas(config.sample.steps, config.sample.shift)[:-1]
    totals = {name: np.zeros(len(sigmas)) for name in ("identity", "any identity", "swapped")}
    for index, (_, example) in enumerate(pairs):
        inputs = prepare_inputs(collate([example]), companions.vae, companions.text_encoder, companions.geometry, device)
        noise = torch.randn(inputs.latents.shape, generator=torch.Generator().manual_seed(index)).to(device)
        truth = inputs.masks > 0.5
        tokens_per_frame = truth.shape[-1] // inputs.conf.shape[-1]
        valid = (inputs.conf >= 0.5).repeat_interleave(tokens_per_frame, dim=-1)
        for step, sigma in enumerate(sigmas):
            noisy = add_noise(inputs.latents, noise, sigma[None])
            with autocast(device):
                out = model(noisy, (sigma * TIMESTEP_SCALE)[None].to(device), inputs.text, inputs.ref_latents, inputs.audio,
                            inputs.audio_muted, AudioGate("masks", truth.float()))
            predicted = final_mask(out.mask_logits, config.model.mask_avg_last) > 0.5
            totals["identity"][step] += _mean_iou(predicted, truth, valid)
            totals["any identity"][step] += _mean_iou(predicted.any(1, keepdim=True), truth.any(1, keepdim=True),
                                                      valid.all(1, keepdim=True))
            totals["swapped"][step] += _mean_iou(predicted.flip(1), truth, valid.flip(1) & valid)
        last_layers = torch.sigmoid(out.mask_logits.float()) > 0.5  # [B, layers, N, L] at the last step
        layer_totals = [_mean_iou(layer, truth, valid) for layer in last_layers.unbind(1)]
        totals.setdefault("last step, per layer", np.zeros(len(layer_totals)))
        totals["last step, per layer"] += layer_totals
    return {name: (total / len(pairs)).tolist() for name, total in totals.items()}


def _mean_iou(predicted: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor) -> float:
    """Mean over [B, N] of the IoU over valid tokens of boolean masks [B, N, L]."""
    intersection = (predicted & truth & valid).sum(-1).float()
    union = ((predicted | truth) & valid).sum(-1).float()
    return (intersection / union.clamp(min=1)).mean().item()


def mouth_activity(frames: np.ndarray, token_masks: np.ndarray, geometry) -> tuple[np.ndarray, float]:
    """(dark mass in the head box of each identity's region per frame [N, T], share of (identity,
    latent frame) pairs whose region was found). frames uint8 [T, H, W, 3]; token_masks [N, T_lat, Ht, Wt]."""
    luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    darkness = np.clip(DARK_LUMA - luma, 0, None) / DARK_LUMA
    groups = geometry.frame_groups(len(frames))
    stride = geometry.token_stride
    activity = np.zeros((token_masks.shape[0], len(frames)))
    found = 0
    for identity, masks in enumerate(token_masks):
        for latent, frame_ids in enumerate(groups):
            rows, cols = np.nonzero(masks[latent] > 0.5)
            if not len(rows):
                continue
            found += 1
            top, bottom = rows.min() * stride, (rows.max() + 1) * stride
            left, right = cols.min() * stride, (cols.max() + 1) * stride
            head_bottom = top + max(1, int(round(HEAD_SHARE * (bottom - top))))
            for frame in frame_ids:
                activity[identity, frame] = darkness[frame, top:head_bottom, left:right].sum()
    return activity, found / (token_masks.shape[0] * len(groups))


def routing_energies(activity: np.ndarray, speaking: np.ndarray, margin: int = 2) -> tuple[list[float], list[float]]:
    """Frame-to-frame mouth changes of identities while silent (no speech within +-margin frames) and
    while speaking."""
    silent, talking = [], []
    for identity in range(activity.shape[0]):
        changes = np.abs(np.diff(activity[identity]))
        for t, change in enumerate(changes, start=1):
            around = speaking[identity, max(t - margin, 0) : t + margin + 1]
            if not around.any():
                silent.append(change)
            elif speaking[identity, t - 1] and speaking[identity, t]:
                talking.append(change)
    return silent, talking


def routing_summary(silent: list[float], talking: list[float], located: list[float]) -> dict:
    silent_energy, talking_energy = float(np.mean(silent)) if silent else float("nan"), float(np.mean(talking)) if talking else float("nan")
    return {"silent_mouth_energy": silent_energy, "speaking_mouth_energy": talking_energy,
            "routing_error": silent_energy / talking_energy if talking_energy > 0 else float("nan"),
            "figures_located": float(np.mean(located)), "silent_transitions": len(silent), "speaking_transitions": len(talking)}


def collect(buckets: tuple[list, list, list], activity: np.ndarray, located: float, speaking: np.ndarray) -> None:
    silent, talking = routing_energies(activity, speaking)
    buckets[0].extend(silent)
    buckets[1].extend(talking)
    buckets[2].append(located)


def audio_routing(sampler: Sampler, config, pairs, device) -> dict:
    geometry = sampler.companions.geometry
    real_clips = "real clips (ground-truth masks)"
    collected = {name: ([], [], []) for name in [*GATE_MODE_LABELS.values(), real_clips]}
    for index, (clip, example) in enumerate(pairs):
        frames, speaking = len(example["video"]), example["speaking"].numpy()
        first = int(round(float(example["frame_times"][0]) * SAMPLE_RATE))
        samples = int(round(frames / config.data.fps * SAMPLE_RATE))
        tracks = [identity_audio(clip, i)[first : first + samples] for i in range(clip.num_identities)]
        refs = [r.numpy() for r in example["refs"]]
        conditions = conditions_from_arrays(sampler.companions, config, device, clip.caption, refs, tracks, video_frames=frames)
        for mode in GATE_MODES:
            sample = config.sample.model_copy(update={"gate_mode": mode})
            result = sampler.generate(conditions, tuple(example["video"].shape[1:3]), sample, seed=index)
            masks = result.traces[-1].final_masks[-1].astype(np.float32) / 255
            collect(collected[GATE_MODE_LABELS[mode]], *mouth_activity(result.frames, masks, geometry), speaking)
        real = mouth_activity(example["video"].numpy(), example["token_masks"].numpy(), geometry)
        collect(collected[real_clips], *real, speaking)
    return {name: routing_summary(*values) for name, values in collected.items()}


def print_table(result: dict) -> None:
    training = result["training"]
    print(f"\ntrained {training['steps']} steps in {training['minutes']:.1f} min on {result['device']}: "
          f"loss {training['loss']:.4f} (flow {training['flow']:.4f}, mask {training['mask']:.4f}), {training['tokens_per_s']:.0f} tokens/s")
    curves = result["mask_iou_by_step"]
    steps = len(curves["identity"])
    marks = sorted({0, steps // 5, 2 * steps // 5, 3 * steps // 5, 4 * steps // 5, steps - 1})
    print("\nmask IoU over denoising steps (target >= 0.8 at the end for 'identity')")
    print(f"  {'step':<14}" + "".join(f"{m + 1:>8}" for m in marks))
    for name in ("identity", "any identity", "swapped"):
        print(f"  {name:<14}" + "".join(f"{curves[name][m]:>8.3f}" for m in marks))
    print("  identity IoU of each predictor layer at the last step: "
          + " ".join(f"{iou:.3f}" for iou in curves["last step, per layer"]))
    print("\naudio routing (mouth motion energy; error = silent / speaking, lower is better;")
    print("located = share of figures x latent frames with a predicted region to measure in)")
    name_width = max(len(name) for name in result["audio_routing"])
    print(f"  {'':<{name_width}}  {'silent':>9}  {'speaking':>9}  {'error':>7}  {'located':>7}")
    for name, row in result["audio_routing"].items():
        print(f"  {name:<{name_width}}  {row['silent_mouth_energy']:>9.3f}  {row['speaking_mouth_energy']:>9.3f}  {row['routing_error']:>7.3f}  {row['figures_located']:>7.2f}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    work = Path(args.work_dir)
    device = torch.device("cpu" if args.cpu_smoke or not torch.cuda.is_available() else "cuda")
    ensure_corpus(work / "train", args.clips, seed=0)
    eval_pattern = ensure_corpus(work / "eval", args.eval_clips, seed=1)
    config = learnability_config(args, work)

    started = time.monotonic()
    trainer = Trainer(config)
    metrics = trainer.fit(data_loader(config, trainer.companions, rank=0))
    training = {"steps": trainer.step, "minutes": (time.monotonic() - started) / 60, **{k: metrics.get(k, float("nan")) for k in ("loss", "flow", "mask", "tokens_per_s")}}

    model = trainer.model.eval()
    pairs = held_out_examples(config, trainer.companions, eval_pattern, args.eval_clips)
    curves = mask_iou_curves(model, trainer.companions, config, pairs, device)
    print(f"final identity IoU {curves['identity'][-1]:.3f} (any identity {curves['any identity'][-1]:.3f}, swapped "
          f"{curves['swapped'][-1]:.3f}); routing evaluation next")
    face_pairs = held_out_examples(config, trainer.companions, eval_pattern, args.eval_clips, kind="face")
    face_curves = mask_iou_curves(model, trainer.companions, config, face_pairs, device)
    print(f"with head references instead: final identity IoU {face_curves['identity'][-1]:.3f}, swapped "
          f"{face_curves['swapped'][-1]:.3f}")
    routing = audio_routing(Sampler(model, trainer.companions, config, device), config, pairs[: args.generate_clips], device)
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "training": training,
              "mask_iou_by_step": curves, "mask_iou_final": curves["identity"][-1],
              "mask_iou_by_step_head_references": face_curves, "audio_routing": routing,
              "eval_clips": len(pairs), "generated_clips": min(args.generate_clips, len(pairs)), "sample": config.sample.model_dump()}
    print_table(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
