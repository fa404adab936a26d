"""phrases: structured appearance phrases for each subject of a clip, parsed from its caption by a
zero-shot LLM call (as the paper did), for grounding subjects to masks and identities later.

The LLM gets the caption and answers JSON {"subjects": [{"phrase", "appearance", "kind"}]}: a short
grounding phrase ("woman in a white shirt"), the caption's appearance details, and "person" or
"object". The answer is validated against that schema; an invalid answer is sent back with the
validation error and asked for again, up to `max_retries` more times. A clip whose answer never
validates is rejected as phrases_unparsable; one whose requests all fail (timeout, HTTP error) as
phrases_request_failed.

Backends: `openai`, any OpenAI-compatible chat completions endpoint (`endpoint_url`, `model`, key
from the environment variable named by `api_key_env`), with `concurrency` requests in flight; or
`local`, an instruction LLM from a local folder through transformers, a batch per generate call.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from curation.stage import Device, Item, Params, Resources, Stage, WeightFolder, gpu_share, gpus_param
from stages.models.hf_local import DtypeName
from stages.models.llm_client import ChatRequestError, Conversation, LocalChatModel, OpenAIChatClient, api_key_from_env

SYSTEM_PROMPT = "You turn video captions into structured lists of subjects. Reply with one JSON object and nothing else."
DEFAULT_PROMPT = """Caption of a video clip:
\"\"\"{caption}\"\"\"

List every distinct person in the caption, then the salient objects the people hold or interact with.
Reply with a JSON object of this form:
{"subjects": [{"phrase": "...", "appearance": "...", "kind": "person"}]}
"phrase": a short noun phrase (at most 8 words) that picks the subject out in the video, such as "woman in a white shirt".
"appearance": everything the caption says about how the subject looks: clothing, hair, age, colours, position.
"kind": "person" for a human, "object" for anything else.
Use only what the caption states."""
CORRECTION = "That reply was not valid ({error}). Reply again with only the JSON object described above."


class Subject(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True, extra="ignore")

    phrase: str = Field(min_length=1)
    appearance: str
    kind: Literal["person", "object"]


class PhrasesAnswer(BaseModel):
    subjects: list[Subject]


def parse_answer(reply: str) -> PhrasesAnswer:
    """The JSON object in an LLM reply (code fences and text around it tolerated), validated;
    raises ValueError saying what is wrong."""
    start, end = reply.find("{"), reply.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON object in the reply")
    try:
        return PhrasesAnswer.model_validate(json.loads(reply[start:end + 1]))
    except json.JSONDecodeError as error:
        raise ValueError(f"malformed JSON: {error}") from error
    except ValidationError as error:
        raise ValueError(_short_validation_error(error)) from error


def _short_validation_error(error: ValidationError) -> str:
    problems = [f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in error.errors()[:3]]
    return "; ".join(problems)


class PhrasesParams(Params):
    backend: Literal["openai", "local"] = Field("openai", description="openai: an OpenAI-compatible chat completions endpoint; local: a local instruction LLM through transformers")
    endpoint_url: str | None = Field(None, description="base URL of the OpenAI-compatible API, e.g. http://host:8000/v1 (/chat/completions is appended), backend openai")
    model: str | None = Field(None, description="model name sent with each request (the served model's name), backend openai")
    api_key_env: str | None = Field(None, description="name of the environment variable holding the API key (sent as a Bearer token); None: no key")
    timeout_s: float = Field(60.0, gt=0, description="seconds to wait for a reply before the request counts as failed")
    concurrency: int = Field(4, ge=1, description="requests in flight at once, backend openai")
    json_mode: bool = Field(True, description="ask the endpoint for a JSON object reply (response_format json_object); turn off for servers that reject it")
    local_model_path: WeightFolder = Field(None, description="a local folder of an instruction-tuned causal LM with a chat template (transformers format), backend local")
    device: Device = Field("cuda", description="torch device of the local model ('cuda', 'cuda:1', 'cpu')")
    dtype: DtypeName = Field("bfloat16", description="weights' dtype of the local model")
    gpus: float = gpus_param(1.0)
    max_new_tokens: int = Field(512, ge=16, description="most tokens per reply")
    temperature: float = Field(0.0, ge=0, description="sampling temperature; 0 is greedy decoding")
    max_retries: int = Field(2, ge=0, description="further requests after an unusable reply (each invalid answer is sent back with its error)")
    clips_per_batch: int = Field(8, ge=1, description="clips handed to the stage at once (one generate call for the local backend)")
    prompt: str = Field(DEFAULT_PROMPT, description="user message; {caption} is replaced by the clip's caption")

    @field_validator("prompt")
    @classmethod
    def _has_caption_slot(cls, prompt: str) -> str:
        if "{caption}" not in prompt:
            raise ValueError("the prompt must contain {caption}")
        return prompt


@dataclass
class _Exchange:
    """One clip's conversation with the LLM so far."""

    item: Item
    conversation: Conversation
    attempts: int = 0
    last_error: str = ""
    unparsable: bool = False


