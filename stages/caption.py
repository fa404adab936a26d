"""caption: a dense description of each clip from a video VLM (Qwen2.5-VL or Qwen2-VL).

Frames are sampled at `sample_fps` (at most `max_frames`, spread evenly) and handed to the model as
one video; the prompt asks for the setting, each subject's appearance, actions and expressions, the
objects they handle, and how the subjects interact.

Backends: `hf` runs the model in the worker through transformers: several clips go through
`generate` as one left-padded batch (`clips_per_batch`); weights come from the local folder
`model_path` (a hub id only with `allow_hub`, and then still nothing downloads while
HF_HUB_OFFLINE=1). `openai` sends each clip's frames to OpenAI-compatible servers (vLLM, SGLang;
`endpoint_urls`, `model`), `concurrency` requests in flight per worker, which needs no GPU; a clip
whose requests all fail (after `max_retries`) is rejected as caption_failed. docs/serving.md tells
how to run the servers beside a Ray cluster.

Writes meta {"text", "model", "frames": [seconds from the clip start]} and the score n_words; the
openai backend adds "output_tokens" (the server's usage.completion_tokens) to both, from which a
run's output tokens per second follow. Later stages (human_caption_rule, phrases) read
meta["caption"]["text"].
"""
from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from curation.stage import Device, FrameSpec, Item, Params, Resources, Stage, Weights, gpu_share, gpus_param
from stages.models.hf_local import DtypeName
from stages.models.llm_client import ChatRequestError, api_key_from_env
from stages.models.vlm import (VIDEO_MIN_PIXELS, GenerationSettings, QwenVideoCaptioner, VideoInput,
                               checkpoint_family)
from stages.models.vlm_client import Completion, FramesAs, OpenAIVideoCaptioner

DEFAULT_PROMPT = (
    "Describe this video in detail in one paragraph. Cover: the environment and setting; every person "
    "(and any other main subject) with their appearance: gender, approximate age, clothing, hair and "
    "accessories, and where they are in the frame; what each one does: actions, gestures, facial "
    "expressions, and whether they are talking; the salient objects they hold or interact with; and the "
    "interactions between the subjects. Refer to each subject by a distinguishing description, such as "
    "'the woman in the red dress', and describe only what is visible.")


class CaptionParams(Params):
    backend: Literal["hf", "openai"] = Field("hf", description="hf: the model in the worker through transformers (model_path, device); openai: OpenAI-compatible servers such as vLLM or SGLang (endpoint_urls, model; see docs/serving.md)")
    model_path: Annotated[str | None, Weights("folder", hub_param="allow_hub")] = Field(None, description="a local folder of a Qwen2.5-VL / Qwen2-VL checkpoint (transformers format, with its tokenizer); a hub id only with allow_hub; backend hf")
    family: Literal["qwen2_5_vl", "qwen2_vl"] = Field("qwen2_5_vl", description="model family of the checkpoint: qwen2_5_vl (Qwen2_5_VLForConditionalGeneration) or qwen2_vl (Qwen2VLForConditionalGeneration, as in the paper)")
    allow_hub: bool = Field(False, description="let model_path name a Hugging Face hub id (for clusters with hub access); false: local folders only")
    prompt: str = Field(DEFAULT_PROMPT, min_length=1, description="instruction given with each clip's frames")
    sample_fps: float = Field(1.0, gt=0, description="frames per second sampled from the clip")
    max_frames: int = Field(32, ge=1, description="most frames per clip, spread evenly over the sampled ones")
    max_side: int = Field(640, ge=28, description="longer side of the decoded frames before the model's own resize")
    min_pixels: int = Field(VIDEO_MIN_PIXELS, ge=28 * 28, description="least pixels per frame after the model's resize (Qwen's video default 128*28*28); backend openai resizes the frames so before sending them")
    max_pixels: int = Field(360 * 420, ge=28 * 28, description="most pixels per frame after the model's resize (Qwen2-VL's video example uses 360*420); each pair of frames costs at most max_pixels/784 tokens; backend openai resizes the frames so before sending them")
    clips_per_batch: int = Field(4, ge=1, description="clips per generate call")
    max_new_tokens: int = Field(512, ge=1, description="most tokens generated per caption")
    do_sample: bool = Field(False, description="sample instead of greedy decoding")
    temperature: float = Field(0.7, gt=0, description="sampling temperature (with do_sample)")
    top_p: float = Field(0.9, gt=0, le=1, description="nucleus sampling mass (with do_sample)")
    device: Device = Field("cuda", description="torch device ('cuda', 'cuda:1', 'cpu')")
    dtype: DtypeName = Field("bfloat16", description="weights' dtype on the device")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field("sdpa", description="attention kernel (flash_attention_2 needs the flash-attn package)")
    gpus: float = gpus_param(1.0)
    endpoint_urls: list[str] = Field([], description="base URLs of the OpenAI-compatible servers, e.g. [http://gpu-1:8000/v1, http://gpu-2:8000/v1] (/chat/completions is appended); each request goes to the one with the fewest of the worker's requests in flight; backend openai")
    model: str | None = Field(None, description="the served model's name, sent with each request (what `vllm serve` was started with, or its --served-model-name); backend openai")
    api_key_env: str | None = Field(None, description="name of the environment variable holding the servers' API key (sent as a Bearer token); None: no key; backend openai")
    concurrency: int = Field(16, ge=1, description="requests in flight per worker; the stage takes 4 x concurrency clips at a time; backend openai")
    timeout_s: float = Field(120.0, gt=0, description="seconds to wait for a reply before the request counts as failed; backend openai")
    max_retries: int = Field(2, ge=0, description="further requests after a failed one (timeout, HTTP error, dropped connection), each to the least busy server; backend openai")
    frames_as: FramesAs = Field("video", description="video: the frames as one video_url of JPEG frames with their rate (vLLM); images: one image_url per frame (servers whose video_url takes only video files, such as SGLang); backend openai")

    @field_validator("endpoint_urls", mode="before")
    @classmethod
    def _one_url_or_a_list(cls, urls):
        return [urls] if isinstance(urls, str) else urls

    @field_validator("endpoint_urls")
    @classmethod
    def _http_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"endpoint URL {url!r} must start with http:// or https://")
        return urls

    @model_validator(mode="after")
    def _pixel_range(self) -> CaptionParams:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} exceeds max_pixels {self.max_pixels}")
        return self

    @model_validator(mode="after")
    def _server_named(self) -> CaptionParams:
        if self.backend == "openai":
            missing = [f"caption.{name}" for name in ("endpoint_urls", "model") if not getattr(self, name)]
            if missing:
                raise ValueError(f"backend openai needs {' and '.join(missing)} set (see docs/serving.md)")
        return self


