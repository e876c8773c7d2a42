"""Fuzzing the coordinator's request parsing (coordinator/requests.py), in process.

- any field values (every field of GenerateRequest, found from its descriptor, so new
  fields are fuzzed too; NaN, inf, huge and negative numbers, unknown enum values) and
  any bytes that parse as a GenerateRequest: parse_request either raises ValueError
  (INVALID_ARGUMENT) or returns a request that passes GenerationRequest.validate();
- values in their documented ranges: always accepted, and carried over unchanged.
"""

from __future__ import annotations

import math
import string

import pytest
from google.protobuf.descriptor import FieldDescriptor as F
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.requests import ModelLimits, parse_request
from specdec.core.request import GenerationRequest
from specdec.pb.v1 import coordinator_pb2 as pb

LIMITS = ModelLimits(context_length=1024, vocab_size=69, eos_token_ids=(1,), has_draft=True, has_acceptance_head=True)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INT32 = st.one_of(st.integers(-3, 70), st.integers(-(2**31), 2**31 - 1))
UINT32 = st.one_of(st.integers(0, 70), st.integers(0, 2**32 - 1))
INT64 = st.one_of(st.integers(-3, 70), st.integers(-(2**63), 2**63 - 1))
UINT64 = st.one_of(st.integers(0, 70), st.integers(2**63 - 2, 2**64 - 1), st.integers(0, 2**64 - 1))
DOUBLE = st.one_of(
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 1.5, -1.0, math.nan, math.inf, -math.inf, 1e-300, 1e300]),
    st.floats(-2.0, 120.0),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = {
    F.TYPE_INT32: INT32, F.TYPE_SINT32: INT32, F.TYPE_SFIXED32: INT32,
    F.TYPE_UINT32: UINT32, F.TYPE_FIXED32: UINT32,
    F.TYPE_INT64: INT64, F.TYPE_SINT64: INT64, F.TYPE_SFIXED64: INT64,
    F.TYPE_UINT64: UINT64, F.TYPE_FIXED64: UINT64,
    F.TYPE_DOUBLE: DOUBLE, F.TYPE_FLOAT: st.floats(width=32, allow_nan=True, allow_infinity=True),
    F.TYPE_BOOL: st.booleans(),
    F.TYPE_STRING: st.text(max_size=40),
}
# fields whose interesting values a generic strategy would rarely hit
SPECIAL = {
    "prompt": st.one_of(st.text(max_size=40), st.integers(1000, 1100).map(lambda n: "ab" * (n // 2))),
    "prompt_token_ids": st.lists(st.one_of(st.integers(-2, 70), INT32), max_size=30),
}


def _field(field) -> st.SearchStrategy:
    if field.name in SPECIAL:
        return SPECIAL[field.name]
    if field.type == F.TYPE_MESSAGE:
        one = _message(field.message_type)
    elif field.type == F.TYPE_ENUM:
        one = st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), INT32)
    else:
        one = SCALARS[field.type]
    return st.lists(one, max_size=18) if field.is_repeated else one


def _message(descriptor, required: tuple[str, ...] = (), left_out: tuple[str, ...] = ()) -> st.SearchStrategy:
    """Messages of `descriptor`'s type with any subset of fields set to any value
    (`required` always set, `left_out` never)."""
    fields = {f.name: f for f in descriptor.fields}

    def build(values: dict):
        message = descriptor._concrete_class()
        for name, value in values.items():
            field = fields[name]
            if field.is_repeated:
                getattr(message, name).extend(value)
            elif field.type == F.TYPE_MESSAGE:
                getattr(message, name).CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return st.fixed_dictionaries(
        {name: _field(fields[name]) for name in required},
        optional={name: _field(f) for name, f in fields.items() if name not in (*required, *left_out)},
    ).map(build)


REQUEST = pb.GenerateRequest.DESCRIPTOR
# one prompt field set most of the time, so the checks after the prompt's are reached
REQUESTS = st.one_of(
    _message(REQUEST),
    _message(REQUEST, required=("prompt",), left_out=("prompt_token_ids",)),
    _message(REQUEST, required=("prompt_token_ids",), left_out=("prompt",)),
)


@pytest.fixture(scope="module")
def tokenizer():
    from specdec.models.tiny import tiny_tokenizer

    return tiny_tokenizer()


def check_parses_or_names_the_problem(message: pb.GenerateRequest, tokenizer) -> None:
    try:
        parsed = parse_request(message, tokenizer, LIMITS)
    except ValueError as exc:
        assert str(exc), "a ValueError must say what is wrong"
        return
    assert isinstance(parsed.request, GenerationRequest)
    parsed.request.validate(LIMITS.context_length, LIMITS.vocab_size)


@SETTINGS
@given(message=REQUESTS)
def test_any_field_values_parse_or_raise_value_error(tokenizer, message):
    check_parses_or_names_the_problem(message, tokenizer)


@SETTINGS
@given(data=st.binary(max_size=160))
def test_any_bytes_that_decode_parse_or_raise_value_error(tokenizer, data):
    try:
        message = pb.GenerateRequest.FromString(data)
    except DecodeError:
        return  # the server answers INVALID_ARGUMENT (tests/test_bad_input.py)
    check_parses_or_names_the_problem(message, tokenizer)


PROMPT_CHARS = string.ascii_letters + string.digits + "(){}:=+-*"
VALID = st.fixed_dictionaries(
    {"prompt": st.text(alphabet=PROMPT_CHARS, min_size=1, max_size=200)},
    optional={
        "max_new_tokens": st.integers(1, 32768),
        "temperature": st.floats(0.0, 100.0),
        "top_k": st.integers(0, 2**31 - 1),
        "top_p": st.floats(0.0, 1.0, exclude_min=True),
        "seed": st.integers(0, 2**63 - 1),
        "mode": st.sampled_from([pb.MODE_UNSPECIFIED, pb.MODE_AUTOREGRESSIVE, pb.MODE_SEQUENTIAL, pb.MODE_PEARL]),
        "policy": st.sampled_from(list(pb.Policy.values())),
        "draft_length": st.integers(1, 64),
        "threshold": st.floats(0.0, 1.0, exclude_min=True, exclude_max=True),
        "ignore_eos": st.booleans(),
        "chat": st.booleans(),
        "stop": st.lists(st.text(min_size=1, max_size=8), max_size=16),
    },
)


@SETTINGS
@given(fields=VALID)
def test_values_in_their_ranges_are_accepted_unchanged(tokenizer, fields):
    parsed = parse_request(pb.GenerateRequest(**fields), tokenizer, LIMITS)
    request = parsed.request
    request.validate(LIMITS.context_length, LIMITS.vocab_size)
    assert request.max_new_tokens == fields.get("max_new_tokens", GenerationRequest.max_new_tokens)
    assert request.sampling.temperature == fields.get("temperature", 0.0)
    assert request.sampling.top_k == fields.get("top_k", 0)
    assert request.sampling.top_p == fields.get("top_p", 1.0)
    assert request.seed == fields.get("seed")
    assert request.draft_length == fields.get("draft_length", GenerationRequest.draft_length)
    assert request.ignore_eos == fields.get("ignore_eos", False)
    assert parsed.stop == tuple(fields.get("stop", ()))
    if fields.get("chat"):  # the tiny tokenizer's chat template: "user: <prompt>\nassistant: "
        assert list(request.prompt_ids) == list(tokenizer(f"user: {fields['prompt']}\nassistant: ")["input_ids"])
    else:
        assert list(request.prompt_ids) == list(tokenizer(fields["prompt"])["input_ids"])
