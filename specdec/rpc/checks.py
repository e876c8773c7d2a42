"""What a worker checks on a request from the wire before its model sees it.

The coordinator validates its own requests, but a worker can be called directly: token
ids outside the vocabulary would crash the embedding lookup (IndexError -> UNKNOWN), a
huge sequence or draft cap would hold the model thread and its memory, and a proposal
that is not a distribution would break the lossless verification. Each check raises
ValueError naming the field and the fix (INVALID_ARGUMENT, see the workers' server.py).
"""

from __future__ import annotations

import math
from typing import Sequence

from specdec.pb.v1 import common_pb2, draft_worker_pb2, target_worker_pb2

# Draft tokens per Draft call / per Verify at most: far above any policy's k (<= 64).
MAX_DRAFT_TOKENS = 256
# |sum(q) - 1| allowed for a proposal: fp32 renormalisation is ~1e-6 off at most.
PROB_SUM_TOLERANCE = 1e-3


def model_limits(model) -> tuple[int, int]:
    """(vocab_size, context_length) of a worker's model, as its GetInfo reports them
    (kept on the model: a transformers config's attribute lookups cost ~20 us a call)."""
    limits = getattr(model, "_specdec_limits", None)
    if limits is None:
        config = model.config
        limits = int(config.vocab_size), int(getattr(config, "max_position_embeddings", 32768))
        try:
            model._specdec_limits = limits
        except AttributeError:  # a model object that takes no attributes: computed each time
            pass
    return limits


def check_token_ids(ids: Sequence[int], vocab_size: int, field: str) -> None:
    if len(ids) and not (0 <= min(ids) and max(ids) < vocab_size):
        bad = [t for t in ids if not 0 <= t < vocab_size][:5]
        raise ValueError(f"{field} has ids outside 0..{vocab_size - 1}: {bad}")


def check_sequence(start: int, tokens: Sequence[int], extra: int, context_length: int) -> None:
    """The session would hold start + len(tokens) tokens, then `extra` more (drafts)."""
    if start + len(tokens) == 0:
        raise ValueError("tokens is empty with start = 0: send the committed sequence to continue")
    total = start + len(tokens) + extra
    if total > context_length + MAX_DRAFT_TOKENS:
        raise ValueError(
            f"the session would hold {total} tokens, past the model's context ({context_length}): "
            "shorten the sequence"
        )


def check_proposal(q: common_pb2.Proposal, vocab_size: int, field: str) -> None:
    """q must be a distribution: ids in the vocabulary, one finite prob >= 0 each, sum 1."""
    if len(q.token_ids) != len(q.probs):
        raise ValueError(f"{field} has {len(q.token_ids)} token_ids but {len(q.probs)} probs: send one prob per id")
    if not q.token_ids:
        raise ValueError(f"{field} is empty: send the proposal the draft token was sampled from")
    check_token_ids(q.token_ids, vocab_size, f"{field}.token_ids")
    if not all(math.isfinite(p) and p >= 0.0 for p in q.probs):
        raise ValueError(f"{field}.probs must be finite and >= 0")
    total = math.fsum(q.probs)
    if abs(total - 1.0) > PROB_SUM_TOLERANCE:
        raise ValueError(f"{field}.probs sum to {total:.6g}, not 1: send the normalised proposal")


def check_draft_request(request: draft_worker_pb2.DraftRequest, model) -> None:
    vocab_size, context_length = model_limits(model)
    if request.rule.max_tokens > MAX_DRAFT_TOKENS:
        raise ValueError(f"rule.max_tokens must be in 1..{MAX_DRAFT_TOKENS}, got {request.rule.max_tokens}")
    check_token_ids(request.tokens, vocab_size, "tokens")
    check_sequence(request.start, request.tokens, request.rule.max_tokens, context_length)


def check_verify_request(request: target_worker_pb2.VerifyRequest, model, sampled: bool) -> None:
    """`sampled`: temperature > 0, so each draft token needs its proposal."""
    vocab_size, context_length = model_limits(model)
    k = len(request.draft_tokens)
    if k > MAX_DRAFT_TOKENS:
        raise ValueError(f"draft_tokens holds {k} tokens, more than {MAX_DRAFT_TOKENS}: verify fewer per round")
    check_token_ids(request.tokens, vocab_size, "tokens")
    check_token_ids(request.draft_tokens, vocab_size, "draft_tokens")
    check_sequence(request.start, request.tokens, k, context_length)
    if sampled:
        if len(request.proposals) != k:
            raise ValueError(
                f"got {len(request.proposals)} proposals for {k} draft_tokens: sampled verification needs "
                "the proposal of every draft token"
            )
        for i, q in enumerate(request.proposals):
            check_proposal(q, vocab_size, f"proposals[{i}]")


def check_draft_tree_request(request: draft_worker_pb2.DraftTreeRequest, model) -> None:
    """GSD drafting; the tree parameters themselves are checked by TreeParams.validate."""
    vocab_size, context_length = model_limits(model)
    check_token_ids(request.tokens, vocab_size, "tokens")
    check_sequence(request.start, request.tokens, max(request.tree.depth, 0), context_length)


def check_verify_tree_request(request: target_worker_pb2.VerifyTreeRequest, model, sampled: bool) -> None:
    """GSD verification; the tree's structure is checked by DraftTree.validate."""
    from specdec.core.tree import MAX_NODES

    vocab_size, context_length = model_limits(model)
    n = len(request.tree.tokens)
    if n > MAX_NODES:
        raise ValueError(f"tree holds {n} nodes, more than {MAX_NODES}: send a smaller tree (tree_nodes)")
    check_token_ids(request.tokens, vocab_size, "tokens")
    check_token_ids(request.tree.tokens, vocab_size, "tree.tokens")
    check_sequence(request.start, request.tokens, 0, context_length)  # tree rows are dropped but one path
    if sampled:
        for i, q in enumerate(request.tree.proposals):
            check_proposal(q, vocab_size, f"tree.proposals[{i}]")
