"""caption through a serving engine: the openai backend against a loopback OpenAI-compatible server
(a real HTTP server on 127.0.0.1 answering /v1/chat/completions with a tiny random-weight Qwen2.5-VL
through transformers generate), on real decoded frames: frames per request, captions and usage
tokens, requests in flight at once and spread over endpoints, retries after server errors and
timeouts, and the config checks."""
from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from conftest import REALDATA, require_realdata
from curation.frames import decode_frames
from curation.pipeline import PipelineError, load_pipeline
from curation.stage import ClipFrames, Item
from stages.caption import Caption, CaptionParams
from stages.models.vlm import GenerationSettings, QwenVideoCaptioner, VideoInput, smart_resize
from tiny_hf import save_tiny_qwen_vl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
VIDEO = REALDATA / "data-juicer" / "tests" / "ops" / "data" / "video1.mp4"  # 11.8 s, 640x360
SERVED_NAME = "tiny-qwen2.5-vl"
MAX_NEW_TOKENS = 8
PIXELS = dict(min_pixels=16 * 28 * 28, max_pixels=64 * 28 * 28)  # a few hundred patches per clip for the tiny model
CLIENT = dict(backend="openai", model=SERVED_NAME, sample_fps=1.0, max_frames=3, max_side=320,
              max_new_tokens=MAX_NEW_TOKENS, **PIXELS)


@dataclass
class RequestLog:
    """What the server saw during one test, and how it is told to misbehave."""

    fail_frame_count: int | None = None  # requests carrying this many frames get HTTP 500
    stall_first_s: float | None = None  # the first request gets no reply, its connection closed after this long
    requests: list[dict] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


class LoopbackVLMServer(ThreadingHTTPServer):
    """An OpenAI-compatible /chat/completions endpoint (under any path prefix) over a transformers
    Qwen2.5-VL; usage.completion_tokens counts the tokens generate produced."""

    daemon_threads = False  # server_close() waits for every request's thread

    def __init__(self, captioner: QwenVideoCaptioner):
        super().__init__(("127.0.0.1", 0), ChatCompletionsHandler)
        self.captioner, self.log, self.lock = captioner, RequestLog(), threading.Lock()
        self.generating = threading.Lock()  # one generate at a time: requests queue as on one GPU
        generate = captioner.model.generate

        def counting_generate(**inputs):
            output = generate(**inputs)
            self.generated_tokens = output.shape[1] - inputs["input_ids"].shape[1]
            return output

        captioner.model.generate = counting_generate

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def caption(self, frames: np.ndarray, fps: float, prompt: str) -> tuple[str, int]:
        with self.generating:
            text = self.captioner.caption([VideoInput(frames, 1.0 / fps)], prompt,
                                          GenerationSettings(max_new_tokens=MAX_NEW_TOKENS))[0]
            return text, self.generated_tokens


class ChatCompletionsHandler(BaseHTTPRequestHandler):
    server: LoopbackVLMServer

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        frames, parts, prompt = decode_content(body["messages"][-1]["content"])
        fps = body.get("media_io_kwargs", {}).get("video", {}).get("fps", 1.0)
        seen = {"path": self.path, "frames": len(frames), "size": frames.shape[1:3], "parts": parts, "fps": fps,
                "authorization": self.headers.get("Authorization")}
        log = self.server.log
        with self.server.lock:
            stall = log.stall_first_s if not log.requests else None
            log.requests.append(seen)
            log.in_flight += 1
            log.max_in_flight = max(log.max_in_flight, log.in_flight)
        try:
            if stall:
                time.sleep(stall)  # the client gave up meanwhile; closing without a reply is all that is left
            elif len(frames) == log.fail_frame_count:
                self.reply(500, {"error": {"message": "injected failure", "type": "InternalServerError"}})
            else:
                text, seen["completion_tokens"] = self.server.caption(frames, fps, prompt)
                self.reply(200, {"id": "chatcmpl-loopback", "object": "chat.completion", "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "length",
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": {"prompt_tokens": 0, "completion_tokens": seen["completion_tokens"],
                                           "total_tokens": seen["completion_tokens"]}})
        finally:
            with self.server.lock:
                log.in_flight -= 1

    def reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep the test output clean
        pass


