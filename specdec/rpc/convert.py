"""Core types <-> protobuf messages of the worker protocol, in one place.

Used by the workers (requests in, results out) and by the coordinator's remote
endpoints (the other way round). Imports torch (proposals are tensors in the core),
so the torch-free client SDK never imports this module.
"""

from __future__ import annotations

import torch

from specdec.core.acceptance import Verdict
from specdec.core.policies import EntropyOf, StopRule
from specdec.core.sampling import SamplingParams, SparseDist
from specdec.core.tree import DraftTree, TreeParams
from specdec.gsd.verifying import TreeVerdict, TreeVerification
from specdec.pb.v1 import common_pb2, draft_worker_pb2, target_worker_pb2
from specdec.rpc.params import constraint_from_pb, constraint_to_pb
from specdec.runtime.drafting import DraftToken
from specdec.runtime.verifying import Verification


def sampling_to_pb(params: SamplingParams) -> common_pb2.SamplingParams:
    msg = common_pb2.SamplingParams(temperature=params.temperature, top_k=params.top_k, top_p=params.top_p)
    if params.constraint is not None:
        msg.constraint.CopyFrom(constraint_to_pb(params.constraint))
        msg.constraint_start = params.constraint.start
    return msg


def sampling_from_pb(msg: common_pb2.SamplingParams) -> SamplingParams:
    constraint = constraint_from_pb(msg.constraint, msg.constraint_start) if msg.HasField("constraint") else None
    params = SamplingParams(temperature=msg.temperature, top_k=msg.top_k, top_p=msg.top_p, constraint=constraint)
    params.validate()
    return params


def rule_to_pb(rule: StopRule) -> common_pb2.StopRule:
    return common_pb2.StopRule(
        max_tokens=rule.max_tokens,
        min_tokens=rule.min_tokens,
        entropy_lambda=rule.entropy_lambda,
        reject_threshold=rule.reject_threshold,
        entropy_of=common_pb2.ENTROPY_OF_DRAFTED if rule.entropy_of is EntropyOf.DRAFTED else common_pb2.ENTROPY_OF_NEXT,
    )


def rule_from_pb(msg: common_pb2.StopRule) -> StopRule:
    if msg.max_tokens < 1:
        raise ValueError(f"rule.max_tokens must be >= 1, got {msg.max_tokens}")
    return StopRule(
        max_tokens=msg.max_tokens,
        min_tokens=max(1, msg.min_tokens),
        entropy_lambda=msg.entropy_lambda if msg.HasField("entropy_lambda") else None,
        reject_threshold=msg.reject_threshold if msg.HasField("reject_threshold") else None,
        # unset (an older coordinator) is the paper's rule, as it is for the core's StopRule
        entropy_of=EntropyOf.DRAFTED if msg.entropy_of == common_pb2.ENTROPY_OF_DRAFTED else EntropyOf.NEXT,
    )


def proposal_to_pb(q: SparseDist) -> common_pb2.Proposal:
    return common_pb2.Proposal(token_ids=q.token_ids.tolist(), probs=q.probs.tolist())


def proposal_from_pb(msg: common_pb2.Proposal) -> SparseDist:
    # fp32 on the wire and in the core: q arrives bit for bit as the draft sampled from it
    return SparseDist(
        token_ids=torch.tensor(msg.token_ids, dtype=torch.int64),
        probs=torch.tensor(msg.probs, dtype=torch.float32),
    )


def draft_token_to_pb(token: DraftToken) -> draft_worker_pb2.DraftToken:
    return draft_worker_pb2.DraftToken(
        token_id=token.token,
        q=proposal_to_pb(token.q) if token.q is not None else None,
        entropy=token.entropy,
        compute_seconds=token.seconds,
    )


def draft_token_from_pb(msg: draft_worker_pb2.DraftToken) -> DraftToken:
    return DraftToken(
        token=msg.token_id,
        q=proposal_from_pb(msg.q) if msg.HasField("q") else None,
        entropy=msg.entropy,
        seconds=msg.compute_seconds,
    )


def verification_to_pb(v: Verification) -> target_worker_pb2.VerifyResponse:
    return target_worker_pb2.VerifyResponse(
        accepted=v.verdict.accepted,
        next_token=v.verdict.next_token,
        drafted=v.verdict.drafted,
        compute_seconds=v.seconds,
        kept_row_only=v.passes == 0,
        batch_tokens=v.batch_tokens,
    )


