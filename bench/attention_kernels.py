"""Self-attention kernels at the trainer's shape, side by side: which one should the DiT use?

Times scaled_dot_product_attention forward and forward + backward in bf16 with one kernel allowed at a
time (cuDNN, FlashAttention-2, memory-efficient), at the Wan2.1-1.3B training shape by default
(33,272 tokens = 81 x 480 x 832 video + two 256-token references, 12 heads of 128). TFLOPS count
4 Lq Lk d per head forward and 3 x that for forward + backward, as training/flops.py does. Each time is
the median of CUDA-event timings after warm-up; outputs are checked against the first kernel's.

    python bench/attention_kernels.py
    python bench/attention_kernels.py --tokens 16384 --heads 12 --head-dim 128
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.flops import TRAIN_MULTIPLIER  # noqa: E402

KERNELS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}


def time_ms(run, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure(kernel: SDPBackend, q, k, v, grad, repeats: int) -> dict:
    with sdpa_kernel([kernel]):
        out = F.scaled_dot_product_attention(q, k, v)
        forward = time_ms(lambda: F.scaled_dot_product_attention(q, k, v), repeats)

        def forward_backward():
            q.grad = k.grad = v.grad = None
            F.scaled_dot_product_attention(q, k, v).backward(grad)

        both = time_ms(forward_backward, repeats)
    return {"forward_ms": forward, "forward_backward_ms": both, "out": out.detach()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=33272)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="bench/results/attention_kernels.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("attention_kernels needs a CUDA GPU")
    g = torch.Generator(device="cuda").manual_seed(0)
    shape = (args.batch, args.heads, args.tokens, args.head_dim)
    q, k, v = (torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_() for _ in range(3))
    grad = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=g)
    forward_flops = 4 * args.batch * args.heads * args.tokens**2 * args.head_dim
    rows, reference = {}, None
    for name, kernel in KERNELS.items():
        try:
            row = measure(kernel, q, k, v, grad, args.repeats)
        except RuntimeError as error:  # a kernel that does not take this shape or GPU
            rows[name] = {"error": str(error).splitlines()[0]}
            continue
        out = row.pop("out")
        reference = out if reference is None else reference
        row["relative_error_vs_first"] = ((out.float() - reference.float()).norm() / reference.float().norm()).item()
        row["forward_tflops"] = forward_flops / row["forward_ms"] / 1e9
        row["forward_backward_tflops"] = TRAIN_MULTIPLIER * forward_flops / row["forward_backward_ms"] / 1e9
        rows[name] = row
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(),
              "shape": dict(zip(("batch", "heads", "tokens", "head_dim"), shape)), "kernels": rows}
    print(f"{result['device']}, torch {result['torch']}, cuDNN {result['cudnn']}, q/k/v {list(shape)} bf16")
    baseline = rows.get("flash", {}).get("forward_backward_ms")
    for name, row in rows.items():
        if "error" in row:
            print(f"{name:<10} unavailable: {row['error']}")
            continue
        ratio = f"  {baseline / row['forward_backward_ms']:.2f}x flash" if baseline else ""
        print(f"{name:<10} forward {row['forward_ms']:7.2f} ms {row['forward_tflops']:6.1f} TFLOPS | forward+backward "
              f"{row['forward_backward_ms']:7.2f} ms {row['forward_backward_tflops']:6.1f} TFLOPS{ratio} | "
              f"rel. error {row['relative_error_vs_first']:.1e}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
