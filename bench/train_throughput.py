"""Training throughput of InterActHuman at the Wan2.1-1.3B shape, random weights, one GPU.

Measures the time of a full training step (forward, backward, AdamW) in bf16 with gradient
checkpointing, tokens/s, MFU against the bf16 dense peak (H100 SXM / H200: 989 TFLOPS; FLOPs from
training/flops.py: 6 x matmul weights x tokens + attention, recompute excluded), peak memory, and the
mask predictor's share of step time (the same step timed again without any mask predictor).

    python bench/train_throughput.py                      # 81 x 480 x 832, 2 identities, on the GPU
    python bench/train_throughput.py --compile            # torch.compile per block
    python bench/train_throughput.py --compile --checkpoint-policy save_attention_and_matmuls --profile
    python bench/train_throughput.py --cpu-smoke          # tiny config, seconds on a CPU
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import get_args

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.activation_checkpointing import CheckpointPolicyName, apply_activation_checkpointing  # noqa: E402
from training.batch import ModelInputs  # noqa: E402
from training.config import Config, load_config  # noqa: E402
from training.dit import InterActDiT  # noqa: E402
from training.flops import StepShape, forward_flops, training_flops  # noqa: E402
from training.layers import attention_backend  # noqa: E402
from training.train import compile_blocks, step_generator, tokens_per_sample, training_losses  # noqa: E402
from training.vae import vae_geometry  # noqa: E402

BF16_DENSE_PEAK = {"H100": 989e12, "H200": 989e12}
KERNEL_KINDS = {  # substrings of CUDA kernel names, checked in this order
    "attention": ("flash", "fmha", "cudnn", "attention", "sdpa"),
    "matmul": ("gemm", "xmma", "cutlass", "nvjet", "sm90_", "wgmma", "mm_"),
}


def random_inputs(config: Config, shape: StepShape, device: torch.device) -> ModelInputs:
    model = config.model
    g = torch.Generator().manual_seed(0)

    def randn(*size):
        return torch.randn(*size, generator=g).to(device)

    tokens_per_frame = (shape.latent_height // model.patch_size[1]) * (shape.latent_width // model.patch_size[2])
    video_tokens = shape.latent_frames * tokens_per_frame
    return ModelInputs(
        latents=randn(shape.batch, model.in_dim, shape.latent_frames, shape.latent_height, shape.latent_width),
        ref_latents=randn(shape.batch, shape.refs, model.in_dim, 1, shape.ref_height, shape.ref_width),
        text=randn(shape.batch, model.text_len, model.text_dim),
        audio=randn(shape.batch, shape.refs, shape.latent_frames, shape.audio_per_frame, model.audio_dim),
        audio_muted=randn(shape.batch, shape.latent_frames, shape.audio_per_frame, model.audio_dim),
        masks=(torch.rand(shape.batch, shape.refs, video_tokens, generator=g) > 0.5).float().to(device),
        conf=torch.ones(shape.batch, shape.refs, shape.latent_frames, device=device),
    )


def train_step(model, optimizer, inputs: ModelInputs, config: Config, step: int) -> dict:
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if inputs.latents.is_cuda else nullcontext()
    with autocast, attention_backend(config.train.attention_backend):
        losses = training_losses(model, inputs, config.train, step_generator(0, 0, step))
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    optimizer.step()
    return losses


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    for kind, marks in KERNEL_KINDS.items():
        if any(mark in lowered for mark in marks):
            return kind
    return "other (norms, RoPE, activations, copies, optimizer)"


def profile_step(run) -> dict[str, float]:
    """GPU seconds of one step by kernel kind, and the kernels that take most."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    by_kind: dict[str, float] = {}
    kernels = [(e.key, e.device_time_total / 1e6) for e in prof.key_averages()
               if e.device_time_total > 0 and not e.key.startswith(("aten::", "autograd::"))]
    for name, seconds in kernels:
        kind = kernel_kind(name)
        by_kind[kind] = by_kind.get(kind, 0.0) + seconds
    for name, seconds in sorted(kernels, key=lambda item: -item[1])[:12]:
        print(f"  {seconds:7.3f} s  {kernel_kind(name)[:9]:<9}  {name[:110]}")
    return by_kind


