"""Qwen2-VL / Qwen2.5-VL video captioning through transformers, with the vision preprocessing done
here in numpy + PIL (no torchvision, which transformers' video processor imports).

The preprocessing follows Qwen's reference pipeline (qwen-vl-utils + the Qwen2-VL processors): the
frame count is padded to a multiple of the temporal patch size by repeating the last frame; every
frame is resized with PIL bicubic to `smart_resize`'s size (both sides multiples of patch*merge, the
area within [min_pixels, max_pixels]); pixels are scaled to [0, 1] and normalised with the
checkpoint's mean/std; then cut into (temporal x 14 x 14) patches ordered so that each 2x2 block of
patches the merger joins is contiguous. For a single image repeated over the temporal patch this is
exactly what transformers' PIL image processor produces (tests/test_caption.py checks it).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from stages.models.hf_local import DtypeName, torch_dtype

# Qwen's video defaults (qwen-vl-utils): each frame keeps between 128 and 768 merged tokens' worth
# of pixels (one merged token covers 28x28 pixels).
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SYSTEM_PROMPT = "You are a helpful assistant."  # the system turn Qwen's chat templates insert by default

Family = Literal["qwen2_5_vl", "qwen2_vl"]


@dataclass(frozen=True)
class Patching:
    """How the vision tower cuts pixels into tokens (the checkpoint's preprocessor_config.json)."""

    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD

    @classmethod
    def from_checkpoint(cls, model_path: str, local_files_only: bool = True) -> Patching:
        from transformers.utils import cached_file

        config_path = cached_file(model_path, "preprocessor_config.json", local_files_only=local_files_only,
                                  _raise_exceptions_for_missing_entries=False)
        if config_path is None:
            return cls()
        config = json.loads(Path(config_path).read_text())
        return cls(patch_size=config.get("patch_size", cls.patch_size),
                   temporal_patch_size=config.get("temporal_patch_size", cls.temporal_patch_size),
                   merge_size=config.get("merge_size", cls.merge_size),
                   image_mean=tuple(config.get("image_mean", OPENAI_CLIP_MEAN)),
                   image_std=tuple(config.get("image_std", OPENAI_CLIP_STD)))

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's target size: sides rounded to multiples of `factor`, area scaled into
    [min_pixels, max_pixels] keeping the aspect ratio as far as the rounding allows."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.0f} is over Qwen-VL's 200")
    new_height = round(height / factor) * factor
    new_width = round(width / factor) * factor
    if new_height * new_width > max_pixels:
        shrink = math.sqrt(height * width / max_pixels)
        new_height = max(factor, math.floor(height / shrink / factor) * factor)
        new_width = max(factor, math.floor(width / shrink / factor) * factor)
    elif new_height * new_width < min_pixels:
        grow = math.sqrt(min_pixels / (height * width))
        new_height = math.ceil(height * grow / factor) * factor
        new_width = math.ceil(width * grow / factor) * factor
    return new_height, new_width


def video_patches(frames: np.ndarray, patching: Patching, min_pixels: int = VIDEO_MIN_PIXELS,
                  max_pixels: int = VIDEO_MAX_PIXELS) -> tuple[np.ndarray, tuple[int, int, int]]:
    """RGB uint8 frames [T, H, W, 3] -> (patches float32 [t*h*w, 3*tp*p*p], grid (t, h, w))."""
    if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"need RGB frames [T, H, W, 3] with T >= 1, got shape {frames.shape}")
    tp, p, m = patching.temporal_patch_size, patching.patch_size, patching.merge_size
    if pad := -len(frames) % tp:
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)])
    height, width = smart_resize(frames.shape[1], frames.shape[2], patching.factor, min_pixels, max_pixels)
    resized = np.stack([_resize_bicubic(frame, width, height) for frame in frames])
    pixels = normalise(resized, patching)
    grid = (len(frames) // tp, height // p, width // p)
    gt, gh, gw = grid
    blocks = pixels.reshape(gt, tp, gh // m, m, p, gw // m, m, p, 3)
    # -> (t, block row, block col, row in block, col in block, channel, time in patch, py, px)
    blocks = blocks.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)
    return np.ascontiguousarray(blocks.reshape(gt * gh * gw, 3 * tp * p * p)), grid


def _resize_bicubic(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    if frame.shape[:2] == (height, width):
        return frame
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BICUBIC))


