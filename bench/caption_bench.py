"""Throughput of the caption stage at Qwen2.5-VL-7B's shape (random weights: no checkpoint needed),
on clips of the real footage, next to one PyAV decode of the same clips.

The model is built from the published Qwen2.5-VL-7B-Instruct configuration straight into device
memory in bf16 and driven through the real stage (frame sampling, numpy preprocessing, batched
generate). Random weights would stop at a random end-of-text, so every caption is forced to exactly
--max-new-tokens tokens. The first batch warms up and is not counted. Per batch it prints the wall
time of the stage, output tokens/s, and source frames/s (clip frames captioned per second); it also
times a prefill-only pass of the same batch (one new token), so decode tokens/s = B*(N-1) /
(t_N - t_1). The stage's CPU work (sampling, resizing, patchifying) is inside the stage time.

    .venv/bin/python bench/caption_bench.py --batch-size 8              # GPU, 7B shape, bf16
    .venv/bin/python bench/caption_bench.py --tiny                      # CPU smoke run, tiny model
"""
from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
import time
from pathlib import Path

import av
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tiny tokenizer and clip cutting, shared with the tests

from clip_cutting import cut_clip  # noqa: E402
from curation.frames import decode_frames  # noqa: E402
from curation.stage import Item, on_cuda  # noqa: E402
from stages.caption import Caption, CaptionParams  # noqa: E402
from stages.models.vlm import Patching, QwenVideoCaptioner, smart_resize  # noqa: E402
from tiny_hf import save_tiny_tokenizer, tiny_qwen_vl_config  # noqa: E402
from common import REALDATA, VIDEOS  # noqa: E402



def qwen2_5_vl_7b_config(tokenizer):
    """Qwen/Qwen2.5-VL-7B-Instruct's config.json (its shapes); special token ids follow our tokenizer."""
    from transformers import Qwen2_5_VLConfig

    token_ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    text = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
                rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                     "mrope_section": [16, 24, 24]})
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu")
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **token_ids)


