"""The official openai package (sync and async) against a real gateway on 127.0.0.1 in front
of a real tiny stack: completions and chat, streamed and not, equal to what the gRPC SDK
returns for the same greedy request; usage; our extras; structured output; errors; auth;
the raw SSE framing; a client that goes away cancels the coordinator's work."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest

from tests.gateway.conftest import TOKEN
from tests.helpers.polling import wait_for

openai = pytest.importorskip("openai")

MODEL = "tiny"  # the tiny preset's target model, as GetInfo names it
PROMPT = "def fib(n):"
MESSAGES = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "a fib function"}]
GREEDY = dict(temperature=0.0, max_tokens=24)
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 6}, "ok": {"type": "boolean"}},
    "required": ["name", "ok"],
    "additionalProperties": False,
}


def _sdk_greedy(sdk, prompt, **params):
    return sdk.complete(prompt, temperature=0.0, max_new_tokens=24, **params)


def _post(base_url: str, path: str, body, token: str | None = TOKEN, raw: bytes | None = None):
    """(status, headers, JSON body) of a POST with urllib, errors included."""
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(f"{base_url}{path}", data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.headers, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


# --------------------------------------------------------------------------- the happy paths


def test_models_lists_the_served_model(openai_client):
    assert [m.id for m in openai_client.models.list()] == [MODEL]
    card = openai_client.models.retrieve(MODEL)
    assert card.owned_by == "specdec" and card.model_extra["max_model_len"] > 0
    assert "pearl" in card.model_extra["specdec"]["modes"]


def test_completion_equals_the_grpc_sdk(openai_client, sdk):
    reply = openai_client.completions.create(model=MODEL, prompt=PROMPT, **GREEDY)
    expected = _sdk_greedy(sdk, PROMPT)
    (choice,) = reply.choices
    assert choice.text == expected.text and choice.finish_reason == expected.finish_reason
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-") and reply.model == MODEL
    assert reply.usage.prompt_tokens == expected.stats.prompt_tokens
    assert reply.usage.completion_tokens == expected.stats.tokens == len(expected.token_ids)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.model_extra["specdec"]["tokens"] == expected.stats.tokens  # our stats ride along


def test_chat_equals_the_grpc_sdk_on_the_same_messages(openai_client, sdk):
    reply = openai_client.chat.completions.create(model=MODEL, messages=MESSAGES, **GREEDY)
    expected = _sdk_greedy(sdk, MESSAGES)
    (choice,) = reply.choices
    assert choice.message.role == "assistant" and choice.message.content == expected.text
    assert choice.finish_reason == expected.finish_reason
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (expected.stats.prompt_tokens,
                                                                          expected.stats.tokens)
    # OpenAI's newer names map onto ours: developer -> system, text parts -> text, max_completion_tokens
    parts = [{"role": "developer", "content": MESSAGES[0]["content"]},
             {"role": "user", "content": [{"type": "text", "text": MESSAGES[1]["content"]}]}]
    again = openai_client.chat.completions.create(model=MODEL, messages=parts, temperature=0.0,
                                                  max_completion_tokens=24)
    assert again.choices[0].message.content == expected.text


def test_streams_carry_the_same_text_and_the_usage(openai_client, sdk):
    expected = _sdk_greedy(sdk, PROMPT)
    chunks = list(openai_client.completions.create(model=MODEL, prompt=PROMPT, stream=True, **GREEDY))
    assert "".join(c.choices[0].text for c in chunks) == expected.text
    assert chunks[-1].choices[0].finish_reason == expected.finish_reason
    assert chunks[-1].model_extra["specdec"]["tokens"] == expected.stats.tokens

    expected = _sdk_greedy(sdk, MESSAGES)
    chunks = list(openai_client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}, **GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant"  # OpenAI's opening chunk
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.text
    finish, usage = chunks[-2], chunks[-1]
    assert finish.choices[0].finish_reason == expected.finish_reason and finish.usage is None
    assert usage.choices == [] and usage.usage.completion_tokens == expected.stats.tokens
    assert usage.usage.prompt_tokens == expected.stats.prompt_tokens
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)


def test_async_client_streams_and_completes(base_url, sdk):
    expected = _sdk_greedy(sdk, MESSAGES)

    async def run():
        async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=TOKEN, max_retries=0, timeout=60) as client:
            whole = await client.chat.completions.create(model=MODEL, messages=MESSAGES, **GREEDY)
            stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, **GREEDY)
            pieces = [c.choices[0].delta.content or "" async for c in stream]
            return whole.choices[0].message.content, "".join(pieces)

    whole, streamed = asyncio.run(run())
    assert whole == streamed == expected.text


def test_extras_reach_the_coordinator(openai_client, sdk):
    """extra_body keys (sent as top-level JSON) are the coordinator's own parameters."""
    reply = openai_client.completions.create(
        model=MODEL, prompt=PROMPT, **GREEDY, extra_body={"mode": "pearl", "policy": "fixed", "draft_length": 3})
    stats = reply.model_extra["specdec"]
    assert stats["mode_run"] == "pearl"
    assert reply.choices[0].text == _sdk_greedy(sdk, PROMPT).text  # lossless in every mode
    reply = openai_client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=40,
                                             extra_body={"ignore_eos": True, "mode": "autoregressive"})
    assert reply.usage.completion_tokens == 40 and reply.model_extra["specdec"]["mode_run"] == "autoregressive"


