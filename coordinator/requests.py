"""The coordinator's edge: GenerateRequest -> a validated core request, results -> protobuf.

Every check raises ValueError naming the field (INVALID_ARGUMENT to the client).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from specdec.core.names import DEFAULT_MODE, PolicyName
from specdec.core.request import FinishReason, GenerationRequest, Mode, RequestStats
from specdec.grammar import check_constraint
from specdec.models.text import encode_messages, encode_prompt
from specdec.pb.v1 import coordinator_pb2 as pb
from specdec.rpc.params import params_from_pb

MAX_STOP_STRINGS = 16
_POLICY_NAMES = {p.value for p in PolicyName}

MODES = {
    pb.MODE_UNSPECIFIED: DEFAULT_MODE,
    pb.MODE_AUTOREGRESSIVE: Mode.AUTOREGRESSIVE,
    pb.MODE_SEQUENTIAL: Mode.SEQUENTIAL,
    pb.MODE_PEARL: Mode.PEARL,
    pb.MODE_GSD: Mode.GSD,
    pb.MODE_AUTO: Mode.AUTO,
}
FINISH_REASONS = {
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.CANCELLED: pb.FINISH_REASON_CANCELLED,
}


@dataclass(frozen=True)
class ModelLimits:
    """What the workers told the coordinator at startup."""

    context_length: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    has_draft: bool
    has_acceptance_head: bool
    modes: tuple[Mode, ...] = tuple(Mode)


@dataclass(frozen=True)
class ParsedRequest:
    request: GenerationRequest
    stop: tuple[str, ...]


def parse_request(msg: pb.GenerateRequest, tokenizer, limits: ModelLimits) -> ParsedRequest:
    if sum(map(bool, (msg.prompt, msg.prompt_token_ids, msg.messages))) > 1:
        raise ValueError("give one of prompt, prompt_token_ids and messages")
    if msg.messages:
        prompt_ids = encode_messages(tokenizer, [(m.role, m.content) for m in msg.messages])
    else:
        prompt_ids = list(msg.prompt_token_ids) or (encode_prompt(tokenizer, msg.prompt, msg.chat) if msg.prompt else [])
    if not prompt_ids:
        raise ValueError("prompt is empty: give some text, prompt_token_ids or messages")
    params = params_from_pb(msg)  # ValueError names a bad mode or policy value
    check_constraint(params.response_format)  # a schema, pattern or grammar that does not compile
    request = GenerationRequest.from_params(prompt_ids, params)
    mode, policy = request.mode, PolicyName(request.policy) if request.policy in _POLICY_NAMES else None
    if mode not in limits.modes:
        served = ", ".join(m.value for m in limits.modes)
        raise ValueError(f"mode {mode.value} is not served over gRPC yet: use one of {served}, or the embedded engine")
    if mode not in (Mode.AUTOREGRESSIVE, Mode.AUTO):  # auto without a draft runs the target alone
        if not limits.has_draft:
            raise ValueError(f"mode {mode.value} needs a draft worker: start the coordinator with --draft HOST:PORT")
        if policy is PolicyName.SPECDECPP and not limits.has_acceptance_head:
            raise ValueError("policy specdecpp needs an acceptance head on the draft worker")
    stop = params.stop
    if len(stop) > MAX_STOP_STRINGS or not all(stop):
        raise ValueError(f"stop must hold at most {MAX_STOP_STRINGS} non-empty strings")
    request.validate(limits.context_length, limits.vocab_size)
    return ParsedRequest(request, stop)


def stats_to_pb(stats: RequestStats, seed: int, tokens: int, prompt_tokens: int) -> pb.GenerationStats:
    return pb.GenerationStats(
        tokens=tokens,
        prompt_tokens=prompt_tokens,
        rounds=stats.rounds,
        draft_tokens=stats.draft_tokens,
        accepted_tokens=stats.accepted_tokens,
        emitted_tokens=stats.emitted_tokens,
        acceptance_rate=stats.acceptance_rate,
        mean_acceptance_length=stats.mean_acceptance_length,
        time_to_first_token_s=stats.time_to_first_token_s,
        wall_s=stats.wall_s,
        draft_compute_s=stats.draft_compute_s,
        target_compute_s=stats.target_compute_s,
        network_s=stats.network_s,
        critical_compute_s=stats.critical_compute_s,
        reprefills=stats.reprefills,
        draft_fallback=stats.draft_fallback,
        seed=seed,
        tree_nodes=stats.tree_nodes,
        dag_nodes=stats.dag_nodes,
        merged_nodes=stats.merged_nodes,
        saved_rows=stats.saved_rows,
        saved_forwards=stats.saved_forwards,
        mode_run=stats.mode_run,
        auto_k_rounds=stats.auto_k_rounds,
    )


def mode_names(limits: ModelLimits) -> list[str]:
    return [m.value for m in limits.modes]


def policy_names(limits: ModelLimits) -> list[str]:
    return [p.value for p in PolicyName if p is not PolicyName.SPECDECPP or limits.has_acceptance_head]


def finish_reason_to_pb(reason: FinishReason | None) -> int:
    return FINISH_REASONS.get(reason, pb.FINISH_REASON_UNSPECIFIED)


def flatten(chunks: Sequence[pb.GenerateResponse]) -> pb.CompleteResponse:
    """The streamed responses of one request as one CompleteResponse."""
    last = chunks[-1]
    return pb.CompleteResponse(
        text="".join(c.text for c in chunks),
        token_ids=[t for c in chunks for t in c.token_ids],
        finish_reason=last.finish_reason,
        stats=last.stats,
    )