def decode_content(content: list[dict]) -> tuple[np.ndarray, list[str], str]:
    """The frames of a video_url (comma-joined base64 JPEGs) or of image_urls, the part types, the text."""
    encoded, parts, prompt = [], [], ""
    for part in content:
        parts.append(part["type"])
        if part["type"] == "text":
            prompt = part["text"]
        else:
            encoded += part[part["type"]]["url"].partition(",")[2].split(",")
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")) for data in encoded]
    return np.stack(images), parts, prompt


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = save_tiny_qwen_vl(tmp_path_factory.mktemp("tiny-qwen-vl") / "qwen2_5_vl")
    captioner = QwenVideoCaptioner.load(str(folder), "qwen2_5_vl", **PIXELS)
    loopback = LoopbackVLMServer(captioner)
    loopback.caption(np.zeros((2, 180, 320, 3), np.uint8), 1.0, "warm up")  # first-call costs out of timed requests
    thread = threading.Thread(target=loopback.serve_forever, daemon=True)
    thread.start()
    yield loopback
    loopback.shutdown()
    loopback.server_close()
    thread.join()


@pytest.fixture(scope="module")
def video_frames() -> ClipFrames:
    """video1.mp4 decoded once at the stage's frame spec; clips are runs of these frames."""
    require_realdata()
    spec = Caption(CaptionParams(**CLIENT, endpoint_urls=["http://unused"])).frame_specs()[0]
    return decode_frames(VIDEO.read_bytes(), [spec])[spec]


def clip_items(stage: Caption, video: ClipFrames, runs: list[tuple[int, int]]) -> list[Item]:
    spec = stage.frame_specs()[0]
    return [Item(source_id="video1", source_path=str(VIDEO), key=f"video1-{i:04d}", clip_index=i,
                 start=float(video.times[a]), end=float(video.times[b - 1]) + 1.0,
                 frames={spec: ClipFrames(video.images[a:b], video.times[a:b] - video.times[a], video.scale)})
            for i, (a, b) in enumerate(runs)]


def ready_stage(server: LoopbackVLMServer, log: RequestLog, **params) -> Caption:
    server.log = log
    stage = Caption(CaptionParams(**{**CLIENT, "endpoint_urls": [f"{server.url}/v1"], **params}))
    stage.setup()
    return stage


def test_each_clip_is_one_request_with_its_frames_many_in_flight_spread_over_endpoints(
        server, video_frames, monkeypatch):
    monkeypatch.setenv("CAPTION_TEST_KEY", "loopback-key")
    stage = ready_stage(server, RequestLog(), concurrency=4, api_key_env="CAPTION_TEST_KEY",
                        endpoint_urls=[f"{server.url}/a/v1", f"{server.url}/b/v1"])
    # 4 frames thinned to 3 (spacing 1.5 s), 3 frames (1 s), 2 frames (1 s)
    items = clip_items(stage, video_frames, [(0, 4), (4, 7), (7, 9), (9, 12), (1, 3), (5, 8)])
    stage.process(items)

    log = server.log
    assert all(item.kept for item in items), [item.reject for item in items]
    assert len(log.requests) == len(items)
    assert log.max_in_flight > 1
    assert {r["path"] for r in log.requests} == {"/a/v1/chat/completions", "/b/v1/chat/completions"}
    assert {r["authorization"] for r in log.requests} == {"Bearer loopback-key"}
    # one video part per request, holding the clip's sampled frames at their real rate
    assert all(r["parts"] == ["video_url", "text"] for r in log.requests)
    sent = sorted((len(times), round(1 / np.mean(np.diff(times)), 2))
                  for times in (item.meta["caption"]["frames"] for item in items))
    assert sorted((r["frames"], round(r["fps"], 2)) for r in log.requests) == sent
    # resized as the model's processor would, so the server's resize keeps them
    assert {r["size"] for r in log.requests} == {smart_resize(*video_frames.images.shape[1:3], 28, **PIXELS)}
    for item in items:
        caption = item.meta["caption"]
        assert caption["text"].strip() and caption["model"] == SERVED_NAME
        assert item.scores["caption.output_tokens"] == caption["output_tokens"]
        assert 1 <= caption["output_tokens"] <= MAX_NEW_TOKENS
    assert sum(item.meta["caption"]["output_tokens"] for item in items) == \
        sum(r["completion_tokens"] for r in log.requests)