def test_json_schema_response_format_yields_valid_json(openai_client):
    jsonschema = pytest.importorskip("jsonschema")
    reply = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "a user record"}], max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "user", "schema": SCHEMA}},
    )
    (choice,) = reply.choices
    assert choice.finish_reason == "stop", choice.message.content  # the document closed before max_tokens
    jsonschema.validate(json.loads(choice.message.content), SCHEMA)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, status, param, words", [
    (dict(temperature=-1.0), 400, None, "temperature"),
    (dict(model="gpt-4o"), 404, "model", "does not exist"),
    (dict(n=2), 400, "n", "not supported"),
    (dict(logprobs=True), 400, "logprobs", "not supported"),
    (dict(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "bogus"}}}),
     400, None, "response_format"),
    (dict(extra_body={"mdoe": "pearl"}), 400, "mdoe", "unrecognized"),
    (dict(extra_body={"mode": "fastest"}), 400, None, "mode"),
    (dict(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), 400,
     "messages[0].content[0]", "text only"),
])
def test_bad_requests_get_openai_errors(openai_client, kwargs, status, param, words):
    args = dict(model=MODEL, messages=MESSAGES, max_tokens=4) | kwargs
    with pytest.raises(openai.APIStatusError) as caught:
        openai_client.chat.completions.create(**args)
    error = caught.value
    assert error.status_code == status, error.body
    assert error.body["type"] == "invalid_request_error" and error.body["param"] == param
    assert words in error.body["message"]
    if status == 404:
        assert isinstance(error, openai.NotFoundError) and error.body["code"] == "model_not_found"
    else:
        assert isinstance(error, openai.BadRequestError)


def test_a_refused_stream_gets_its_status_not_a_200(openai_client):
    """The first chunk is awaited before the headers go out, so a stream the coordinator refuses
    is a plain HTTP error, not an event stream that starts with 200 and then fails."""
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, top_p=1.5)
    assert "top_p" in caught.value.body["message"]


def test_a_malformed_body_is_a_400_in_openai_shape_not_fastapis_422(base_url):
    status, _, body = _post(base_url, "/v1/chat/completions", {"model": MODEL})
    assert status == 400 and body["error"]["param"] == "messages" and "required" in body["error"]["message"]
    status, _, body = _post(base_url, "/v1/completions", None, raw=b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, _, body = _post(base_url, "/v1/completions", {"prompt": "x", "temperature": "hot"})
    assert status == 400 and body["error"]["param"] == "temperature"


def test_auth_wrong_or_missing_token_is_401_and_health_stays_open(base_url, stack, gateways):
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.models.list()
    assert caught.value.body["type"] == "authentication_error" and caught.value.body["code"] == "invalid_api_key"
    status, headers, body = _post(base_url, "/v1/completions", {"prompt": "x"}, token=None)
    assert status == 401 and "no bearer token" in body["error"]["message"]
    assert headers["WWW-Authenticate"] == "Bearer"
    with urllib.request.urlopen(f"{base_url}/health", timeout=10) as reply:  # no token: probes carry none
        assert reply.status == 200 and json.loads(reply.read())["model"] == MODEL

    # A gateway with a token of its own forwards the coordinator's
    own = gateways.start(coordinator=stack.address, auth_token="gateway-token", coordinator_token=TOKEN)
    with openai.OpenAI(base_url=f"{own}/v1", api_key="gateway-token", max_retries=0) as client:
        assert client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2).usage.completion_tokens == 2
    # A gateway without the coordinator's token: the coordinator's UNAUTHENTICATED is a 401 too
    tokenless = gateways.start(coordinator=stack.address, served_model_name=MODEL)
    with openai.OpenAI(base_url=f"{tokenless}/v1", api_key="anything", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2)
    assert "bearer token" in caught.value.body["message"]


