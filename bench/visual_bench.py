"""Throughput of the visual stages (subtitles, motion, quality, aesthetics, human_caption_rule) on the
real footage in ../shared/realdata, side by side with one plain PyAV decode of the same footage.

For each video: the plain decode (every frame, no conversion) in frames/s; then per stage the
decode_frames pass serving that stage's FrameSpecs, and the stage's own processing, both in source
frames per second, with the ratio of the stage's processing rate to the plain decode rate.

Aesthetics needs a CLIP ViT-L/14 checkpoint: pass --clip-path; without one it times a randomly
initialised model of the ViT-L/14 shape (same compute, meaningless scores).

    .venv/bin/python bench/visual_bench.py [--videos video3.mp4 bedroom.mp4] [--clip-path DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import av

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curation.frames import decode_frames  # noqa: E402
from curation.stage import Item  # noqa: E402
from stages.aesthetics import Aesthetics, AestheticsParams  # noqa: E402
from stages.human_caption_rule import HumanCaptionRule, HumanCaptionRuleParams  # noqa: E402
from stages.motion import Motion, MotionParams  # noqa: E402
from stages.quality import Quality, QualityParams  # noqa: E402
from stages.subtitles import Subtitles, SubtitlesParams  # noqa: E402

REALDATA = REPO.parent / "shared" / "realdata"
VIDEOS = {
    "video3.mp4": REALDATA / "data-juicer" / "tests" / "ops" / "data" / "video3.mp4",
    "video4.mp4": REALDATA / "data-juicer" / "tests" / "ops" / "data" / "video4.mp4",
    "bedroom.mp4": REALDATA / "sam2" / "notebooks" / "videos" / "bedroom.mp4",
}
HEAD = REALDATA / "improved-aesthetic-predictor" / "sac+logos+ava1-l14-linearMSE.pth"
CLIP_L14_PREPROCESSOR = {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                         "image_mean": [0.48145466, 0.4578275, 0.40821073],
                         "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}


def plain_decode(path: Path) -> tuple[int, float, float]:
    """(frames, seconds taken, video duration) for one threaded PyAV decode of every frame, with no
    conversion."""
    start = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = sum(1 for _ in container.decode(stream))
        duration = container.duration / 1e6
    return n, time.perf_counter() - start, duration


def random_clip_l14(folder: Path) -> Path:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(CLIP_L14_PREPROCESSOR))
    return folder


def make_stages(clip_path: str) -> list:
    return [
        Subtitles(SubtitlesParams()),
        Motion(MotionParams()),
        Quality(QualityParams()),
        Aesthetics(AestheticsParams(clip_path=clip_path, head_path=str(HEAD), min_score=-1e9)),
        HumanCaptionRule(HumanCaptionRuleParams()),
    ]


def bench_stage(stage, path: Path, n_frames: int, duration: float) -> tuple[float | None, float]:
    """(frames/s of decode_frames for the stage's specs, None if it reads no frames; frames/s of the
    stage's processing)."""
    start = time.perf_counter()
    frames = decode_frames(str(path), stage.frame_specs())
    decoded = time.perf_counter() - start
    item = Item(source_id="bench", source_path=str(path), key="bench-0000", clip_index=0, start=0.0, end=duration,
                meta={"caption": {"text": "two women talk at a table"}}, frames=frames)
    start = time.perf_counter()
    stage.process([item])
    processed = time.perf_counter() - start
    return (n_frames / decoded if frames else None), n_frames / processed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", nargs="+", default=list(VIDEOS), choices=list(VIDEOS))
    parser.add_argument("--clip-path", help="local CLIP ViT-L/14 checkpoint (transformers format)")
    args = parser.parse_args()
    if not REALDATA.is_dir():
        sys.exit(f"real footage folder {REALDATA} is absent")
    with tempfile.TemporaryDirectory() as tmp:
        clip_path = args.clip_path or str(random_clip_l14(Path(tmp) / "clip-l14-random"))
        stages = make_stages(clip_path)
        for stage in stages:
            stage.setup()
        print(f"aesthetics CLIP: {args.clip_path or 'random ViT-L/14-shaped weights (timing only)'}")
        print(f"{'video':<13}{'stage':<20}{'specs decode f/s':>17}{'process f/s':>13}{'process/plain decode':>22}")
        for name in args.videos:
            plain_decode(VIDEOS[name])  # warm the file cache so every pass below reads from memory
            n_frames, seconds, duration = plain_decode(VIDEOS[name])
            decode_fps = n_frames / seconds
            print(f"{name:<13}{'(plain PyAV decode)':<20}{decode_fps:>17.1f}{'':>13}{'1.00':>22}   {n_frames} frames")
            for stage in stages:
                specs_fps, process_fps = bench_stage(stage, VIDEOS[name], n_frames, duration)
                specs = "-" if specs_fps is None else f"{specs_fps:.1f}"
                print(f"{'':<13}{stage.name:<20}{specs:>17}{process_fps:>13.1f}{process_fps / decode_fps:>22.2f}")


if __name__ == "__main__":
    main()
