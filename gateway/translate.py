"""An OpenAI request -> the SDK's (prompt, parameters): a renaming, nothing more.

Values are not checked here: the SDK and the coordinator do that and name the field
(their InvalidRequestError becomes a 400). What is checked here is only what OpenAI's
API can ask for and ours cannot express: several choices, log-probabilities, penalties,
tools, echo, non-text content. Those are refused by name (400, code
"unsupported_parameter") instead of being silently ignored, so that a harness never
scores output generated under settings it did not get.
"""

from __future__ import annotations

from gateway.errors import GatewayError, unsupported
from gateway.openai_types import ChatCompletionRequest, CompletionRequest, OpenAIRequest, SpecdecExtras

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
PART_SEPARATOR = "\n"  # text parts of one message are joined as vLLM joins them


def completion_prompt(request: CompletionRequest) -> str | list[int]:
    """The prompt as text or token ids; a batch of one is unwrapped."""
    prompt = request.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise unsupported("prompt", f"one prompt per request (got a batch of {len(prompt)}); send them "
                                        "as separate requests, which the coordinator serves concurrently")
        prompt = prompt[0]
    if isinstance(prompt, list) and not prompt:
        raise GatewayError(400, "prompt is empty", param="prompt")
    return prompt


def chat_messages(request: ChatCompletionRequest) -> list[dict]:
    """OpenAI's messages -> the gRPC API's ChatMessage list ({"role", "content"} dicts):
    "developer" is "system" (OpenAI's newer name), text parts are joined."""
    out = []
    for i, message in enumerate(request.messages):
        where = f"messages[{i}]"
        if message.role not in ROLES:
            raise unsupported(f"{where}.role", f"role {message.role!r} (tool results): this server has no tools")
        if message.tool_calls or message.function_call:
            raise unsupported(f"{where}.tool_calls", "this server has no tools")
        out.append({"role": ROLES[message.role], "content": _text(message.content, where)})
    return out


def _text(content, where: str) -> str:
    if content is None:
        raise GatewayError(400, f"{where}.content is required", param=f"{where}.content")
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise unsupported(f"{where}.content[{j}]", f"content part type {part.type!r}: this server serves text "
                                                       'only ({"type": "text", "text": ...})')
        texts.append(part.text)
    return PART_SEPARATOR.join(texts)


def generation_params(request: OpenAIRequest) -> dict:
    """The SDK keyword arguments (specdec.core.params.GenerationParams) of a request; unset
    fields are left out, so the coordinator's defaults apply."""
    _refuse_unsupported(request)
    params = {name: getattr(request, name) for name in SpecdecExtras.model_fields if getattr(request, name) is not None}
    if params.get("top_k") == -1:  # vLLM's spelling of "off", which harnesses written for it send
        params["top_k"] = 0
    max_tokens = request.max_tokens
    if isinstance(request, ChatCompletionRequest) and request.max_completion_tokens is not None:
        max_tokens = request.max_completion_tokens
    for name, value in (("max_new_tokens", max_tokens), ("temperature", request.temperature),
                        ("top_p", request.top_p), ("seed", request.seed), ("stop", request.stop),
                        ("response_format", request.response_format)):
        if value is not None:
            params[name] = value
    return params


def _refuse_unsupported(request: OpenAIRequest) -> None:
    if request.n not in (None, 1):
        raise unsupported("n", f"one choice per request (got n={request.n}); send n requests instead")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(request, name):
            raise unsupported(name, "penalties would change the target's distribution, which speculative "
                                    "decoding reproduces exactly")
    if request.logit_bias:
        raise unsupported("logit_bias", "it would change the target's distribution")
    if request.stream_options is not None and not request.stream:
        raise GatewayError(400, "stream_options is only allowed when stream is true", param="stream_options")
    if isinstance(request, CompletionRequest):
        if request.logprobs is not None:
            raise unsupported("logprobs", "the coordinator returns tokens and text, not log-probabilities")
        if request.echo:
            raise unsupported("echo", "the response holds the continuation only")
        if request.suffix:
            raise unsupported("suffix", "no fill-in-the-middle")
        if request.best_of not in (None, 1):
            raise unsupported("best_of", "one choice per request")
    if isinstance(request, ChatCompletionRequest):
        if request.logprobs or request.top_logprobs is not None:
            raise unsupported("logprobs", "the coordinator returns tokens and text, not log-probabilities")
        if request.tools:
            raise unsupported("tools", "no tool calling; response_format can constrain the output instead")
        if request.tool_choice not in (None, "none"):
            raise unsupported("tool_choice", "no tool calling")
