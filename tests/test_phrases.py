"""phrases: the OpenAI-compatible client against a real HTTP server on 127.0.0.1 (valid answers, a
corrected answer after a schema error, never-valid answers, a slow server, HTTP errors, the API key
from the environment), and the local-LLM backend with a tiny random causal LM (whose random text
never parses: the reject path and the retry count)."""
from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from curation.stage import Item
from stages.phrases import Phrases, PhrasesParams, parse_answer
from tiny_hf import save_tiny_causal_lm

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# what the caption stage would say about video4.mp4 (README: one girl talks and laughs to camera
# while the other braids her hair)
CAPTION = ("Two girls are in a bedroom. A girl with long brown hair in a grey sweater talks and laughs "
           "at the camera while a girl in a pink top braids her hair with a black hair tie.")
SUBJECTS = [
    {"phrase": "girl in a grey sweater", "appearance": "long brown hair, grey sweater, laughing", "kind": "person"},
    {"phrase": "girl in a pink top", "appearance": "pink top, braiding the other girl's hair", "kind": "person"},
    {"phrase": "black hair tie", "appearance": "black elastic hair tie", "kind": "object"},
]
VALID = json.dumps({"subjects": SUBJECTS})
WRONG_KIND = json.dumps({"subjects": [{**SUBJECTS[0], "kind": "animal"}]})
PROSE = "The subjects are two girls and a hair tie."


