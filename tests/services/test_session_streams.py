"""The session streams (VerifyStream, DraftStream): one bidirectional stream per request
per worker carries every round, against the real tiny workers of the local stack."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from coordinator.remote import Replica, RemoteDraft, RemoteTarget
from specdec.core.policies import StopRule
from specdec.core.sampling import SamplingParams
from specdec.pb.v1 import common_pb2, draft_worker_pb2_grpc, target_worker_pb2, target_worker_pb2_grpc
from specdec.rpc.session_binding import SESSION_KEY

GREEDY = SamplingParams()
PROMPT = list(range(5, 25))


def _target(stack) -> RemoteTarget:
    return RemoteTarget([Replica(stack.target.address, target_worker_pb2_grpc.TargetWorkerStub)])


def _draft(stack) -> RemoteDraft:
    return RemoteDraft(Replica(stack.draft.address, draft_worker_pb2_grpc.DraftWorkerStub))


def test_rounds_over_one_stream_decode_like_the_unary_calls(tiny_stack):
    async def scenario():
        target = _target(tiny_stack)
        committed = list(PROMPT)
        for _ in range(12):  # plain decoding, one round per message
            v = await target.verify("s1", committed, [], None, GREEDY, 0)
            committed.append(v.verdict.next_token)
        stream = target._stream
        # the same continuation through the unary rpc, from scratch
        stub = target.replica.stub
        unary = list(PROMPT)
        for i in range(12):
            reply = await stub.Verify(target_worker_pb2.VerifyRequest(
                session_id="u1", start=0 if i == 0 else len(unary) - 1, tokens=unary if i == 0 else unary[-1:],
                sampling=common_pb2.SamplingParams(top_p=1.0), seed=0))
            unary.append(reply.next_token)
        await target.replica.release("u1")
        await target.release("s1")
        await target.replica.channel.close()
        return committed, unary, stream

    committed, unary, stream = asyncio.run(scenario())
    assert committed == unary
    assert stream is not None and stream.call.done()  # released: the stream is closed


def test_a_lost_session_is_re_prefilled_on_a_new_stream(tiny_stack):
    async def scenario():
        target = _target(tiny_stack)
        committed = list(PROMPT)
        v = await target.verify("s2", committed, [], None, GREEDY, 0)
        committed.append(v.verdict.next_token)
        first = target._stream
        await target.replica.release("s2")  # behind the caller's back: the worker forgets it
        v = await target.verify("s2", committed, [], None, GREEDY, 0)
        reprefills, second = target.reprefills, target._stream
        await target.release("s2")
        await target.replica.channel.close()
        return reprefills, first, second, v

    reprefills, first, second, v = asyncio.run(scenario())
    assert reprefills == 1 and second is not first  # FAILED_PRECONDITION ended the first stream


def test_a_stopped_draft_round_leaves_no_tokens_behind(tiny_stack):
    async def scenario():
        draft = _draft(tiny_stack)
        long_round = draft.draft("d1", PROMPT, StopRule(max_tokens=32), GREEDY, 0)
        first = [await anext(long_round), await anext(long_round)]
        await long_round.aclose()  # stop: the worker's later tokens of that round are dropped
        base = PROMPT + [t.token for t in first]
        again = [t async for t in draft.draft("d1", base, StopRule(max_tokens=3), GREEDY, 0)]
        stream = draft._stream
        await draft.release("d1")
        await draft.replica.channel.close()
        return first, again, stream

    first, again, stream = asyncio.run(scenario())
    assert len(again) == 3 and stream is not None
    # the continuation is the draft's own greedy continuation of base, not stale tokens
    async def reference():
        draft = _draft(tiny_stack)
        tokens = [t async for t in draft.draft("d2", PROMPT, StopRule(max_tokens=5), GREEDY, 0)]
        await draft.release("d2")
        await draft.replica.channel.close()
        return tokens

    assert [t.token for t in first + again] == [t.token for t in asyncio.run(reference())]


def test_a_stream_refuses_a_second_session_and_a_bad_message_ends_only_that_stream(tiny_stack):
    async def scenario():
        channel = grpc.aio.insecure_channel(tiny_stack.target.address)
        stub = target_worker_pb2_grpc.TargetWorkerStub(channel)
        sampling = common_pb2.SamplingParams(top_p=1.0)
        call = stub.VerifyStream(metadata=((SESSION_KEY, "k"),))
        await call.write(target_worker_pb2.VerifyRequest(session_id="a", tokens=PROMPT, sampling=sampling))
        await call.read()
        await call.write(target_worker_pb2.VerifyRequest(session_id="b", tokens=PROMPT, sampling=sampling))
        with pytest.raises(grpc.aio.AioRpcError) as switched:
            await call.read()
        bad = stub.VerifyStream(metadata=((SESSION_KEY, "k"),))
        await bad.write(target_worker_pb2.VerifyRequest(session_id="c", tokens=PROMPT, draft_tokens=[10**6],
                                                        sampling=sampling))
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await bad.read()
        for session in ("a", "c"):
            await stub.Release(common_pb2.ReleaseRequest(session_id=session), metadata=((SESSION_KEY, "k"),))
        await channel.close()
        # other sessions carry on
        target = _target(tiny_stack)
        v = await target.verify("ok", list(PROMPT), [], None, GREEDY, 0)
        await target.release("ok")
        await target.replica.channel.close()
        return switched.value, invalid.value, v

    switched, invalid, v = asyncio.run(scenario())
    assert switched.code() == grpc.StatusCode.INVALID_ARGUMENT and "one session" in switched.details()
    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT and "draft_tokens" in invalid.details()
    assert v.verdict.drafted == 0


def test_a_released_request_leaves_no_session_or_drafting_behind(tiny_stack, wait_for_no_sessions):
    async def scenario():
        draft, target = _draft(tiny_stack), _target(tiny_stack)
        tokens = draft.draft("r1", PROMPT, StopRule(max_tokens=64), GREEDY, 0)
        await anext(tokens)
        await target.verify("r1", list(PROMPT), [], None, GREEDY, 0)
        await tokens.aclose()
        await draft.release("r1")
        await target.release("r1")
        for e in (draft, target):
            await e.replica.channel.close()

    asyncio.run(scenario())
    assert wait_for_no_sessions(tiny_stack) == {"draft": 0, "target": 0}