def verification_from_pb(msg: target_worker_pb2.VerifyResponse) -> Verification:
    verdict = Verdict(msg.accepted, msg.next_token, msg.drafted)
    return Verification(verdict, msg.compute_seconds, 0 if msg.kept_row_only else 1, msg.batch_tokens)


def tree_params_to_pb(tree: TreeParams) -> common_pb2.TreeParams:
    return common_pb2.TreeParams(
        width=tree.width,
        depth=tree.depth,
        max_nodes=tree.max_nodes,
        sibling_threshold=tree.sibling_threshold,
        prob_threshold=tree.prob_threshold,
        merge_context=tree.merge_context,
    )


def tree_params_from_pb(msg: common_pb2.TreeParams) -> TreeParams:
    """Unset fields take TreeParams' defaults; ValueError names a bad field (tree_width, ...)."""
    names = ("width", "depth", "max_nodes", "sibling_threshold", "prob_threshold", "merge_context")
    tree = TreeParams(**{name: getattr(msg, name) for name in names if msg.HasField(name)})
    tree.validate()
    return tree


def tree_to_pb(tree: DraftTree) -> common_pb2.DraftTree:
    return common_pb2.DraftTree(
        tokens=tree.tokens,
        parents=tree.parents,
        proposals=[proposal_to_pb(q) for q in tree.proposals],
        root_proposal=tree.root_proposal,
        proposal_ids=tree.proposal_ids,
        dag_nodes=tree.dag_nodes,
        merged_nodes=tree.merged_nodes,
        saved_rows=tree.saved_rows,
        saved_forwards=tree.saved_forwards,
    )


def tree_from_pb(msg: common_pb2.DraftTree, seconds: float = 0.0) -> DraftTree:
    """Not validated: the target calls DraftTree.validate before trusting it."""
    return DraftTree(
        tokens=list(msg.tokens),
        parents=list(msg.parents),
        proposals=[proposal_from_pb(q) for q in msg.proposals],
        root_proposal=msg.root_proposal,
        proposal_ids=list(msg.proposal_ids),
        dag_nodes=msg.dag_nodes,
        merged_nodes=msg.merged_nodes,
        seconds=seconds,
        saved_rows=msg.saved_rows,
        saved_forwards=msg.saved_forwards,
    )


def draft_tree_to_pb(tree: DraftTree) -> draft_worker_pb2.DraftTreeResponse:
    return draft_worker_pb2.DraftTreeResponse(tree=tree_to_pb(tree), compute_seconds=tree.seconds)


def draft_tree_from_pb(msg: draft_worker_pb2.DraftTreeResponse) -> DraftTree:
    return tree_from_pb(msg.tree, msg.compute_seconds)


def tree_verification_to_pb(v: TreeVerification) -> target_worker_pb2.VerifyTreeResponse:
    return target_worker_pb2.VerifyTreeResponse(
        path=v.verdict.path,
        tokens=v.verdict.tokens,
        next_token=v.verdict.next_token,
        drafted=v.verdict.drafted,
        compute_seconds=v.seconds,
    )


def tree_verification_from_pb(msg: target_worker_pb2.VerifyTreeResponse) -> TreeVerification:
    verdict = TreeVerdict(tuple(msg.path), tuple(msg.tokens), msg.next_token, msg.drafted)
    return TreeVerification(verdict, msg.compute_seconds)


def worker_info_to_pb(role: str, model: torch.nn.Module, tokenizer, preset: str, **fields) -> common_pb2.WorkerInfo:
    """Describe a worker's model; `fields` fills the rest (sessions, max_sessions, ...)."""
    from specdec.models.loading import (
        eos_token_ids_of,  # the embedded engine's rule too, so both agree
    )

    config = model.config
    return common_pb2.WorkerInfo(
        role=role,
        model_name=str(getattr(config, "name_or_path", "") or preset),
        preset=preset,
        vocab_size=int(config.vocab_size),
        context_length=int(getattr(config, "max_position_embeddings", 32768)),
        eos_token_ids=eos_token_ids_of(model, tokenizer),
        hidden_size=int(getattr(config, "hidden_size", 0)),
        **fields,
    )
