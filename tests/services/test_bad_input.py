"""Malformed and hostile requests, to the coordinator and straight to the workers (on
the shared tiny stack): each gets the expected status and a message naming what to
fix, and afterwards every server still reports SERVING and serves a normal request.
(test_grpc_api.py's BAD_REQUESTS covers the plain out-of-range fields; not repeated.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from specdec.pb.v1 import common_pb2
from specdec.pb.v1 import coordinator_pb2 as pb
from specdec.pb.v1 import draft_worker_pb2 as dpb
from specdec.pb.v1 import target_worker_pb2 as tpb

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PROMPT = "the cat sat"
GREEDY = common_pb2.SamplingParams(temperature=0.0, top_p=1.0)
SAMPLED = common_pb2.SamplingParams(temperature=1.0, top_p=1.0)
RULE = common_pb2.StopRule(max_tokens=3)
UNKNOWN_FIELD = b"\xb8\x3e\x07"  # field 999, varint 7: no such field in any of our messages


def gen(**fields) -> pb.GenerateRequest:
    return pb.GenerateRequest(**{"prompt": PROMPT, "max_new_tokens": 4, **fields})


def verify(sid: str, tokens=(5, 6, 7), sampling=GREEDY, **fields) -> tpb.VerifyRequest:
    return tpb.VerifyRequest(session_id=sid, tokens=list(tokens), sampling=sampling, **fields)


def draft(sid: str, tokens=(5, 6, 7), rule=RULE, sampling=GREEDY, **fields) -> dpb.DraftRequest:
    return dpb.DraftRequest(session_id=sid, tokens=list(tokens), rule=rule, sampling=sampling, **fields)


def q(ids, probs) -> common_pb2.Proposal:
    return common_pb2.Proposal(token_ids=ids, probs=probs)


def raw(message) -> bytes:
    return message.SerializeToString()


@dataclass(frozen=True)
class Case:
    name: str
    service: str  # coordinator | draft | target
    method: str  # rpc name; Generate and Draft stream
    request: object  # a message, or bytes sent as they are
    code: grpc.StatusCode
    says: str = ""  # the message must contain this (what to fix)
    timeout: float = 30.0


CASES = [
    # -- coordinator: bytes that are not a GenerateRequest --------------------------
    Case("garbage bytes (unary)", "coordinator", "Complete", b"\xff\xff\xff\xff", INVALID, "malformed"),
    Case("garbage bytes (stream)", "coordinator", "Generate", b"\xff\xff\xff\xff", INVALID, "malformed"),
    Case("truncated message", "coordinator", "Complete", raw(gen())[:-3], INVALID, "malformed"),
    Case("prompt bytes not UTF-8", "coordinator", "Complete", b"\x0a\x04ab\xc3\x28", INVALID, "UTF-8"),
    Case("prompt of 10 MB", "coordinator", "Complete", gen(prompt="a" * (10 * 2**20)),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"),
    Case("prompt of 200 kB", "coordinator", "Complete", gen(prompt="ab" * 10**5), INVALID, "shorten the prompt"),
    Case("unknown field is ignored", "coordinator", "Complete", raw(gen()) + UNKNOWN_FIELD, OK),
    Case("NUL and control characters in the prompt", "coordinator", "Complete", gen(prompt="a\x00b\x07\u202e"), OK),
    # -- coordinator: values out of range ---------------------------------------------
    Case("temperature NaN", "coordinator", "Complete", gen(temperature=math.nan), INVALID, "temperature"),
    Case("temperature inf", "coordinator", "Generate", gen(temperature=math.inf), INVALID, "temperature"),
    Case("top_p NaN", "coordinator", "Complete", gen(top_p=math.nan), INVALID, "top_p"),
    Case("top_p -inf", "coordinator", "Complete", gen(top_p=-math.inf), INVALID, "top_p"),
    Case("top_k huge is 'keep all'", "coordinator", "Complete", gen(top_k=2**31 - 1, temperature=0.7, seed=1), OK),
    Case("top_k most negative", "coordinator", "Complete", gen(top_k=-(2**31)), INVALID, "top_k"),
    Case("draft_length negative", "coordinator", "Complete", gen(draft_length=-3), INVALID, "draft_length"),
    Case("draft_length huge", "coordinator", "Generate", gen(draft_length=2**31 - 1), INVALID, "draft_length"),
    Case("max_new_tokens negative", "coordinator", "Complete", gen(max_new_tokens=-1), INVALID, "max_new_tokens"),
    Case("seed 2**64-1", "coordinator", "Complete", gen(seed=2**64 - 1), INVALID, "seed"),
    Case("threshold NaN", "coordinator", "Complete", gen(threshold=math.nan), INVALID, "threshold"),
    Case("mode negative", "coordinator", "Complete", gen(mode=-1), INVALID, "mode"),
    Case("17 stop strings", "coordinator", "Complete", gen(stop=["x"] * 17), INVALID, "stop"),
    Case("token id int32 max", "coordinator", "Complete", pb.GenerateRequest(prompt_token_ids=[5, 2**31 - 1]),
         INVALID, "prompt_token_ids"),
    Case("token id negative", "coordinator", "Generate", pb.GenerateRequest(prompt_token_ids=[-7]),
         INVALID, "prompt_token_ids"),
    # -- draft worker ------------------------------------------------------------------
    Case("garbage bytes", "draft", "Draft", b"\x12\xff", INVALID, "malformed"),
    Case("empty session id", "draft", "Draft", draft(""), INVALID, "session_id"),
    Case("token out of vocab", "draft", "Draft", draft("bad-d1", tokens=[5, 69]), INVALID, "tokens"),
    Case("negative token", "draft", "Draft", draft("bad-d2", tokens=[-1]), INVALID, "tokens"),
    Case("no tokens at all", "draft", "Draft", draft("bad-d3", tokens=[]), INVALID, "tokens is empty"),
    Case("no stop rule", "draft", "Draft", draft("bad-d4", rule=common_pb2.StopRule()), INVALID, "rule.max_tokens"),
    Case("rule.max_tokens 2**32-1", "draft", "Draft", draft("bad-d5", rule=common_pb2.StopRule(max_tokens=2**32 - 1)),
         INVALID, "rule.max_tokens"),
    Case("start past what it holds", "draft", "Draft", draft("bad-d6", start=50),
         grpc.StatusCode.FAILED_PRECONDITION, "holds 0 tokens"),
    Case("sampling unset (top_p 0)", "draft", "Draft", draft("bad-d7", sampling=common_pb2.SamplingParams()),
         INVALID, "top_p"),
    Case("temperature NaN", "draft", "Draft", draft("bad-d8", sampling=common_pb2.SamplingParams(
        temperature=math.nan, top_p=1.0)), INVALID, "temperature"),
    Case("sequence past the context", "draft", "Draft", draft("bad-d9", tokens=[5] * 3000), INVALID, "context"),
    Case("unknown field is ignored", "draft", "Draft", raw(draft("bad-d10")) + UNKNOWN_FIELD, OK),
    # -- target worker -----------------------------------------------------------------
    Case("garbage bytes", "target", "Verify", b"\x0a\x05ab", INVALID, "malformed"),
    Case("empty session id", "target", "Verify", verify(""), INVALID, "session_id"),
    Case("start past what it holds", "target", "Verify", verify("bad-t1", start=9),
         grpc.StatusCode.FAILED_PRECONDITION, "holds 0 tokens"),
    Case("draft token out of vocab", "target", "Verify", verify("bad-t2", draft_tokens=[500]), INVALID, "draft_tokens"),
    Case("committed token out of vocab", "target", "Verify", verify("bad-t3", tokens=[5, 2**31 - 1]), INVALID, "tokens"),
    Case("300 draft tokens", "target", "Verify", verify("bad-t4", draft_tokens=[5] * 300), INVALID, "draft_tokens"),
    Case("sequence past the context", "target", "Verify", verify("bad-t5", tokens=[5] * 3000), INVALID, "context"),
    Case("temperature negative", "target", "Verify", verify("bad-t6", sampling=common_pb2.SamplingParams(
        temperature=-1.0, top_p=1.0)), INVALID, "temperature"),
    Case("sampled without proposals", "target", "Verify", verify("bad-t7", sampling=SAMPLED, draft_tokens=[7]),
         INVALID, "proposal"),
    Case("probs summing to 0.3", "target", "Verify", verify("bad-t8", sampling=SAMPLED, draft_tokens=[7],
         proposals=[q([7], [0.3])]), INVALID, "sum"),
    Case("negative probs", "target", "Verify", verify("bad-t9", sampling=SAMPLED, draft_tokens=[7],
         proposals=[q([7, 8], [1.5, -0.5])]), INVALID, "probs"),
    Case("NaN prob", "target", "Verify", verify("bad-t10", sampling=SAMPLED, draft_tokens=[7],
         proposals=[q([7], [math.nan])]), INVALID, "probs"),
    Case("ids and probs of different lengths", "target", "Verify", verify("bad-t11", sampling=SAMPLED,
         draft_tokens=[7], proposals=[q([7, 8], [1.0])]), INVALID, "probs"),
    Case("proposal id out of vocab", "target", "Verify", verify("bad-t12", sampling=SAMPLED, draft_tokens=[7],
         proposals=[q([7, 999], [0.5, 0.5])]), INVALID, "token_ids"),
    Case("fewer proposals than draft tokens", "target", "Verify", verify("bad-t13", sampling=SAMPLED,
         draft_tokens=[7, 8], proposals=[q([7], [1.0])]), INVALID, "proposals"),
    Case("draft token absent from its proposal", "target", "Verify", verify("bad-t14", sampling=SAMPLED,
         draft_tokens=[7], proposals=[q([8], [1.0])]), INVALID, "q = 0"),
    Case("unknown field is ignored", "target", "Verify", raw(verify("bad-t15")) + UNKNOWN_FIELD, OK),
]


def _call(channel: grpc.Channel, case: Case) -> tuple[grpc.StatusCode, str]:
    service = {"coordinator": "Coordinator", "draft": "DraftWorker", "target": "TargetWorker"}[case.service]
    path = f"/specdec.v1.{service}/{case.method}"
    body = case.request if isinstance(case.request, bytes) else raw(case.request)
    streaming = case.method in ("Generate", "Draft")
    rpc = (channel.unary_stream if streaming else channel.unary_unary)(path)  # bytes in, bytes out
    try:
        reply = rpc(body, timeout=case.timeout)
        if streaming:
            reply = list(reply)
            assert reply, "a successful stream answers at least once"
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return OK, ""


def _session_ids() -> set[str]:
    """The session ids the worker cases name (to release them afterwards)."""
    ids = set()
    for case in CASES:
        kind = {"draft": dpb.DraftRequest, "target": tpb.VerifyRequest}.get(case.service)
        if kind is not None:
            try:
                message = kind.FromString(case.request) if isinstance(case.request, bytes) else case.request
            except DecodeError:
                continue
            ids.add(message.session_id)
    return ids - {""}


@pytest.fixture(scope="module")
def channels(tiny_stack):
    """Channels to the three services; the sessions the table opened are released after."""
    opened = {
        "coordinator": grpc.insecure_channel(tiny_stack.address),
        "draft": grpc.insecure_channel(tiny_stack.draft.address),
        "target": grpc.insecure_channel(tiny_stack.target.address),
    }
    yield opened
    _release(opened, _session_ids() | {"victim", "intruder", "fresh"})
    for channel in opened.values():
        channel.close()


def _release(channels, session_ids) -> None:
    for role, service in (("draft", "DraftWorker"), ("target", "TargetWorker")):
        release = channels[role].unary_unary(
            f"/specdec.v1.{service}/Release", request_serializer=common_pb2.ReleaseRequest.SerializeToString,
            response_deserializer=common_pb2.ReleaseResponse.FromString,
        )
        for sid in session_ids:
            release(common_pb2.ReleaseRequest(session_id=sid), timeout=10)


def test_the_table_has_at_least_30_cases():
    assert len(CASES) >= 30 and len({(c.service, c.name) for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.service}-{c.name}" for c in CASES])
def test_bad_input_gets_its_status_and_a_message_naming_the_fix(channels, case):
    code, details = _call(channels[case.service], case)
    assert code == case.code, f"{case.name}: {code.name}: {details}"
    assert case.says in details, f"{case.name}: {details!r} does not say {case.says!r}"


def test_a_client_cancelling_mid_stream_leaves_the_servers_serving(channels):
    generate = channels["coordinator"].unary_stream("/specdec.v1.Coordinator/Generate")
    stream = generate(raw(gen(max_new_tokens=500, ignore_eos=True)), timeout=30)
    next(stream)
    stream.cancel()
    with pytest.raises(grpc.RpcError) as caught:
        list(stream)
    assert caught.value.code() == grpc.StatusCode.CANCELLED
    drafts = channels["draft"].unary_stream("/specdec.v1.DraftWorker/Draft")
    stream = drafts(raw(draft("bad-d11", rule=common_pb2.StopRule(max_tokens=200))), timeout=30)
    next(stream)
    stream.cancel()
    with pytest.raises(grpc.RpcError) as caught:
        list(stream)
    assert caught.value.code() == grpc.StatusCode.CANCELLED
    # the draft worker serves the next caller in full
    after = list(drafts(raw(draft("bad-d12", rule=common_pb2.StopRule(max_tokens=3))), timeout=30))
    assert after, "the draft worker answered nothing after a cancelled stream"
    _release(channels, {"bad-d11", "bad-d12"})


def _verdict(channels, request: tpb.VerifyRequest):
    rpc = channels["target"].unary_unary(
        "/specdec.v1.TargetWorker/Verify", request_serializer=tpb.VerifyRequest.SerializeToString,
        response_deserializer=tpb.VerifyResponse.FromString,
    )
    try:
        return OK, rpc(request, timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), None


def test_a_worker_answers_on_the_tokens_sent_never_another_sessions(channels):
    """A caller reusing another request's session id gets a verdict on its own tokens;
    the reply carries a verdict only, never tokens it did not send. (Binding session ids
    to their owner is the security layer's job; here: no leak, sane statuses.)"""
    # a count of the forward's tokens (the cost model's key), like compute_seconds: no token ids
    verdict_fields = {"accepted", "next_token", "drafted", "compute_seconds", "batch_tokens"}
    victim = [9, 10, 11, 12, 13, 14, 15, 16]
    assert _verdict(channels, verify("victim", tokens=victim, draft_tokens=[20, 21]))[0] == OK
    mine = [30, 31, 32]
    code, theirs = _verdict(channels, verify("victim", tokens=mine, draft_tokens=[40]))
    _, fresh = _verdict(channels, verify("fresh", tokens=mine, draft_tokens=[40]))
    assert code in (OK, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION)
    if code == OK:
        assert (theirs.accepted, theirs.next_token, theirs.drafted) == (fresh.accepted, fresh.next_token, fresh.drafted)
        assert {f.name for f, _ in theirs.ListFields()} <= verdict_fields
    # reading on from where another session stands: a verdict at most, or refused
    code, reply = _verdict(channels, verify("intruder", start=len(victim), tokens=[]))
    assert code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT)
    code, reply = _verdict(channels, verify("victim", start=len(mine), tokens=[]))
    assert code in (OK, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION)
    if reply is not None:
        assert {f.name for f, _ in reply.ListFields()} <= verdict_fields


@pytest.mark.parametrize("role", ["coordinator", "draft", "target"])
def test_after_the_table_every_server_is_serving(tiny_stack, channels, role):
    reply = health_pb2_grpc.HealthStub(channels[role]).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    if role == "coordinator":
        from specdec.client import Client

        with Client(tiny_stack.address, timeout=30) as client:
            assert client.complete(PROMPT, max_new_tokens=5, ignore_eos=True).stats.tokens == 5