def time_steps(config: Config, inputs: ModelInputs, device: torch.device, steps: int, warmup: int, profile: bool = False) -> dict:
    torch.manual_seed(0)
    model = InterActDiT(config.model).to(device).train()
    apply_activation_checkpointing(model, config.train)
    if config.train.compile:
        compile_blocks(model, config.train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(warmup + steps):
        synchronize(device)
        started = time.perf_counter()
        losses = train_step(model, optimizer, inputs, config, step)
        synchronize(device)
        if step >= warmup:
            times.append(time.perf_counter() - started)
    result = {"step_time_s": statistics.median(times), "step_times_s": times, "loss": losses["loss"].item(),
              "parameters": sum(p.numel() for p in model.parameters())}
    if profile and device.type == "cuda":
        result["gpu_time_by_kind"] = profile_step(lambda: train_step(model, optimizer, inputs, config, step + 1))
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_DENSE_PEAK.items() if key in name), None)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/model_wan1_3b.yaml")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--refs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile each block")
    parser.add_argument("--no-grad-checkpointing", action="store_true")
    parser.add_argument("--checkpoint-blocks", type=int, help="checkpoint only the first this many blocks")
    parser.add_argument("--checkpoint-policy", default="block", choices=get_args(CheckpointPolicyName),
                        help="what a checkpointed block keeps (train.checkpoint_policy)")
    parser.add_argument("--memory-budget", type=float, help="with --compile and --no-grad-checkpointing: share of "
                                                             "activations compile keeps (train.activation_memory_budget)")
    parser.add_argument("--attention-backend", default="auto", help="auto, cudnn, flash, efficient or math")
    parser.add_argument("--profile", action="store_true", help="also profile one step: GPU time by kernel kind")
    parser.add_argument("--skip-mask-share", action="store_true", help="do not time the step without mask predictors")
    parser.add_argument("--peak-tflops", type=float, help="bf16 dense peak of another GPU")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny config and clip on the CPU")
    parser.add_argument("--out", default="bench/results/train_throughput.json")
    if parser.parse_known_args(argv)[0].cpu_smoke:  # smaller defaults; flags given still win
        parser.set_defaults(config="configs/model_tiny.yaml", frames=8, height=32, width=64, steps=2, warmup=1)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    device = torch.device("cpu" if args.cpu_smoke or not torch.cuda.is_available() else "cuda")
    overrides = ["model.checkpoint=null", f"train.grad_checkpointing={str(not args.no_grad_checkpointing).lower()}",
                 "train.cond_dropout=0.0", f"train.compile={str(args.compile).lower()}",
                 f"train.attention_backend={args.attention_backend}", f"train.checkpoint_policy={args.checkpoint_policy}"]
    if args.checkpoint_blocks is not None:
        overrides.append(f"train.checkpoint_blocks={args.checkpoint_blocks}")
    if args.memory_budget is not None:
        overrides.append(f"train.activation_memory_budget={args.memory_budget}")
    if args.cpu_smoke:
        overrides.append("data.ref_size=[16, 16]")
    config = load_config(args.config, overrides)
    geometry = vae_geometry(config.vae, config.model.patch_size)
    stride = geometry.spatial_stride
    shape = StepShape(args.batch, geometry.latent_frames(args.frames), args.height // stride, args.width // stride, args.refs,
                      config.data.ref_size[0] // stride, config.data.ref_size[1] // stride, config.model.text_len, geometry.temporal_stride)
    inputs = random_inputs(config, shape, device)
    full = time_steps(config, inputs, device, args.steps, args.warmup, profile=args.profile)
    flops = training_flops(config.model, shape)
    tokens = tokens_per_sample(inputs, config.model.patch_size) * args.batch
    peak = peak_flops(device, args.peak_tflops)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "config": args.config, "frames": args.frames, "height": args.height, "width": args.width, "refs": args.refs,
        "batch": args.batch, "compile": args.compile, "grad_checkpointing": config.train.grad_checkpointing,
        "checkpoint_blocks": config.train.checkpoint_blocks, "checkpoint_policy": config.train.checkpoint_policy,
        "activation_memory_budget": config.train.activation_memory_budget,
        "attention_backend": config.train.attention_backend,
        "video_tokens": inputs.num_video_tokens, "tokens_per_step": tokens,
        **full,
        "tokens_per_s": tokens / full["step_time_s"],
        "tflops_per_step": flops / 1e12,
        "achieved_tflops": flops / full["step_time_s"] / 1e12,
        "mfu": flops / full["step_time_s"] / peak if peak else None,
        "forward_flops_by_part": forward_flops(config.model, shape),
    }
    if not args.skip_mask_share:
        without_predictors = load_config(args.config, [*overrides, "model.mask_layers=[]"])
        without = time_steps(without_predictors, inputs, device, args.steps, args.warmup)
        result["step_time_without_mask_predictor_s"] = without["step_time_s"]
        result["mask_predictor_share"] = 1 - without["step_time_s"] / full["step_time_s"]
    print_table(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


def print_table(result: dict) -> None:
    rows = [
        ("device", result["device"]),
        ("variant", f"compile {result['compile']}, checkpointing {result['grad_checkpointing']} "
                    f"(blocks {result['checkpoint_blocks'] or 'all'}, policy {result['checkpoint_policy']}), memory budget {result['activation_memory_budget']}, "
                    f"attention {result['attention_backend']}"),
        ("clip", f"{result['frames']} x {result['height']} x {result['width']}, {result['refs']} identities, batch {result['batch']}"),
        ("tokens per step (video + refs)", f"{result['tokens_per_step']} ({result['video_tokens']} video)"),
        ("step time (median)", f"{result['step_time_s']:.3f} s"),
        ("tokens/s", f"{result['tokens_per_s']:.0f}"),
        ("parameters", f"{result['parameters'] / 1e9:.3f} B"),
        ("TFLOP per step (no recompute)", f"{result['tflops_per_step']:.4g}"),
        ("achieved TFLOPS", f"{result['achieved_tflops']:.4g}"),
        ("MFU", "n/a (no known peak)" if result["mfu"] is None else f"{100 * result['mfu']:.1f} %"),
    ]
    if "peak_memory_gib" in result:
        rows.append(("peak memory", f"{result['peak_memory_gib']:.1f} GiB"))
    for kind, seconds in result.get("gpu_time_by_kind", {}).items():
        rows.append((f"GPU time: {kind}", f"{seconds:.3f} s ({100 * seconds / result['step_time_s']:.0f} % of step)"))
    if "mask_predictor_share" in result:
        rows.append(("mask predictor share of step", f"{100 * result['mask_predictor_share']:.1f} %"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
