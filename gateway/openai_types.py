"""The request bodies of OpenAI's API that the gateway accepts, as pydantic models.

Field names and types are OpenAI's. Fields OpenAI defines that we cannot honour (logprobs,
penalties, tools, n > 1, ...) are declared so that translate.py can refuse them by name
with a 400 that says so, rather than ignore them. Unknown fields are refused too (400,
"unrecognized request argument"), as OpenAI itself does: a misspelt extra such as `mdoe`
would otherwise run silently with the default.

Our own parameters (the openai client's `extra_body`, which it sends as top-level JSON
keys) are declared on `SpecdecExtras`: they are the SDK's keyword arguments, passed on
unchanged; the coordinator validates their values.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI adds options (include_obfuscation) that change nothing here
    include_usage: bool = False  # one more chunk before [DONE]: empty choices, the usage


class SpecdecExtras(_Strict):
    """The coordinator's own per-request parameters (GenerateRequest); None: its default."""

    top_k: int | None = None  # 0 (or vLLM's -1): off
    mode: str | None = None  # auto | autoregressive | sequential | pearl | gsd
    policy: str | None = None  # auto | fixed | heuristic | adaedl | specdecpp | adaedl_late
    draft_length: int | None = None
    threshold: float | None = None  # specdecpp's stop threshold
    ignore_eos: bool | None = None  # generate exactly max_tokens (benchmarks, load tools)
    tree_width: int | None = None  # mode gsd's tree shape
    tree_depth: int | None = None
    tree_nodes: int | None = None
    sibling_threshold: float | None = None
    prob_threshold: float | None = None
    merge_context: int | None = None


class OpenAIRequest(SpecdecExtras):
    """What both endpoints share: sampling, length, stop, streaming, structured output."""

    model: str | None = None  # must be the served model's name when given (GET /v1/models)
    max_tokens: int | None = None  # unset: the coordinator's default (64)
    temperature: float | None = None  # unset: the coordinator's default, 0 (greedy), not OpenAI's 1
    top_p: float | None = None
    seed: int | None = None
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # OpenAI's shape ({"type": "json_schema", "json_schema": {...}} | {"type": "json_object"} |
    # {"type": "text"}) or ours ({"type": "regex", "regex": ...} | {"type": "grammar", "grammar": ...})
    response_format: dict[str, Any] | None = None
    user: str | None = None  # accepted and ignored (OpenAI's end-user id)
    # declared only to be refused by name (translate.py)
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None


class CompletionRequest(OpenAIRequest):
    """POST /v1/completions."""

    # text, or token ids; a list of one of either is accepted (OpenAI's batch shape, batch of one)
    prompt: Union[str, list[str], list[int], list[list[int]]]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = None


class ContentPart(BaseModel):
    """One part of a message's content: only {"type": "text", "text": ...} is served."""

    model_config = ConfigDict(extra="allow")  # image_url, input_audio, ...: refused by type, not by shape
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    # extra keys are ignored: clients echo back assistant messages with null `refusal`,
    # `audio`, `annotations`; what would change the meaning (tool calls) is declared and refused
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Union[str, list[ContentPart], None] = None
    name: str | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None
    function_call: Any = None


class ChatCompletionRequest(OpenAIRequest):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None  # OpenAI's newer name of max_tokens; wins when both are given
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