def random_captioner(args, tokenizer, params: CaptionParams) -> QwenVideoCaptioner:
    """The model built from its configuration straight on the device, in the benchmark's dtype."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = tiny_qwen_vl_config(tokenizer) if args.tiny else qwen2_5_vl_7b_config(tokenizer)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=getattr(torch, args.dtype),
                                                                 attn_implementation=args.attn)
    model.generation_config.eos_token_id = None  # random weights: every caption runs to max_new_tokens
    return QwenVideoCaptioner(model, tokenizer, Patching(), params.min_pixels, params.max_pixels)


class RandomWeightsCaption(Caption):
    """The caption stage with the model built from a configuration instead of loaded."""

    def __init__(self, params: CaptionParams, build):
        super().__init__(params)
        self._build = build

    def _load_captioner(self) -> QwenVideoCaptioner:
        return self._build(self.params)


def real_clips(stage: Caption, seconds: float) -> list[dict]:
    """The first `seconds` of each real video as a clip: its frames for the stage (decode_frames, as the
    executor does it) and the times of a plain PyAV decode and of that sampled decode."""
    clips = []
    for name in VIDEOS:
        data, clip = cut_clip(REALDATA / name, 0.0, seconds)
        start = time.perf_counter()
        n_frames = plain_decode(data)
        decoded = time.perf_counter()
        frames = decode_frames(data, stage.frame_specs())
        clips.append({"name": Path(name).name, "data": data, "clip": clip, "n_frames": n_frames, "frames": frames,
                      "decode_s": decoded - start, "sampled_decode_s": time.perf_counter() - decoded})
    return clips


def plain_decode(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def item_of(clip: dict, index: int) -> Item:
    return Item(source_id="bench", source_path=clip["name"], key=f"bench-{index:04d}", clip_index=index,
                start=0.0, end=clip["clip"]["duration"], members={"mp4": clip["data"]},
                meta={"clips": dict(clip["clip"])}, frames=clip["frames"])


def video_tokens(stage: Caption, clip: dict) -> int:
    """Merged vision tokens the model gets for this clip (one per 28x28 pixels per frame pair)."""
    p = stage.params
    images = clip["frames"][stage.frame_specs()[0]].images
    n_frames = min(len(images), p.max_frames)
    height, width = smart_resize(images.shape[1], images.shape[2], 28, p.min_pixels, p.max_pixels)
    return math.ceil(n_frames / 2) * (height // 28) * (width // 28)


def timed(stage: Caption, items: list[Item], device: str) -> float:
    start = time.perf_counter()
    stage.process(items)
    if on_cuda(device):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run(args) -> None:
    params = CaptionParams(model_path=f"random-weights:{'tiny' if args.tiny else 'qwen2.5-vl-7b'}", device=args.device,
                           dtype=args.dtype, clips_per_batch=args.batch_size, max_new_tokens=args.max_new_tokens,
                           sample_fps=args.sample_fps, max_frames=args.max_frames, attn_implementation=args.attn)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer = save_tiny_tokenizer(Path(folder))
    start = time.perf_counter()
    captioner = random_captioner(args, tokenizer, params)
    print(f"model built on {args.device} in {time.perf_counter() - start:.1f} s: "
          f"{sum(p.numel() for p in captioner.model.parameters()) / 1e6:,.1f} M parameters, {args.dtype}")
    stage = RandomWeightsCaption(params, lambda p: captioner)
    prefill_stage = RandomWeightsCaption(params.model_copy(update={"max_new_tokens": 1}), lambda p: captioner)
    stage.setup()
    prefill_stage.setup()
    clips = real_clips(stage, args.clip_seconds)
    print(f"{'clip':34s} {'frames':>6s} {'sampled':>7s} {'vis.tok':>7s} {'PyAV fps':>8s} {'sampled decode fps':>18s}")
    for clip in clips:
        sampled = min(len(clip["frames"][stage.frame_specs()[0]].images), args.max_frames)
        print(f"{clip['name']:34s} {clip['n_frames']:6d} {sampled:7d} {video_tokens(stage, clip):7d} "
              f"{clip['n_frames'] / clip['decode_s']:8.0f} {clip['n_frames'] / clip['sampled_decode_s']:18.0f}")
    report(stage, prefill_stage, clips, args)


def report(stage: Caption, prefill_stage: Caption, clips: list[dict], args) -> None:
    n = args.batch_size
    batches = [[clips[(b * n + i) % len(clips)] for i in range(n)] for b in range(args.batches + 1)]
    print(f"\nbatch size {n}, {args.max_new_tokens} new tokens per clip; batch 0 warms up")
    print(f"{'batch':>5s} {'stage s':>8s} {'prefill s':>9s} {'out tok/s':>9s} {'decode tok/s':>12s} "
          f"{'src fps':>8s} {'decode s':>8s} {'stage/decode':>12s}")
    totals = {"stage_s": 0.0, "prefill_s": 0.0, "frames": 0, "decode_s": 0.0}
    for b, batch in enumerate(batches):
        stage_s = timed(stage, [item_of(c, i) for i, c in enumerate(batch)], args.device)
        prefill_s = timed(prefill_stage, [item_of(c, i) for i, c in enumerate(batch)], args.device)
        frames, decode_s = sum(c["n_frames"] for c in batch), sum(c["decode_s"] for c in batch)
        print(f"{b:5d} {stage_s:8.2f} {prefill_s:9.2f} {n * args.max_new_tokens / stage_s:9.1f} "
              f"{decode_rate(n * (args.max_new_tokens - 1), stage_s - prefill_s):>12s} "
              f"{frames / stage_s:8.1f} {decode_s:8.3f} {stage_s / decode_s:12.1f}")
        if b > 0:
            for key, value in (("stage_s", stage_s), ("prefill_s", prefill_s), ("frames", frames), ("decode_s", decode_s)):
                totals[key] += value
    tokens = args.batches * n * args.max_new_tokens
    print(f"\nsteady state over {args.batches} batches: {tokens / totals['stage_s']:.1f} output tokens/s, "
          f"{decode_rate(args.batches * n * (args.max_new_tokens - 1), totals['stage_s'] - totals['prefill_s'])} decode tokens/s, "
          f"{args.batches * n / totals['stage_s']:.2f} clips/s, {totals['frames'] / totals['stage_s']:.1f} source frames/s "
          f"(PyAV decode of the same clips: {totals['frames'] / totals['decode_s']:.0f} frames/s; "
          f"stage/decode time ratio {totals['stage_s'] / totals['decode_s']:.1f})")


def decode_rate(tokens: int, seconds: float) -> str:
    """Tokens per second of decoding, or n/a where timing noise made the full run no slower than prefill."""
    return f"{tokens / seconds:.1f}" if seconds > 0 else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with a tiny random model")
    parser.add_argument("--batch-size", type=int, default=4, help="clips per generate call")
    parser.add_argument("--batches", type=int, default=3, help="timed batches after the warm-up batch")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="tokens generated per caption")
    parser.add_argument("--clip-seconds", type=float, default=10.0, help="length of the clip cut from each video")
    parser.add_argument("--sample-fps", type=float, default=1.0, help="caption.sample_fps")
    parser.add_argument("--max-frames", type=int, default=32, help="caption.max_frames")
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --tiny")
    parser.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"],
                        help="default: bfloat16, or float32 with --tiny")
    args = parser.parse_args()
    if not REALDATA.is_dir():
        sys.exit(f"real footage folder {REALDATA} is absent")
    if args.tiny:
        args.max_new_tokens, args.clip_seconds = min(args.max_new_tokens, 16), min(args.clip_seconds, 4.0)
    args.device = args.device or ("cpu" if args.tiny else "cuda")
    args.dtype = args.dtype or ("float32" if args.tiny else "bfloat16")
    if on_cuda(args.device) and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU machine, or use --tiny for the CPU smoke run")
    torch.set_grad_enabled(False)
    run(args)


if __name__ == "__main__":
    main()