def test_an_overloaded_coordinator_is_a_429_with_its_retry_hint(openai_client, stack, monkeypatch):
    """RESOURCE_EXHAUSTED with the coordinator's retry-after-ms becomes 429 + Retry-After (and
    retry-after-ms, which the openai package reads first)."""
    monkeypatch.setattr(stack.servicers["coordinator"].admission, "limit", 0)  # every slot taken
    with pytest.raises(openai.RateLimitError) as caught:
        openai_client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2)
    error = caught.value
    assert error.status_code == 429 and error.body["type"] == "rate_limit_error"
    assert "concurrent requests" in error.body["message"]
    hint_ms = int(error.response.headers["retry-after-ms"])
    assert hint_ms >= 1 and int(error.response.headers["Retry-After"]) == max(1, -(-hint_ms // 1000))


def test_an_unreachable_coordinator_is_a_503(gateways):
    from specdec.launch.stack import free_port

    down = gateways.start(coordinator=f"127.0.0.1:{free_port()}")  # nothing listens there
    with openai.OpenAI(base_url=f"{down}/v1", api_key="x", max_retries=0, timeout=30) as client:
        with pytest.raises(openai.InternalServerError) as caught:
            client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2)
    assert caught.value.status_code == 503 and caught.value.body["type"] == "service_unavailable_error"
    with pytest.raises(urllib.error.HTTPError) as health:
        urllib.request.urlopen(f"{down}/health", timeout=30)
    assert health.value.code == 503


# --------------------------------------------------------------------------- the wire


def _send(base_url: str, body: dict) -> tuple[http.client.HTTPConnection, socket.socket]:
    """POST /v1/completions on a connection of our own; its socket, to hang up on."""
    url = urlsplit(base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    connection.request("POST", "/v1/completions", json.dumps(body),
                       {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    return connection, connection.sock


def _hang_up(sock: socket.socket) -> None:
    sock.shutdown(socket.SHUT_RDWR)  # at once, whoever else holds the socket's file (the response)
    sock.close()


def test_raw_sse_stream_is_data_lines_ending_with_done(base_url):
    connection, _ = _send(base_url, {"model": MODEL, "prompt": PROMPT, "stream": True, **GREEDY})
    try:
        reply = connection.getresponse()
        assert reply.status == 200 and reply.getheader("Content-Type").startswith("text/event-stream")
        raw = reply.read().decode()
    finally:
        connection.close()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events[:-1])
    chunks = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_client_that_goes_away_cancels_the_coordinators_work(base_url, stack):
    """~1,000 tokens would keep the tiny stack busy for many seconds; hanging up must end
    the request at the coordinator at once, streamed or not."""
    coordinator = stack.servicers["coordinator"]
    long = {"model": MODEL, "prompt": PROMPT, "max_tokens": 1000, "ignore_eos": True, "temperature": 0.0}
    connection, sock = _send(base_url, {**long, "stream": True})
    reply = connection.getresponse()
    assert reply.status == 200 and reply.read(6) == b"data: "  # streaming has begun
    assert coordinator.active == 1
    _hang_up(sock)
    assert wait_for(lambda: coordinator.active == 0, timeout_s=5), "the stream's gRPC call was not cancelled"

    connection, sock = _send(base_url, long)  # not streamed: hang up while the answer is generated
    assert wait_for(lambda: coordinator.active == 1, timeout_s=10)
    _hang_up(sock)
    assert wait_for(lambda: coordinator.active == 0, timeout_s=5), "the gRPC call was not cancelled"
    reply = _post(base_url, "/v1/completions", {"model": MODEL, "prompt": PROMPT, "max_tokens": 2})
    assert reply[0] == 200  # and the gateway serves on
