"""Video captions from OpenAI-compatible chat completions servers (vLLM, SGLang), many requests in
flight, spread over several servers.

Each clip is one request: its sampled frames as JPEG, then the prompt. The frames are first resized
as Qwen2(.5)-VL's processor would (`smart_resize` into [min_pixels, max_pixels]), so the server's own
resize keeps them: a clip costs the visual tokens the stage's settings say, whatever the server's
defaults, and requests stay small.

`frames_as="video"` sends the frames as one `video_url` in vLLM's frame-sequence form
(`data:video/jpeg;base64,<frame>,<frame>,...`) with their rate in `media_io_kwargs`, so Qwen2(.5)-VL
reads them as one video, as the transformers backend does: two frames per temporal patch, positions
spaced by real time. `frames_as="images"` sends one `image_url` per frame, for servers whose
`video_url` takes only video files (SGLang); Qwen then sees separate images (a patch grid per frame,
no timing).

A request that fails (timeout, HTTP error, unreachable server or dropped connection, a reply
without text) is sent again, to the least busy server, up to `max_retries` more times; a clip whose
requests all fail gets a `ChatRequestError` in its place, so one bad clip does not sink the batch.
"""
from __future__ import annotations

import base64
import io
import itertools
import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

from stages.models.llm_client import ChatRequestError, chat_completions_url, message_content, post_chat_completion
from stages.models.vlm import VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS, VideoInput, smart_resize

FramesAs = Literal["video", "images"]
JPEG_QUALITY = 90
QWEN_VL_FACTOR = 28  # Qwen2(.5)-VL: 14-pixel patches merged 2x2


@dataclass(frozen=True)
class Completion:
    """A caption and the tokens the server generated for it (usage.completion_tokens; None if it gave no usage)."""

    text: str
    output_tokens: int | None


class EndpointBalancer:
    """Picks the endpoint with the fewest of this client's requests in flight; ties go round in turn,
    from a random start so that many clients do not all begin on the first endpoint."""

    def __init__(self, endpoint_urls: list[str]):
        self.urls = list(endpoint_urls)
        self._in_flight = dict.fromkeys(self.urls, 0)
        self._turn = itertools.count(random.randrange(len(self.urls)))
        self._lock = threading.Lock()

    @contextmanager
    def lease(self) -> Iterator[str]:
        with self._lock:
            start = next(self._turn) % len(self.urls)
            url = min(self.urls[start:] + self.urls[:start], key=self._in_flight.__getitem__)
            self._in_flight[url] += 1
        try:
            yield url
        finally:
            with self._lock:
                self._in_flight[url] -= 1


@dataclass
class OpenAIVideoCaptioner:
    """Captions clips through the chat completions endpoints in `endpoint_urls` (base URLs such as
    http://host:8000/v1), `concurrency` requests in flight."""

    endpoint_urls: list[str]
    model: str
    api_key: str | None = None
    timeout_s: float = 120.0
    max_retries: int = 2
    concurrency: int = 16
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    frames_as: FramesAs = "video"
    min_pixels: int = VIDEO_MIN_PIXELS
    max_pixels: int = VIDEO_MAX_PIXELS
    balancer: EndpointBalancer = field(init=False)

    def __post_init__(self):
        if not self.endpoint_urls:
            raise ValueError("need at least one endpoint URL")
        self.balancer = EndpointBalancer([chat_completions_url(url) for url in self.endpoint_urls])

    def caption(self, videos: list[VideoInput], prompt: str) -> list[Completion | ChatRequestError]:
        """One answer to `prompt` per video, `concurrency` requests in flight at once."""
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(videos)) or 1) as pool:
            return list(pool.map(lambda video: self._caption_or_error(video, prompt), videos))

    def _caption_or_error(self, video: VideoInput, prompt: str) -> Completion | ChatRequestError:
        body = self.request_body(video, prompt)
        attempts = 1 + self.max_retries
        for _ in range(attempts):
            try:
                with self.balancer.lease() as url:
                    return _completion(post_chat_completion(url, body, self.api_key, self.timeout_s))
            except ChatRequestError as error:
                last_error = error
        return ChatRequestError(f"{attempts} attempts; last: {last_error}")

    def request_body(self, video: VideoInput, prompt: str) -> dict[str, Any]:
        height, width = smart_resize(*video.frames.shape[1:3], QWEN_VL_FACTOR, self.min_pixels, self.max_pixels)
        frames = [jpeg_base64(frame, width, height) for frame in video.frames]
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens,
                                "temperature": self.temperature, "top_p": self.top_p}
        if self.frames_as == "video":
            media = [{"type": "video_url", "video_url": {"url": "data:video/jpeg;base64," + ",".join(frames)}}]
            # vLLM takes the frames as a whole video at this rate (its default is 1 fps); num_frames
            # keeps it from cutting the sequence to its default 32 frames
            body["media_io_kwargs"] = {"video": {"fps": 1.0 / video.seconds_per_frame, "num_frames": len(frames)}}
        else:
            media = [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + frame}} for frame in frames]
        body["messages"] = [{"role": "user", "content": media + [{"type": "text", "text": prompt}]}]
        return body


def jpeg_base64(frame: np.ndarray, width: int, height: int) -> str:
    image = Image.fromarray(frame)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BICUBIC)  # the filter Qwen's processor uses
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _completion(response: dict[str, Any]) -> Completion:
    tokens = (response.get("usage") or {}).get("completion_tokens")
    return Completion(message_content(response).strip(), tokens if isinstance(tokens, int) else None)
