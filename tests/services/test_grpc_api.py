"""The Coordinator API end to end: streaming, stop strings, cancellation, deadlines,
health, reflection, info and bad requests (on the shared tiny stack)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from specdec.client import (
    Client,
    DeadlineExceededError,
    InvalidRequestError,
    UnavailableError,
)
from specdec.pb.v1 import coordinator_pb2, coordinator_pb2_grpc

PROMPT = "the cat sat"


def test_stream_deltas_add_up_to_the_completion(client):
    # a fixed policy: seeded sampling reproduces tokens only when the draft lengths do not follow timings
    for params in (dict(mode="pearl"), dict(mode="sequential", policy="fixed", temperature=0.8, top_k=20, seed=7)):
        chunks = list(client.generate_stream(PROMPT, max_new_tokens=50, ignore_eos=True, **params))
        whole = client.complete(PROMPT, max_new_tokens=50, ignore_eos=True, **params)
        assert len(chunks) > 2
        assert all(c.finish_reason is None and c.stats is None for c in chunks[:-1])
        last = chunks[-1]
        assert last.finish_reason == whole.finish_reason == "length"
        assert "".join(c.text for c in chunks) == whole.text
        assert [t for c in chunks for t in c.token_ids] == list(whole.token_ids)
        assert last.stats.tokens == len(whole.token_ids) == 50
        assert dict(last.stats)["rounds"] == last.stats.rounds > 0


def test_stop_string_ends_the_text_before_it(client, tiny_engine):
    full = client.complete(PROMPT, max_new_tokens=60, ignore_eos=True, mode="pearl")
    stop = full.text[20:23]
    cut = full.text.index(stop)
    chunks = list(client.generate_stream(PROMPT, max_new_tokens=60, ignore_eos=True, mode="pearl", stop=[stop, "@@@"]))
    text = "".join(c.text for c in chunks)
    ids = [t for c in chunks for t in c.token_ids]
    assert text == full.text[:cut]
    assert chunks[-1].finish_reason == "stop"
    assert ids == list(full.token_ids[: len(ids)]) and chunks[-1].stats.tokens == len(ids)
    assert tiny_engine.tokenizer.decode(ids, skip_special_tokens=True).endswith(stop)  # the ids run up to the stop string's last token


def test_cancelling_a_stream_frees_the_sessions_on_both_workers(tiny_stack, client, worker_info, wait_for_no_sessions):
    stream = client.generate_stream(PROMPT, max_new_tokens=900, ignore_eos=True, mode="pearl")
    for _ in range(3):
        next(stream)
    assert worker_info(tiny_stack.target.address, "target").sessions >= 1
    stream.close()
    assert wait_for_no_sessions(tiny_stack) == {"draft": 0, "target": 0}
    assert client.complete(PROMPT, max_new_tokens=5).stats.tokens == 5  # still serving


def test_a_deadline_returns_deadline_exceeded(tiny_stack, wait_for_no_sessions):
    with Client(tiny_stack.address, timeout=0.3) as hurried:
        with pytest.raises(DeadlineExceededError):
            hurried.complete(PROMPT, max_new_tokens=1000, ignore_eos=True, mode="sequential")
        with pytest.raises(DeadlineExceededError):
            for _ in hurried.generate_stream(PROMPT, max_new_tokens=1000, ignore_eos=True, mode="pearl"):
                pass
    assert wait_for_no_sessions(tiny_stack) == {"draft": 0, "target": 0}


@pytest.mark.parametrize("role", ["draft", "target", "coordinator"])
def test_health_reports_serving(tiny_stack, role):
    service = {"draft": tiny_stack.draft, "target": tiny_stack.target, "coordinator": tiny_stack.coordinator}[role]
    name = {"draft": "DraftWorker", "target": "TargetWorker", "coordinator": "Coordinator"}[role]
    with grpc.insecure_channel(service.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service_name in ("", f"specdec.v1.{name}"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service_name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_is_enough_to_call_generate(tiny_stack):
    """A client with no generated code: descriptors from reflection, then a Generate call."""
    with grpc.insecure_channel(tiny_stack.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"specdec.v1.Coordinator", "grpc.health.v1.Health"} <= services
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindServiceByName("specdec.v1.Coordinator").FindMethodByName("Generate")
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        generate = channel.unary_stream(
            "/specdec.v1.Coordinator/Generate",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        mode = pool.FindEnumTypeByName("specdec.v1.Mode").values_by_name["MODE_PEARL"].number
        responses = list(generate(request_class(prompt=PROMPT, max_new_tokens=12, mode=mode, ignore_eos=True), timeout=30))
    assert sum(len(r.token_ids) for r in responses) == 12
    assert responses[-1].stats.tokens == 12
    for role in (tiny_stack.draft, tiny_stack.target):
        with grpc.insecure_channel(role.address) as channel:
            assert any(s.endswith("Worker") for s in ProtoReflectionDescriptorDatabase(channel).get_services())


def test_info_describes_models_and_limits(client):
    info = client.info()
    assert info.preset == "tiny" and info.context_length == 1024 and info.vocab_size == 69
    assert {"autoregressive", "sequential", "pearl"} <= set(info.modes)
    assert {"fixed", "heuristic", "adaedl", "specdecpp"} <= set(info.policies)  # the stack loads a head
    assert info.eos_token_ids == (1,)


BAD_REQUESTS = [
    (dict(prompt=""), "prompt"),
    (dict(temperature=-0.5), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=-1), "top_k"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(draft_length=0), "draft_length"),
    (dict(threshold=1.5, policy=coordinator_pb2.POLICY_FIXED), "threshold"),
    (dict(prompt="a" * 1100), "prompt"),
    (dict(prompt_token_ids=[5, 999]), "prompt_token_ids"),
    (dict(mode=99), "mode"),
    (dict(policy=42), "policy"),
    (dict(prompt_token_ids=[5, 6]), "prompt"),  # both prompt and prompt_token_ids
    (dict(stop=[""]), "stop"),
]


@pytest.mark.parametrize("fields,named", BAD_REQUESTS, ids=[f"{n}-{i}" for i, (_, n) in enumerate(BAD_REQUESTS)])
def test_bad_requests_are_invalid_argument_naming_the_field(tiny_stack, client, fields, named):
    request = coordinator_pb2.GenerateRequest(**{"prompt": PROMPT, "max_new_tokens": 4, **fields})
    if "prompt_token_ids" in fields and named == "prompt_token_ids":
        request.ClearField("prompt")
    with grpc.insecure_channel(tiny_stack.address) as channel:
        stub = coordinator_pb2_grpc.CoordinatorStub(channel)
        for call in (stub.Complete, lambda r, timeout: list(stub.Generate(r, timeout=timeout))):
            with pytest.raises(grpc.RpcError) as caught:
                call(request, timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert named in caught.value.details()
    assert client.complete(PROMPT, max_new_tokens=3).stats.tokens == 3  # the server keeps serving


def test_sdk_raises_typed_errors(client):
    with pytest.raises(InvalidRequestError, match="temperature"):
        client.complete(PROMPT, temperature=-1.0)
    with pytest.raises(InvalidRequestError, match="mode"):  # unknown names are caught before sending
        client.complete(PROMPT, mode="warp")
    with pytest.raises(ValueError, match="top_p"):  # InvalidRequestError is a ValueError too
        list(client.generate_stream(PROMPT, top_p=0.0))


def test_sdk_retries_then_raises_unavailable():
    from specdec.launch.stack import free_port

    with Client(f"127.0.0.1:{free_port()}", retries=2) as nowhere:
        with pytest.raises(UnavailableError):
            nowhere.complete(PROMPT)
        with pytest.raises(UnavailableError):
            next(nowhere.generate_stream(PROMPT))