class Phrases(Stage):
    name = "phrases"
    requires = ("caption",)
    Params = PhrasesParams

    def resources(self) -> Resources:
        p = self.params
        if p.backend != "local":
            return Resources(cpus=1, memory_gb=1)
        return Resources(cpus=1, gpus=gpu_share(p.device, p.gpus), memory_gb=8)

    def items_per_batch(self) -> int:
        return self.params.clips_per_batch

    def setup(self) -> None:
        p = self.params
        if p.backend == "local":
            self._backend = LocalChatModel(self.weights("local_model_path"), self.device(), p.dtype,
                                           p.max_new_tokens, p.temperature)
        else:
            self._backend = OpenAIChatClient(_required(p.endpoint_url, "endpoint_url"), _required(p.model, "model"),
                                             api_key_from_env("phrases.api_key_env", p.api_key_env), p.timeout_s,
                                             p.max_new_tokens, p.temperature, p.json_mode, p.concurrency)

    def process(self, items: list[Item]) -> list[Item]:
        pending = [_Exchange(item, self._first_turn(caption)) for item in items
                   if (caption := self._caption(item)) is not None]
        for _ in range(1 + self.params.max_retries):
            if not pending:
                break
            replies = self._backend.complete([exchange.conversation for exchange in pending])
            pending = [exchange for exchange, reply in zip(pending, replies) if not self._settle(exchange, reply)]
        for exchange in pending:
            self._give_up(exchange)
        return items

    def _caption(self, item: Item) -> str | None:
        caption = (item.meta.get("caption") or {}).get("text")
        if not caption:
            self.reject(item, "no_caption", "the clip has no caption to parse (run the caption stage first)")
            return None
        return caption

    def _first_turn(self, caption: str) -> Conversation:
        return [{"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": self.params.prompt.replace("{caption}", caption)}]

    def _settle(self, exchange: _Exchange, reply: str | ChatRequestError) -> bool:
        """Record the reply if it parses and return True; otherwise note why and set up the retry."""
        exchange.attempts += 1
        if isinstance(reply, ChatRequestError):
            exchange.last_error = str(reply)
            return False
        try:
            answer = parse_answer(reply)
        except ValueError as error:
            exchange.last_error = f"unparsable reply ({error}): {reply[:200]!r}"
            exchange.unparsable = True
            exchange.conversation += [{"role": "assistant", "content": reply},
                                      {"role": "user", "content": CORRECTION.format(error=error)}]
            return False
        subjects = [subject.model_dump() for subject in answer.subjects]
        self.record(exchange.item, meta={"subjects": subjects}, n_subjects=len(subjects),
                    n_people=sum(s["kind"] == "person" for s in subjects), attempts=exchange.attempts)
        return True

    def _give_up(self, exchange: _Exchange) -> None:
        self.record(exchange.item, attempts=exchange.attempts)
        reason = "phrases_unparsable" if exchange.unparsable else "phrases_request_failed"
        self.reject(exchange.item, reason, f"{exchange.attempts} attempts; last: {exchange.last_error}")


def _required(value: str | None, param: str) -> str:
    if not value:
        raise ValueError(f"phrases backend openai needs phrases.{param} set")
    return value