def normalise(images: np.ndarray, patching: Patching) -> np.ndarray:
    """uint8 -> float32 (x/255 - mean)/std, in the order and precision transformers uses."""
    scaled = (images.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.asarray(patching.image_mean, dtype=np.float32)
    std = np.asarray(patching.image_std, dtype=np.float32)
    return (scaled - mean) / std


@dataclass
class VideoInput:
    """Frames of one clip [T, H, W, 3] RGB uint8, sampled every `seconds_per_frame` seconds."""

    frames: np.ndarray
    seconds_per_frame: float


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 512
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9

    def generate_kwargs(self) -> dict:
        if not self.do_sample:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        return {"max_new_tokens": self.max_new_tokens, "do_sample": True,
                "temperature": self.temperature, "top_p": self.top_p}


class QwenVideoCaptioner:
    """A Qwen2(.5)-VL model answering one prompt about each of a batch of videos."""

    SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>")

    def __init__(self, model, tokenizer, patching: Patching, min_pixels: int = VIDEO_MIN_PIXELS,
                 max_pixels: int = VIDEO_MAX_PIXELS):
        self.model, self.tokenizer, self.patching = model.eval(), tokenizer, patching
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.family: Family = model.config.model_type
        self.device = model.device
        self.video_token_id = model.config.video_token_id
        self._check_special_tokens()

    @classmethod
    def load(cls, model_path: str, family: Family, device: str = "cpu", dtype: DtypeName = "float32",
             attn_implementation: str = "sdpa", local_files_only: bool = True,
             min_pixels: int = VIDEO_MIN_PIXELS, max_pixels: int = VIDEO_MAX_PIXELS) -> QwenVideoCaptioner:
        """Model, tokenizer and patching from one checkpoint (a folder, or a hub id when not local_files_only)."""
        from transformers import AutoTokenizer

        model = _model_class(family).from_pretrained(
            model_path, dtype=torch_dtype(dtype), attn_implementation=attn_implementation,
            local_files_only=local_files_only).to(torch.device(device))
        tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=local_files_only)
        return cls(model, tokenizer, Patching.from_checkpoint(model_path, local_files_only), min_pixels, max_pixels)

    def _check_special_tokens(self) -> None:
        ids = {token: self.tokenizer.convert_tokens_to_ids(token) for token in self.SPECIAL_TOKENS}
        unknown = [token for token, i in ids.items() if i is None or i == self.tokenizer.unk_token_id]
        if unknown:
            raise ValueError(f"the tokenizer lacks Qwen-VL's special tokens {unknown}")
        if ids["<|video_pad|>"] != self.video_token_id:
            raise ValueError(f"the tokenizer's <|video_pad|> is {ids['<|video_pad|>']}, the model's video token "
                             f"{self.video_token_id}")

    @torch.inference_mode()
    def caption(self, videos: list[VideoInput], prompt: str, settings: GenerationSettings) -> list[str]:
        """One answer to `prompt` per video, generated as one left-padded batch."""
        patches, grids = zip(*(video_patches(v.frames, self.patching, self.min_pixels, self.max_pixels) for v in videos))
        prompts = [self._prompt_ids(prompt, self._video_tokens(grid)) for grid in grids]
        input_ids, attention_mask = self._left_pad(prompts)
        inputs = {
            "input_ids": input_ids, "attention_mask": attention_mask,
            # tells get_rope_index which positions are video tokens (0 text, 2 video) for 3-D RoPE
            "mm_token_type_ids": (input_ids == self.video_token_id).int() * 2,
            "pixel_values_videos": torch.from_numpy(np.concatenate(patches)).to(self.device, self.model.dtype),
            "video_grid_thw": torch.tensor(grids, dtype=torch.long, device=self.device),
        }
        if self.family == "qwen2_5_vl":  # Qwen2.5-VL spaces temporal positions by real time
            inputs["second_per_grid_ts"] = torch.tensor(
                [self.patching.temporal_patch_size * v.seconds_per_frame for v in videos], device=self.device)
        output = self.model.generate(**inputs, **settings.generate_kwargs(), pad_token_id=self._pad_id())
        new_tokens = output[:, input_ids.shape[1]:]
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def _video_tokens(self, grid: tuple[int, int, int]) -> int:
        gt, gh, gw = grid
        return gt * gh * gw // self.patching.merge_size ** 2

    def _prompt_ids(self, prompt: str, n_video_tokens: int) -> list[int]:
        """Qwen's ChatML turn for a user message made of one video then the prompt text."""
        before = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n<|vision_start|>"
        after = f"<|vision_end|>{prompt}<|im_end|>\n<|im_start|>assistant\n"
        encode = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        return encode(before) + [self.video_token_id] * n_video_tokens + encode(after)

    def _left_pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        length = max(map(len, sequences))
        ids = torch.full((len(sequences), length), self._pad_id(), dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            ids[row, length - len(sequence):] = torch.tensor(sequence)
            mask[row, length - len(sequence):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id


def checkpoint_family(model_path: str, local_files_only: bool = True) -> str:
    """The model_type in the checkpoint's config.json ("qwen2_5_vl", "qwen2_vl", ...)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(model_path, local_files_only=local_files_only).model_type


def _model_class(family: Family):
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

    return {"qwen2_5_vl": Qwen2_5_VLForConditionalGeneration, "qwen2_vl": Qwen2VLForConditionalGeneration}[family]
