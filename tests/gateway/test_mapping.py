"""The gateway's renaming, without a server: OpenAI's fields -> the SDK's, SDK errors -> HTTP
statuses, the served model's name. What is set reaches the coordinator; nothing else does."""

from __future__ import annotations

import pytest

from gateway.catalog import served_name
from gateway.errors import GatewayError, from_sdk
from gateway.openai_types import ChatCompletionRequest, CompletionRequest
from gateway.translate import chat_messages, completion_prompt, generation_params
from specdec.client import (
    DeadlineExceededError,
    Info,
    InvalidRequestError,
    OverloadedError,
    ServerError,
    UnavailableError,
)


def chat(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], **fields)


def test_unset_fields_stay_unset_so_the_coordinators_defaults_apply():
    assert generation_params(chat()) == {}
    assert generation_params(chat(model="tiny", stream=True, user="u1")) == {}


def test_openai_names_become_the_sdks():
    params = generation_params(chat(max_tokens=7, temperature=0.5, top_p=0.9, seed=3, stop="\n",
                                    response_format={"type": "json_object"}, top_k=-1, mode="gsd", tree_width=2))
    assert params == {"max_new_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3, "stop": "\n",
                      "response_format": {"type": "json_object"}, "top_k": 0, "mode": "gsd", "tree_width": 2}
    assert generation_params(chat(max_tokens=7, max_completion_tokens=9))["max_new_tokens"] == 9


def test_messages_map_onto_the_grpc_message_list():
    request = ChatCompletionRequest(messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": "ok", "refusal": None},  # an echoed reply's null fields are fine
    ])
    assert chat_messages(request) == [{"role": "system", "content": "be brief"},
                                      {"role": "user", "content": "a\nb"}, {"role": "assistant", "content": "ok"}]


@pytest.mark.parametrize("message, param", [
    ({"role": "tool", "content": "42", "tool_call_id": "c1"}, "messages[0].role"),
    ({"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]}, "messages[0].tool_calls"),
    ({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}, "messages[0].content[0]"),
    ({"role": "user", "content": None}, "messages[0].content"),
])
def test_what_text_chat_cannot_express_is_refused_by_name(message, param):
    with pytest.raises(GatewayError) as caught:
        chat_messages(ChatCompletionRequest(messages=[message]))
    assert caught.value.status == 400 and caught.value.param == param


@pytest.mark.parametrize("fields, param", [
    (dict(n=3), "n"), (dict(presence_penalty=0.5), "presence_penalty"), (dict(logit_bias={"1": 2.0}), "logit_bias"),
    (dict(logprobs=True), "logprobs"), (dict(tools=[{"type": "function"}]), "tools"),
    (dict(tool_choice="auto"), "tool_choice"), (dict(stream_options={"include_usage": True}), "stream_options"),
])
def test_unsupported_chat_parameters_are_400s(fields, param):
    with pytest.raises(GatewayError) as caught:
        generation_params(chat(**fields))
    assert caught.value.status == 400 and caught.value.param == param


def test_completion_prompts():
    assert completion_prompt(CompletionRequest(prompt="x")) == "x"
    assert completion_prompt(CompletionRequest(prompt=["x"])) == "x"
    assert completion_prompt(CompletionRequest(prompt=[5, 6])) == [5, 6]
    assert completion_prompt(CompletionRequest(prompt=[[5, 6]])) == [5, 6]
    for fields, param in ((dict(prompt=["a", "b"]), "prompt"), (dict(prompt="x", logprobs=1), "logprobs"),
                          (dict(prompt="x", echo=True), "echo"), (dict(prompt="x", best_of=2), "best_of")):
        with pytest.raises(GatewayError) as caught:
            request = CompletionRequest(**fields)
            completion_prompt(request), generation_params(request)
        assert caught.value.status == 400 and caught.value.param == param


def test_sdk_errors_become_openai_statuses():
    overloaded = OverloadedError("at the limit")
    overloaded.retry_after_s = 1.2
    error = from_sdk(overloaded)
    assert (error.status, error.type) == (429, "rate_limit_error")
    assert error.headers == {"Retry-After": "2", "retry-after-ms": "1200"}
    assert from_sdk(OverloadedError("message too large")).headers == {}  # gRPC's own: no hint to pass on
    assert from_sdk(InvalidRequestError("top_p must be in (0, 1]")).body()["error"] == {
        "message": "top_p must be in (0, 1]", "type": "invalid_request_error", "param": None, "code": None}
    assert from_sdk(UnavailableError("down")).status == 503
    assert from_sdk(DeadlineExceededError("late")).status == 504
    assert from_sdk(ServerError("bug", code="INTERNAL")).status == 500


def _info(target_model: str) -> Info:
    return Info("qwen-coder", target_model, "", (), (), 0, 0, (), (), (), 0)


def test_served_name_hides_local_paths_but_keeps_hub_ids():
    assert served_name(_info("/models/hf/Qwen2.5-Coder-1.5B-Instruct")) == "Qwen2.5-Coder-1.5B-Instruct"
    assert served_name(_info("Qwen/Qwen2.5-Coder-1.5B-Instruct")) == "Qwen/Qwen2.5-Coder-1.5B-Instruct"
    assert served_name(_info("")) == "qwen-coder"


def test_an_error_mid_stream_is_an_error_event_then_done():
    """Once the headers went out an error can only be an event (the openai package raises it);
    the SDK's stream is closed either way."""
    import asyncio
    import json

    from gateway.responses import Reply
    from gateway.streaming import DONE, chunk_events
    from specdec.client import Chunk

    closed = []

    async def rest():
        try:
            yield Chunk("b", (2,))
            raise UnavailableError("every target worker is gone")
        finally:
            closed.append(True)

    async def collect():
        return [e async for e in chunk_events(Chunk("a", (1,)), rest(), Reply(chat=True, model="m"), False)]

    events = asyncio.run(collect())
    assert events[-1] == DONE and closed == [True]
    payloads = [json.loads(e[len(b"data: "):]) for e in events[:-1]]
    assert [p["choices"][0]["delta"] for p in payloads[:3]] == [{"role": "assistant", "content": ""},
                                                               {"content": "a"}, {"content": "b"}]
    assert payloads[3] == {"error": {"message": "every target worker is gone", "type": "service_unavailable_error",
                                     "param": None, "code": None}}
