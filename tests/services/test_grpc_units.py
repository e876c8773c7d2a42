"""The gRPC edge without servers: conversions, request parsing, incremental text."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from coordinator.requests import ModelLimits, parse_request
from specdec.models.text import TextStream
from specdec.client import InvalidRequestError, Stats, build_request
from specdec.client.errors import DeadlineExceededError, ServerError, error_for
from specdec.core.policies import EntropyOf, StopRule
from specdec.core.request import Mode
from specdec.core.sampling import SamplingParams, logits_to_probs, truncate
from specdec.models.tiny import tiny_tokenizer
from specdec.pb.v1 import common_pb2
from specdec.pb.v1 import coordinator_pb2 as pb
from specdec.rpc import convert
from specdec.runtime.drafting import DraftToken

LIMITS = ModelLimits(context_length=1024, vocab_size=69, eos_token_ids=(1,), has_draft=True, has_acceptance_head=False)


def test_a_proposal_crosses_the_wire_bit_for_bit():
    probs = logits_to_probs(torch.randn(66, generator=torch.Generator().manual_seed(0)) * 3, SamplingParams(0.7))
    q = truncate(probs, 16)
    token = DraftToken(token=int(q.token_ids[3]), q=q, entropy=1.25, seconds=0.002)
    back = convert.draft_token_from_pb(convert.draft_token_to_pb(token))
    assert torch.equal(back.q.token_ids, q.token_ids) and torch.equal(back.q.probs, q.probs)
    assert back.token == token.token and back.entropy == 1.25 and back.seconds == 0.002
    assert convert.draft_token_from_pb(convert.draft_token_to_pb(DraftToken(5, None, 0.5, 0.0))).q is None


def test_a_verification_crosses_the_wire_with_its_batch():
    from specdec.core.acceptance import Verdict
    from specdec.runtime.verifying import Verification

    for v in (Verification(Verdict(2, 7, 4), 0.03, 1, 80), Verification(Verdict(0, 9, 4), 0.0, 0, 0)):
        assert convert.verification_from_pb(convert.verification_to_pb(v)) == v


def test_stop_rules_and_sampling_round_trip():
    for rule in (StopRule(4), StopRule(8, 2, entropy_lambda=0.6), StopRule(20, 2, reject_threshold=0.5),
                 StopRule(8, entropy_lambda=0.6, entropy_of=EntropyOf.DRAFTED)):
        assert convert.rule_from_pb(convert.rule_to_pb(rule)) == rule
    # a rule from a coordinator that predates entropy_of means the paper's rule
    assert convert.rule_from_pb(common_pb2.StopRule(max_tokens=3, entropy_lambda=0.6)).entropy_of is EntropyOf.NEXT
    params = SamplingParams(temperature=0.7, top_k=40, top_p=0.9)
    assert convert.sampling_from_pb(convert.sampling_to_pb(params)) == params


def test_request_defaults_follow_the_core():
    parsed = parse_request(pb.GenerateRequest(prompt="abc"), tiny_tokenizer(), LIMITS)
    req = parsed.request
    assert req.mode is Mode.AUTO and req.policy == "auto" and req.max_new_tokens == 64
    assert req.sampling == SamplingParams() and req.seed is None and req.draft_length is None  # unset: see speed.py
    explicit = parse_request(build_request("abc", temperature=0.0, seed=0, mode="pearl", stop="x"), tiny_tokenizer(), LIMITS)
    assert explicit.request.seed == 0 and explicit.request.mode is Mode.PEARL and explicit.stop == ("x",)


def test_modes_needing_a_draft_are_refused_without_one():
    no_draft = ModelLimits(1024, 69, (1,), has_draft=False, has_acceptance_head=False)
    with pytest.raises(ValueError, match="draft worker"):
        parse_request(build_request("abc", mode="pearl"), tiny_tokenizer(), no_draft)
    with pytest.raises(ValueError, match="acceptance head"):
        parse_request(build_request("abc", mode="sequential", policy="specdecpp"), tiny_tokenizer(), LIMITS)
    assert parse_request(build_request("abc", mode="autoregressive"), tiny_tokenizer(), no_draft)
    with pytest.raises(ValueError, match="draft worker"):
        parse_request(build_request("abc", mode="gsd"), tiny_tokenizer(), no_draft)
    assert parse_request(build_request("abc", mode="gsd"), tiny_tokenizer(), LIMITS).request.mode is Mode.GSD


def push_all(stream: TextStream, ids, step: int = 1) -> str:
    out = [stream.push(ids[i : i + step])[0] for i in range(0, len(ids), step)]
    return "".join(out) + stream.finish()


def test_text_stream_concatenates_to_the_decoded_text():
    tok = tiny_tokenizer()
    ids = tok("hello world, 1 + 2 = 3\n")["input_ids"]
    for step in (1, 3, 100):
        assert push_all(TextStream(tok, [5, 6]), ids, step) == tok.decode(ids, skip_special_tokens=True)


def test_text_stream_holds_back_what_may_start_a_stop_string():
    tok = tiny_tokenizer()
    ids = tok("say abc then abd.")["input_ids"]
    stream = TextStream(tok, (), stop=["abd", "zz"])
    deltas = [stream.push([t])[0] for t in ids]
    assert "".join(deltas) + stream.finish() == "say abc then "
    assert stream.stopped and stream.tokens == len("say abc then abd")
    assert "".join(deltas[: len("say ab")]) == "say "  # "ab" may begin "abd": held back


def byte_level_tokenizer():
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_text_stream_never_splits_a_utf8_character():
    tok = byte_level_tokenizer()
    text = "héllo 日本 ok"
    ids = tok(text)["input_ids"]  # one id per byte
    stream = TextStream(tok)
    deltas = [stream.push([t])[0] for t in ids]
    assert not any("\ufffd" in d for d in deltas)
    assert "".join(deltas) + stream.finish() == text


def test_client_request_building_and_errors():
    with pytest.raises(InvalidRequestError, match="policy"):
        build_request("x", policy="magic")
    with pytest.raises(InvalidRequestError, match="seed"):
        build_request("x", seed=-1)
    assert list(build_request([3, 4]).prompt_token_ids) == [3, 4]
    assert isinstance(error_for("DEADLINE_EXCEEDED", "late"), TimeoutError)
    assert isinstance(error_for("INTERNAL", "bug"), ServerError)
    assert isinstance(error_for("DEADLINE_EXCEEDED", "late"), DeadlineExceededError)
    stats = Stats.from_pb(pb.GenerationStats(tokens=3, rounds=2))
    assert dict(stats)["tokens"] == 3 and stats["rounds"] == 2 and stats.as_dict()["reprefills"] == 0
