"""The target side of a GSD round: one forward over the tree, then walk it from the root.

At each node the walk tests the node's children in draw order (multi-candidate
speculative sampling, SpecInfer / MCSD, for draws without replacement):
- accept child c_i with probability min(1, p(c_i) / q_i(c_i)), where q_i is the
  proposal with siblings 0..i-1 removed (exactly what c_i was drawn from);
- after a rejection, p <- norm(max(0, p - q_i));
- if every child is rejected, the recovered token is sampled from the final p;
  at a leaf the bonus token is sampled from p.
The emitted token at every position is then distributed exactly as the target's
(docs/algorithms.md §0). Greedy: follow the child equal to the target's argmax.
Randomness: Stream.ACCEPT at (position, sibling index), Stream.RESIDUAL at (position),
where position is the absolute index of the children being tested; the walk visits
one node per position, so no key is used twice before its position is committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from specdec.core import rng
from specdec.core.acceptance import residual
from specdec.core.sampling import SamplingParams, logits_to_probs
from specdec.core.tree import ROOT, DraftTree, without
from specdec.gsd.tree_session import forward_tree, keep_path
from specdec.runtime.session import ModelSession


@dataclass(frozen=True)
class TreeVerdict:
    """The target's verdict on one tree: an accepted root path and the next token."""

    path: tuple[int, ...]  # indices in DraftTree.tokens of the accepted tokens, root first
    tokens: tuple[int, ...]  # the accepted tokens
    next_token: int  # the recovered token, or the bonus token when the path ends at a leaf
    drafted: int  # nodes in the tree

    @property
    def accepted(self) -> int:
        return len(self.path)


@dataclass(frozen=True)
class TreeVerification:
    verdict: TreeVerdict
    seconds: float  # target compute, including any cost-profile wait


def verify_tree(
    target_logits: torch.Tensor,  # [n + 1, V]: p at the root (last committed token), then at each node
    tree: DraftTree,
    params: SamplingParams,
    seed: int,
    position: int,  # absolute index of the root's children in the sequence
) -> TreeVerdict:
    n = len(tree.tokens)
    if target_logits.shape[0] != n + 1:
        raise ValueError(f"need {n + 1} target rows for a tree of {n} nodes, got {target_logits.shape[0]}")
    tree.validate(target_logits.shape[-1], sampled=not params.greedy)
    kids = tree.children()
    node, path = ROOT, []
    while True:
        children = kids[node + 1]
        at = position + len(path)
        if params.greedy:
            best = int(target_logits[node + 1].argmax())
            chosen = next((c for c in children if tree.tokens[c] == best), None)
        else:
            chosen, p = _choose_child(logits_to_probs(target_logits[node + 1], params), tree, node, children, seed, at)
        if chosen is None:
            nxt = best if params.greedy else rng.sample(p, seed, rng.Stream.RESIDUAL, at)
            return TreeVerdict(tuple(path), tuple(tree.tokens[i] for i in path), nxt, n)
        path.append(chosen)
        node = chosen


def _choose_child(p: torch.Tensor, tree: DraftTree, node: int, children: Sequence[int], seed: int, at: int):
    """(the accepted child or None, p for the next token: the final residual if none)."""
    if not children:
        return None, p
    q = tree.proposal_of(node)
    drawn: list[int] = []
    for i, child in enumerate(children):
        token = tree.tokens[child]
        q_i = without(q, drawn)
        q_tok = q_i.prob_of(token)
        if q_tok <= 0.0:
            raise ValueError(f"draft tree node {child} has q = 0 in its own proposal at position {at}")
        ratio = float(p[token]) / q_tok
        if ratio >= 1.0 or rng.uniform(seed, rng.Stream.ACCEPT, at, i) < ratio:
            return child, p
        p = residual(p, q_i.dense(p.shape[-1]))
        drawn.append(token)
    return None, p


def node_paths(tree: DraftTree) -> list[list[int]]:
    """Each node's tokens from the root's first child down to itself (parents come first)."""
    paths: list[list[int]] = []
    for token, parent in zip(tree.tokens, tree.parents):
        paths.append((paths[parent] if parent != ROOT else []) + [token])
    return paths


def verify_draft_tree(
    session: ModelSession,
    start: int,
    committed: Sequence[int],  # the committed sequence is session.tokens[:start] + committed
    tree: DraftTree,
    params: SamplingParams,
    seed: int,
    guide=None,  # structured output: each row masked by its node's path (specdec.grammar.Guide)
) -> TreeVerification:
    """Score the tree in one target forward, walk it, and keep only the accepted path's
    cache rows: the session ends holding the committed sequence plus the accepted tokens."""
    tree.validate(session.model.config.vocab_size, sampled=not params.greedy)
    out = forward_tree(session, start, committed, tree.tokens, tree.parents)
    length = start + len(committed)
    if guide is not None:
        guide.mask_paths(out.logits, session.tokens[:length], [[], *node_paths(tree)])
    path: tuple[int, ...] = ()
    try:
        verdict = verify_tree(out.logits, tree, params, seed, length)
        path = verdict.path
    finally:
        keep_path(session, length, path, [tree.tokens[i] for i in path])
    return TreeVerification(verdict, out.seconds)
