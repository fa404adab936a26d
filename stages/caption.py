"""caption: a dense description of each clip from a video VLM (Qwen2.5-VL or Qwen2-VL).

Frames are sampled at `sample_fps` (at most `max_frames`, spread evenly) and handed to the model as
one video; the prompt asks for the setting, each subject's appearance, actions and expressions, the
objects they handle, and how the subjects interact. Several clips go through `generate` as one
left-padded batch (`clips_per_batch`). Weights come from the local folder `model_path`; a hub id is
accepted only with `allow_hub` (and then still nothing downloads while HF_HUB_OFFLINE=1).

Writes meta {"text", "model", "frames": [seconds from the clip start]} and the score n_words; later
stages (human_caption_rule, phrases) read meta["caption"]["text"].
"""
from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from curation.stage import Device, FrameSpec, Item, Params, Resources, Stage, Weights, gpu_share, gpus_param
from stages.models.hf_local import DtypeName
from stages.models.vlm import (VIDEO_MIN_PIXELS, GenerationSettings, QwenVideoCaptioner, VideoInput,
                               checkpoint_family)

DEFAULT_PROMPT = (
    "Describe this video in detail in one paragraph. Cover: the environment and setting; every person "
    "(and any other main subject) with their appearance: gender, approximate age, clothing, hair and "
    "accessories, and where they are in the frame; what each one does: actions, gestures, facial "
    "expressions, and whether they are talking; the salient objects they hold or interact with; and the "
    "interactions between the subjects. Refer to each subject by a distinguishing description, such as "
    "'the woman in the red dress', and describe only what is visible.")


class CaptionParams(Params):
    model_path: Annotated[str | None, Weights("folder", hub_param="allow_hub")] = Field(None, description="a local folder of a Qwen2.5-VL / Qwen2-VL checkpoint (transformers format, with its tokenizer); a hub id only with allow_hub")
    family: Literal["qwen2_5_vl", "qwen2_vl"] = Field("qwen2_5_vl", description="model family of the checkpoint: qwen2_5_vl (Qwen2_5_VLForConditionalGeneration) or qwen2_vl (Qwen2VLForConditionalGeneration, as in the paper)")
    allow_hub: bool = Field(False, description="let model_path name a Hugging Face hub id (for clusters with hub access); false: local folders only")
    prompt: str = Field(DEFAULT_PROMPT, min_length=1, description="instruction given with each clip's frames")
    sample_fps: float = Field(1.0, gt=0, description="frames per second sampled from the clip")
    max_frames: int = Field(32, ge=1, description="most frames per clip, spread evenly over the sampled ones")
    max_side: int = Field(640, ge=28, description="longer side of the decoded frames before the model's own resize")
    min_pixels: int = Field(VIDEO_MIN_PIXELS, ge=28 * 28, description="least pixels per frame after the model's resize (Qwen's video default 128*28*28)")
    max_pixels: int = Field(360 * 420, ge=28 * 28, description="most pixels per frame after the model's resize (Qwen2-VL's video example uses 360*420); each pair of frames costs at most max_pixels/784 tokens")
    clips_per_batch: int = Field(4, ge=1, description="clips per generate call")
    max_new_tokens: int = Field(512, ge=1, description="most tokens generated per caption")
    do_sample: bool = Field(False, description="sample instead of greedy decoding")
    temperature: float = Field(0.7, gt=0, description="sampling temperature (with do_sample)")
    top_p: float = Field(0.9, gt=0, le=1, description="nucleus sampling mass (with do_sample)")
    device: Device = Field("cuda", description="torch device ('cuda', 'cuda:1', 'cpu')")
    dtype: DtypeName = Field("bfloat16", description="weights' dtype on the device")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field("sdpa", description="attention kernel (flash_attention_2 needs the flash-attn package)")
    gpus: float = gpus_param(1.0)

    @model_validator(mode="after")
    def _pixel_range(self) -> CaptionParams:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} exceeds max_pixels {self.max_pixels}")
        return self


class Caption(Stage):
    name = "caption"
    Params = CaptionParams

    @classmethod
    def annotate_sample(cls, document: dict) -> None:
        document["caption"] = document["stages"].get(cls.name, {}).get("text")

    def resources(self) -> Resources:
        return Resources(cpus=1, gpus=gpu_share(self.params.device, self.params.gpus), memory_gb=16)

    def items_per_batch(self) -> int:
        return self.params.clips_per_batch

    def frame_specs(self) -> list[FrameSpec]:
        return [FrameSpec(fps=self.params.sample_fps, max_side=self.params.max_side)]

    def setup(self) -> None:
        p = self.params
        self._captioner = self._load_captioner()
        self._settings = GenerationSettings(max_new_tokens=p.max_new_tokens, do_sample=p.do_sample,
                                            temperature=p.temperature, top_p=p.top_p)

    def _load_captioner(self) -> QwenVideoCaptioner:
        p = self.params
        location = self.weights("model_path")
        found = checkpoint_family(location, local_files_only=not p.allow_hub)
        if found != p.family:
            raise ValueError(f"caption.family is {p.family!r} but {location} holds a {found!r} checkpoint")
        return QwenVideoCaptioner.load(location, p.family, device=self.device(), dtype=p.dtype,
                                       attn_implementation=p.attn_implementation, local_files_only=not p.allow_hub,
                                       min_pixels=p.min_pixels, max_pixels=p.max_pixels)

    def process(self, items: list[Item]) -> list[Item]:
        sampled = {id(item): self._sample(item) for item in items}
        for item in items:
            if len(sampled[id(item)][0]) == 0:
                self.reject(item, "no_frames", "no frame was decoded for captioning")
        todo = [item for item in items if item.kept]
        if todo:
            videos = [self._video_input(*sampled[id(item)]) for item in todo]
            texts = self._captioner.caption(videos, self.params.prompt, self._settings)
            for item, text in zip(todo, texts):
                self._record_caption(item, text, sampled[id(item)][1])
        return items

    def _sample(self, item: Item) -> tuple[np.ndarray, np.ndarray]:
        """The clip's frames at sample_fps, thinned evenly to at most max_frames, and their times."""
        clip = item.frames[self.frame_specs()[0]]
        chosen = np.arange(len(clip.images))
        if len(chosen) > self.params.max_frames:
            chosen = np.linspace(0, len(chosen) - 1, self.params.max_frames).round().astype(int)
        return clip.images[chosen], clip.times[chosen]

    def _video_input(self, frames: np.ndarray, times: np.ndarray) -> VideoInput:
        """The frames with their mean spacing, which Qwen2.5-VL's temporal positions follow."""
        interval = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 1.0 / self.params.sample_fps
        return VideoInput(frames, float(interval))

    def _record_caption(self, item: Item, text: str, times: np.ndarray) -> None:
        meta = {"text": text, "model": self.params.model_path, "frames": [round(float(t), 3) for t in times]}
        self.record(item, meta=meta, n_words=len(text.split()))
        if not text:
            self.reject(item, "empty_caption", "the model generated no text")
