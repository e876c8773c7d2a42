"""Structured output and conversations through the gRPC stack: a response_format and a
message list cross the coordinator to both workers, and greedy output still equals the
constrained target alone (tests/helpers/constrained.py) in every mode."""

from __future__ import annotations

import pytest

from specdec.client import InvalidRequestError
from specdec.core.constraint import parse_response_format
from tests.helpers.constrained import FORMATS, conforms, constrained_target_alone

MESSAGES = [{"role": "system", "content": "reply in json"}, {"role": "user", "content": "one item"}]


@pytest.fixture(scope="module")
def reference(tiny_engine):
    ids = tiny_engine.encode(MESSAGES)
    return constrained_target_alone(tiny_engine, ids, parse_response_format(FORMATS["json_schema"]).at(len(ids)), 60)


@pytest.mark.parametrize("mode", ["autoregressive", "sequential", "pearl", "gsd", "auto"])
def test_greedy_json_schema_output_equals_the_constrained_target_alone(client, reference, mode):
    got = client.complete(MESSAGES, max_new_tokens=60, mode=mode, response_format=FORMATS["json_schema"])
    assert list(got.token_ids) == reference
    assert got.finish_reason == "stop" and conforms("json_schema", got.text), got.text
    assert got.stats.prompt_tokens == len("system: reply in json\nuser: one item\nassistant: ")


@pytest.mark.parametrize("mode", ["sequential", "pearl", "gsd"])
def test_sampled_documents_conform(client, mode):
    for seed in range(3):
        got = client.complete(MESSAGES, max_new_tokens=60, mode=mode, temperature=0.9, seed=seed,
                              response_format=FORMATS["regex"])
        assert got.finish_reason == "stop" and conforms("regex", got.text), got.text


def test_streamed_chunks_join_to_the_document(client, reference):
    chunks = list(client.generate_stream(MESSAGES, max_new_tokens=60, mode="pearl",
                                         response_format=FORMATS["json_schema"]))
    assert [t for c in chunks for t in c.token_ids] == reference
    assert conforms("json_schema", "".join(c.text for c in chunks))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(response_format={"type": "json_schema", "json_schema": {"schema": {"type": "objekt"}}}),
         "invalid JSON schema"),
        (dict(response_format={"type": "regex", "regex": "[a-"}), "invalid regex"),
        (dict(response_format={"type": "json_object"}, ignore_eos=True), "ignore_eos"),
    ],
)
def test_a_bad_constraint_is_invalid_argument_and_the_stack_carries_on(client, kwargs, message):
    with pytest.raises(InvalidRequestError, match=message):
        client.complete("x", max_new_tokens=4, **kwargs)
    assert client.complete("x", max_new_tokens=2).finish_reason in ("stop", "length")


def test_bad_messages_are_invalid_argument(client):
    with pytest.raises(InvalidRequestError, match="role must be one of"):
        client.complete([{"role": "wizard", "content": "hi"}], max_new_tokens=2)
    with pytest.raises(InvalidRequestError, match="content"):
        client.complete([{"role": "user"}], max_new_tokens=2)