def test_frames_as_images_sends_one_image_per_frame(server, video_frames):
    stage = ready_stage(server, RequestLog(), frames_as="images")
    items = clip_items(stage, video_frames, [(0, 3), (3, 5)])
    stage.process(items)
    assert all(item.kept and item.meta["caption"]["text"] for item in items)
    assert sorted(r["parts"].count("image_url") for r in server.log.requests) == [2, 3]
    assert all(r["parts"][-1] == "text" and "video_url" not in r["parts"] for r in server.log.requests)


def test_a_clip_whose_requests_fail_is_retried_then_rejected_while_the_others_pass(server, video_frames):
    stage = ready_stage(server, RequestLog(fail_frame_count=1), max_retries=2, concurrency=4)
    items = clip_items(stage, video_frames, [(0, 3), (11, 12), (3, 6)])
    stage.process(items)
    failing, passing = items[1], [items[0], items[2]]
    assert failing.reject is not None and failing.reject.reason == "caption_failed"
    assert "3 attempts" in failing.reject.detail and "HTTP 500" in failing.reject.detail
    assert "caption" not in failing.meta
    assert [r["frames"] for r in server.log.requests].count(1) == 3  # the first try and 2 retries
    assert all(item.kept and item.meta["caption"]["text"] for item in passing)


def test_a_request_that_times_out_is_sent_again(server, video_frames):
    timeout_s = 3.0  # far above one generate on a busy 2-core machine
    stage = ready_stage(server, RequestLog(stall_first_s=timeout_s + 0.5), timeout_s=timeout_s, max_retries=1)
    [item] = clip_items(stage, video_frames, [(0, 3)])
    started = time.monotonic()
    stage.process([item])
    assert item.kept and item.meta["caption"]["text"]
    assert len(server.log.requests) == 2
    assert time.monotonic() - started >= timeout_s  # the first request was given up on its timeout


def test_openai_backend_config(monkeypatch):
    with pytest.raises(ValidationError, match=r"backend openai needs caption\.endpoint_urls set"):
        CaptionParams(backend="openai", model=SERVED_NAME)
    with pytest.raises(ValidationError, match=r"caption\.endpoint_urls and caption\.model"):
        CaptionParams(backend="openai")
    with pytest.raises(ValidationError, match="must start with http"):
        CaptionParams(backend="openai", model=SERVED_NAME, endpoint_urls=["gpu-1:8000/v1"])

    stage = Caption(CaptionParams(backend="openai", model=SERVED_NAME, endpoint_urls="http://gpu-1:8000/v1",
                                  concurrency=8, device="cuda"))
    assert stage.params.endpoint_urls == ["http://gpu-1:8000/v1"]
    resources = stage.resources()
    assert resources.gpus == 0 and resources.cpus == 1
    assert stage.items_per_batch() > Caption(CaptionParams(model_path="/m")).items_per_batch()
    stage.setup()  # no model_path: nothing is loaded, so nothing is missing
    monkeypatch.delenv("CAPTION_MISSING_KEY", raising=False)
    with pytest.raises(ValueError, match="CAPTION_MISSING_KEY"):
        Caption(CaptionParams(backend="openai", model=SERVED_NAME, endpoint_urls=["http://gpu-1:8000/v1"],
                              api_key_env="CAPTION_MISSING_KEY")).setup()


def test_the_pipeline_config_names_the_servers():
    require_realdata()  # the pipeline's other stages name weights under it
    served = ["caption.backend=openai", f"caption.model={SERVED_NAME}"]
    with pytest.raises(PipelineError, match=r"caption\.endpoint_urls"):
        load_pipeline("interacthuman", overrides=served)
    urls = ["http://gpu-1:8000/v1", "http://gpu-2:8000/v1"]
    pipeline = load_pipeline("interacthuman", overrides=served + [f"caption.endpoint_urls=[{','.join(urls)}]"])
    [caption] = [stage for stage in pipeline.stages if stage.name == "caption"]
    assert caption.params.endpoint_urls == urls and caption.params.model_path is None