class ChatServer:
    """A chat completions endpoint on 127.0.0.1 that answers request n with replies[n] (the last
    one repeated), where a reply is message content, or an int for an HTTP error status."""

    def __init__(self, replies: list[str | int], delay_s: float = 0.0):
        self.replies, self.delay_s = replies, delay_s
        self.requests: list[dict] = []
        self.release = threading.Event()  # lets a delayed handler finish early at teardown
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                reply = server.replies[min(len(server.requests), len(server.replies)) - 1]
                server.release.wait(server.delay_s)
                if isinstance(reply, int):
                    self.send_error(reply)
                    return
                payload = json.dumps({"object": "chat.completion", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def __enter__(self) -> ChatServer:
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def captioned_item(index: int = 0, caption: str | None = CAPTION) -> Item:
    item = Item(source_id="x", source_path="video4.mp4", key=f"x-{index:04d}", clip_index=index, start=0.0, end=5.0)
    if caption is not None:
        item.meta["caption"] = {"text": caption, "model": "qwen2_5_vl", "frames": [0.0, 1.0]}
    return item


def http_stage(server: ChatServer, **overrides) -> Phrases:
    stage = Phrases(PhrasesParams(**{"endpoint_url": server.url, "model": "served-llm", **overrides}))
    stage.setup()
    return stage


def test_valid_answers_are_recorded_for_a_batch_and_the_request_is_a_chat_completion():
    items = [captioned_item(0), captioned_item(1), captioned_item(2, caption=None)]
    with ChatServer([VALID]) as server:
        http_stage(server).process(items)
    for item in items[:2]:
        assert item.kept
        assert item.meta["phrases"] == {"subjects": SUBJECTS}
        assert item.scores == {"phrases.n_subjects": 3, "phrases.n_people": 2, "phrases.attempts": 1}
    assert items[2].reject.reason == "no_caption"
    assert len(server.requests) == 2
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert "Authorization" not in request["headers"]
    body = request["body"]
    assert body["model"] == "served-llm" and body["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert CAPTION in body["messages"][1]["content"]


def test_an_answer_breaking_the_schema_is_sent_back_and_the_corrected_one_kept():
    item = captioned_item()
    with ChatServer([WRONG_KIND, VALID]) as server:
        http_stage(server, max_retries=2).process([item])
    assert item.kept and item.meta["phrases"]["subjects"] == SUBJECTS
    assert item.scores["phrases.attempts"] == 2 and len(server.requests) == 2
    retry = server.requests[1]["body"]["messages"]
    assert retry[2] == {"role": "assistant", "content": WRONG_KIND}
    assert retry[3]["role"] == "user" and "subjects.0.kind" in retry[3]["content"]


def test_a_server_that_never_answers_valid_json_gets_the_clip_rejected_after_the_retries():
    item = captioned_item()
    with ChatServer([PROSE]) as server:
        http_stage(server, max_retries=2).process([item])
    assert item.reject.reason == "phrases_unparsable"
    assert "no JSON object" in item.reject.detail
    assert item.scores["phrases.attempts"] == 3 and len(server.requests) == 3
    assert "phrases" not in item.meta


def test_a_slow_server_hits_the_timeout_on_every_attempt():
    item = captioned_item()
    with ChatServer([VALID], delay_s=5.0) as server:
        started = time.monotonic()
        http_stage(server, timeout_s=0.3, max_retries=1).process([item])
        elapsed = time.monotonic() - started
    assert item.reject.reason == "phrases_request_failed"
    assert "within 0.3 s" in item.reject.detail
    assert item.scores["phrases.attempts"] == 2 and len(server.requests) == 2
    assert elapsed < 2.5  # two 0.3 s timeouts, not the server's 5 s


def test_an_http_error_is_retried():
    item = captioned_item()
    with ChatServer([503, VALID]) as server:
        http_stage(server, max_retries=1).process([item])
    assert item.kept and item.scores["phrases.attempts"] == 2


def test_the_api_key_is_read_from_the_named_environment_variable(monkeypatch):
    monkeypatch.setenv("PHRASES_TEST_API_KEY", "sk-loopback-123")
    item = captioned_item()
    with ChatServer([VALID]) as server:
        http_stage(server, api_key_env="PHRASES_TEST_API_KEY").process([item])
    assert item.kept
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-loopback-123"
    monkeypatch.delenv("PHRASES_TEST_API_KEY")
    with pytest.raises(ValueError, match=r"phrases\.api_key_env.*PHRASES_TEST_API_KEY"):
        Phrases(PhrasesParams(endpoint_url="http://127.0.0.1:9/v1", model="m", api_key_env="PHRASES_TEST_API_KEY")).setup()


def test_parse_answer_takes_the_json_out_of_a_fenced_reply_and_explains_failures():
    assert parse_answer(f"Here it is:\n```json\n{VALID}\n```").model_dump() == {"subjects": SUBJECTS}
    with pytest.raises(ValueError, match="malformed JSON"):
        parse_answer('{"subjects": [}')
    with pytest.raises(ValueError, match="subjects.0.phrase"):
        parse_answer(json.dumps({"subjects": [{"phrase": "", "appearance": "", "kind": "person"}]}))


def test_setup_names_the_missing_parameter():
    with pytest.raises(ValueError, match=r"phrases\.endpoint_url"):
        Phrases(PhrasesParams(model="m")).setup()
    with pytest.raises(ValueError, match=r"phrases\.model"):
        Phrases(PhrasesParams(endpoint_url="http://127.0.0.1:9/v1")).setup()
    with pytest.raises(ValueError, match=r"phrases\.local_model_path"):
        Phrases(PhrasesParams(backend="local")).setup()
    with pytest.raises(ValueError, match="caption"):
        PhrasesParams(prompt="no slot for the caption")


def test_resources_follow_the_backend():
    local = Phrases(PhrasesParams(backend="local", local_model_path="/m", gpus=0.5, clips_per_batch=16))
    assert local.resources().gpus == 0.5 and local.items_per_batch() == 16
    assert Phrases(PhrasesParams(backend="local", local_model_path="/m", device="cpu")).resources().gpus == 0.0
    assert Phrases(PhrasesParams(endpoint_url="http://127.0.0.1:9/v1", model="m")).resources().gpus == 0.0


def test_local_llm_backend_batches_retries_and_rejects_what_never_parses(tmp_path):
    checkpoint = save_tiny_causal_lm(tmp_path / "tiny-lm")
    stage = Phrases(PhrasesParams(backend="local", local_model_path=str(checkpoint), device="cpu", dtype="float32",
                                  max_new_tokens=16, max_retries=2, clips_per_batch=2))
    stage.setup()
    input_shapes = []
    generate = stage._backend.model.generate

    def counting_generate(**inputs):
        input_shapes.append(tuple(inputs["input_ids"].shape))
        return generate(**inputs)

    stage._backend.model.generate = counting_generate
    items = [captioned_item(0), captioned_item(1)]
    stage.process(items)
    for item in items:
        assert item.reject.reason == "phrases_unparsable" and "unparsable reply" in item.reject.detail
        assert item.scores["phrases.attempts"] == 3
    # 1 try + 2 retries, both clips in each generate call; each retry carries the rejected reply
    # and the correction, so the prompts grow
    assert [batch for batch, _ in input_shapes] == [2, 2, 2]
    assert input_shapes[0][1] < input_shapes[1][1] < input_shapes[2][1]
