"""GSD's two small values: the per-request `TreeParams`, and the `DraftTree` the draft
sends to the target (plain lists and sparse proposals, so it maps onto a proto as is).

Words: the *root* is the last committed token; a node's *children* are the draft tokens
that may follow it, drawn from the node's *proposal*; *siblings* share a parent and
are listed in the order they were drawn (that order matters for verification).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from specdec.core.sampling import SparseDist

MAX_WIDTH = 16  # children per node; also the stride of the draft's per-node RNG branches
MAX_DEPTH = 64
MAX_NODES = 1024
ROOT = -1  # the parent index of the root's children


@dataclass(frozen=True)
class TreeParams:
    """How a GSD draft tree is grown, per request (docs/algorithms.md §5).

    q below is the draft's distribution at a node: its sampling distribution (the
    request's temperature / top-k / top-p), or the untempered softmax when greedy.
    """

    width: int = 4  # k: children drawn per expanded node, at most
    depth: int = 8  # draft tokens on the longest root path, at most
    max_nodes: int = 64  # nodes in the unrolled token tree the target verifies, at most
    sibling_threshold: float = 0.2  # a node proposes only tokens with q >= this * max q
    prob_threshold: float = 0.3  # a child with q(child) < this is a leaf (never expanded)
    # A drawn node whose own token and `merge_context` preceding tokens equal those of a
    # DAG node anywhere (any depth, not on its own path) links to it: the tree becomes a
    # DAG and the draft computes that node once (GSD's check_repetition: 0 or 1); -1 = off.
    merge_context: int = 1

    def validate(self) -> None:
        """Raise ValueError naming the field (the names of Engine.generate's kwargs)."""
        if not (isinstance(self.width, int) and 1 <= self.width <= MAX_WIDTH):
            raise ValueError(f"tree_width must be in 1..{MAX_WIDTH}, got {self.width!r}")
        if not (isinstance(self.depth, int) and 1 <= self.depth <= MAX_DEPTH):
            raise ValueError(f"tree_depth must be in 1..{MAX_DEPTH}, got {self.depth!r}")
        if not (isinstance(self.max_nodes, int) and 1 <= self.max_nodes <= MAX_NODES):
            raise ValueError(f"tree_nodes must be in 1..{MAX_NODES}, got {self.max_nodes!r}")
        if not 0.0 <= self.sibling_threshold <= 1.0:
            raise ValueError(f"sibling_threshold must be in [0, 1], got {self.sibling_threshold!r}")
        if not 0.0 <= self.prob_threshold <= 1.0:
            raise ValueError(f"prob_threshold must be in [0, 1] (0 = expand every node), got {self.prob_threshold!r}")
        if not (isinstance(self.merge_context, int) and -1 <= self.merge_context <= MAX_DEPTH):
            raise ValueError(f"merge_context must be in -1..{MAX_DEPTH} (-1 = no merging), got {self.merge_context!r}")


@dataclass(frozen=True)
class DraftTree:
    """A token tree to verify: the draft's DAG unrolled, nodes in breadth-first order.

    Node i's token follows the committed sequence plus the tokens of its ancestors;
    it sits at absolute index `len(committed) + depth(i) - 1`.
    """

    tokens: list[int]  # [n] draft tokens; parents before children, siblings in draw order
    parents: list[int]  # [n] index of each node's parent in `tokens`; ROOT (-1) = the last committed token
    proposals: list[SparseDist] = field(default_factory=list)  # distinct proposals; empty when greedy
    root_proposal: int = -1  # index in `proposals` the root's children were drawn from; -1 greedy
    proposal_ids: list[int] = field(default_factory=list)  # [n] same for each node's children; -1 greedy / leaf
    dag_nodes: int = 0  # distinct nodes of the draft's DAG (the tree repeats merged sub-DAGs)
    merged_nodes: int = 0  # draws linked to an existing DAG node instead of drafting a new one
    seconds: float = 0.0  # draft compute
    saved_rows: int = 0  # tree nodes expanded without a draft row of their own (their DAG node was computed)
    saved_forwards: int = 0  # levels that ran no draft forward (every node in them was computed)

    def __len__(self) -> int:
        return len(self.tokens)

    def children(self) -> list[list[int]]:
        """[n + 1] lists of node indices: entry 0 the root's children, entry i + 1 node i's."""
        out: list[list[int]] = [[] for _ in range(len(self.tokens) + 1)]
        for i, parent in enumerate(self.parents):
            out[parent + 1].append(i)
        return out

    def depths(self) -> list[int]:
        """[n] depth of each node: 1 for the root's children."""
        depth: list[int] = []
        for parent in self.parents:
            depth.append(1 if parent == ROOT else depth[parent] + 1)
        return depth

    def proposal_of(self, node: int) -> SparseDist | None:
        """The proposal `node`'s children were drawn from (ROOT for the root's)."""
        index = self.root_proposal if node == ROOT else self.proposal_ids[node]
        return self.proposals[index] if index >= 0 else None

    def validate(self, vocab_size: int | None = None, sampled: bool = False) -> None:
        """What a target must check on a tree from the wire before trusting it."""
        n = len(self.tokens)
        if len(self.parents) != n:
            raise ValueError(f"draft tree has {n} tokens but {len(self.parents)} parents")
        if len(self.proposal_ids) not in (0, n):
            raise ValueError(f"draft tree has {n} tokens but {len(self.proposal_ids)} proposal_ids")
        for i, parent in enumerate(self.parents):
            if not ROOT <= parent < i:
                raise ValueError(f"draft tree node {i} has parent {parent}: parents must come before their children")
        if any(not -1 <= p < len(self.proposals) for p in (self.root_proposal, *self.proposal_ids)):
            raise ValueError(f"draft tree refers to proposals outside -1..{len(self.proposals) - 1}")
        for q in self.proposals:
            if q.token_ids.shape != q.probs.shape or q.token_ids.dim() != 1:
                raise ValueError("draft tree has a proposal whose token_ids and probs differ in length")
        if vocab_size is not None:
            ids = [self.tokens, *(q.token_ids.tolist() for q in self.proposals)]
            if any(not 0 <= t < vocab_size for group in ids for t in group):
                raise ValueError(f"draft tree has token ids outside 0..{vocab_size - 1}")
        if sampled:
            kids = self.children()
            for node in range(ROOT, n):
                if kids[node + 1] and self.proposal_of(node) is None:
                    raise ValueError(f"sampled verification needs the proposal of draft tree node {node}'s children")
                tokens = [self.tokens[c] for c in kids[node + 1]]
                if len(set(tokens)) != len(tokens):
                    raise ValueError(f"draft tree node {node} has repeated children: siblings are drawn without replacement")


def without(q: SparseDist, drawn: Sequence[int]) -> SparseDist:
    """q with the `drawn` tokens removed and renormalised: what the next sibling is drawn
    from. Draft and target both call this, so the q a sibling is verified with is
    bit for bit the q it was sampled from."""
    if not drawn:
        return q
    keep = ~torch.isin(q.token_ids, torch.tensor(list(drawn), dtype=q.token_ids.dtype))
    probs = q.probs[keep]
    return SparseDist(token_ids=q.token_ids[keep], probs=probs / probs.sum())


def branch(node_id: int, sibling: int) -> int:
    """The RNG branch of a node's `sibling`-th draw; unique inside one draft tree."""
    return node_id * MAX_WIDTH + sibling