class Caption(Stage):
    name = "caption"
    sample_fields = {"caption": None}
    Params = CaptionParams

    @classmethod
    def annotate_sample(cls, document: dict) -> None:
        document["caption"] = document["stages"].get(cls.name, {}).get("text")

    def resources(self) -> Resources:
        if self.params.backend == "openai":  # the model runs in the servers: frames and JPEGs only here
            return Resources(cpus=1, memory_gb=4)
        return Resources(cpus=1, gpus=gpu_share(self.params.device, self.params.gpus), memory_gb=16)

    def items_per_batch(self) -> int:
        if self.params.backend == "openai":  # enough clips that `concurrency` stay in flight most of the batch
            return 4 * self.params.concurrency
        return self.params.clips_per_batch

    def frame_specs(self) -> list[FrameSpec]:
        return [FrameSpec(fps=self.params.sample_fps, max_side=self.params.max_side)]

    def setup(self) -> None:
        p = self.params
        if p.backend == "openai":
            self._client = self._openai_client()
            return
        self._captioner = self._load_captioner()
        self._settings = GenerationSettings(max_new_tokens=p.max_new_tokens, do_sample=p.do_sample,
                                            temperature=p.temperature, top_p=p.top_p)

    def _openai_client(self) -> OpenAIVideoCaptioner:
        p = self.params
        return OpenAIVideoCaptioner(
            p.endpoint_urls, p.model, api_key_from_env("caption.api_key_env", p.api_key_env), timeout_s=p.timeout_s,
            max_retries=p.max_retries, concurrency=p.concurrency, max_tokens=p.max_new_tokens, temperature=p.temperature if p.do_sample else 0.0,
            top_p=p.top_p if p.do_sample else 1.0, frames_as=p.frames_as, min_pixels=p.min_pixels,
            max_pixels=p.max_pixels)

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
            replies = self._caption([self._video_input(*sampled[id(item)]) for item in todo])
            for item, reply in zip(todo, replies):
                if isinstance(reply, ChatRequestError):
                    self.reject(item, "caption_failed", str(reply))
                else:
                    self._record_caption(item, reply, sampled[id(item)][1])
        return items

    def _caption(self, videos: list[VideoInput]) -> list[Completion | ChatRequestError]:
        if self.params.backend == "openai":
            return self._client.caption(videos, self.params.prompt)
        texts = self._captioner.caption(videos, self.params.prompt, self._settings)
        return [Completion(text, output_tokens=None) for text in texts]

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

    def _record_caption(self, item: Item, reply: Completion, times: np.ndarray) -> None:
        p = self.params
        model = p.model if p.backend == "openai" else p.model_path
        meta = {"text": reply.text, "model": model, "frames": [round(float(t), 3) for t in times]}
        scores = {"n_words": len(reply.text.split())}
        if reply.output_tokens is not None:
            meta["output_tokens"] = scores["output_tokens"] = reply.output_tokens
        self.record(item, meta=meta, **scores)
        if not reply.text:
            self.reject(item, "empty_caption", "the model generated no text")
