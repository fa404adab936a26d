"""Chat completion backends for zero-shot LLM calls: an OpenAI-compatible HTTP endpoint, or a local
instruction model through transformers.

Both answer a list of conversations (each a list of {"role", "content"} messages) with one reply
each; a reply that could not be had (timeout, HTTP error, bad response body) comes back as a
`ChatRequestError` in its place, so one failed request does not sink the batch.
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from stages.models.hf_local import DtypeName, torch_dtype

Conversation = list[dict[str, str]]


class ChatRequestError(Exception):
    """A chat request that returned no usable reply."""


@dataclass(frozen=True)
class OpenAIChatClient:
    """POSTs to `<endpoint_url>/chat/completions` (OpenAI, vLLM, SGLang, llama.cpp servers, ...)."""

    endpoint_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 60.0
    max_tokens: int = 512
    temperature: float = 0.0
    json_mode: bool = True
    concurrency: int = 4

    @property
    def url(self) -> str:
        return chat_completions_url(self.endpoint_url)

    def complete(self, conversations: list[Conversation]) -> list[str | ChatRequestError]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._complete_or_error, conversations))

    def _complete_or_error(self, messages: Conversation) -> str | ChatRequestError:
        try:
            return self.complete_one(messages)
        except ChatRequestError as error:
            return error

    def complete_one(self, messages: Conversation) -> str:
        body = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                "temperature": self.temperature}
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        return message_content(post_chat_completion(self.url, body, self.api_key, self.timeout_s))


def chat_completions_url(endpoint_url: str) -> str:
    """`<base>/chat/completions` for a base URL such as http://host:8000/v1 (a full URL stays as it is)."""
    base = endpoint_url.rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


def post_chat_completion(url: str, body: dict[str, Any], api_key: str | None, timeout_s: float) -> dict[str, Any]:
    """The JSON reply to one chat completions request; ChatRequestError when there is none (timeout,
    HTTP error, unreachable server, connection dropped, a body that is not JSON)."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = response.read()
    except urllib.error.HTTPError as error:
        raise ChatRequestError(f"HTTP {error.code} from {url}: {error.read()[:200]!r}") from error
    except (TimeoutError, socket.timeout) as error:
        raise ChatRequestError(f"no reply from {url} within {timeout_s} s") from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, (TimeoutError, socket.timeout)):
            raise ChatRequestError(f"no reply from {url} within {timeout_s} s") from error
        raise ChatRequestError(f"cannot reach {url}: {error.reason}") from error
    except (http.client.HTTPException, OSError) as error:  # the server dropped the connection mid-reply
        raise ChatRequestError(f"connection to {url} failed: {error!r}") from error
    try:
        return json.loads(payload)
    except ValueError as error:
        raise ChatRequestError(f"not JSON from {url}: {payload[:200]!r}") from error


def message_content(response: dict[str, Any]) -> str:
    """The reply's text; ChatRequestError if the response holds none."""
    try:
        content = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as error:
        raise ChatRequestError(f"not a chat completion response: {str(response)[:200]}") from error
    if not isinstance(content, str):
        raise ChatRequestError(f"chat completion without text content: {str(response)[:200]}")
    return content


class LocalChatModel:
    """An instruction-tuned causal LM from a local folder, answering a batch with one generate call."""

    def __init__(self, model_path: str, device: str = "cpu", dtype: DtypeName = "float32",
                 max_new_tokens: int = 512, temperature: float = 0.0):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        if not self.tokenizer.chat_template:
            raise ValueError(f"the tokenizer in {model_path} has no chat template (an instruction model is needed)")
        if self.tokenizer.pad_token is None:  # batches are left-padded; many chat LMs define no pad token
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = torch.device(device)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch_dtype(dtype), local_files_only=True).to(self.device).eval()
        self.max_new_tokens, self.temperature = max_new_tokens, temperature

    @torch.inference_mode()
    def complete(self, conversations: list[Conversation]) -> list[str | ChatRequestError]:
        texts = [self.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False)
                 for c in conversations]
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                                add_special_tokens=False).to(self.device)
        sampling = {"do_sample": True, "temperature": self.temperature} if self.temperature > 0 else {"do_sample": False}
        output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                     pad_token_id=self.tokenizer.pad_token_id, **sampling)
        return self.tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def api_key_from_env(parameter: str, env_name: str | None) -> str | None:
    """The API key in the environment variable `env_name` names (None: no key); `parameter` is the
    stage parameter that names it, for the error."""
    if env_name is None:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise ValueError(f"{parameter} names {env_name!r}, but that environment variable is not set")
    return key
