"""The draft side of a GSD round: grow a token DAG level by level, unrolled into a tree.

Level d expands the frontier (the tree nodes at depth d that are not leaves): every
frontier node that the draft has not computed yet runs in ONE forward with a tree
mask, then each node draws up to `width` children, without replacement, from its
proposal. A drawn child whose token and `merge_context` preceding tokens match a
node already drawn at the same depth is merged into it: the draft computes it once
and the two branches share its children (GSD's DAG). The target gets the DAG
unrolled, so a merged node appears once per path.

Why this stays lossless (acceptance walks one node per depth, see verifying.py):
- a node's proposal q is exactly what its children were drawn from: the request's
  sampling distribution, truncated to the top-N and to q >= sibling_threshold * max q,
  renormalised; the i-th sibling is drawn from q without siblings 0..i-1 (`without`);
- every drawn node has its own RNG branch, and merges only join nodes of the same
  depth, so no walk sees the same draw twice;
- how many children a tree node gets (width, support of q, node budget) is fixed by
  counts known before the node's own draws; token identities drawn at depth d only
  shape depth d + 1 and below (merges, leaves).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from specdec.core import rng
from specdec.core.sampling import SamplingParams, SparseDist, logits_to_probs, truncate
from specdec.core.tree import ROOT, DraftTree, TreeParams, branch, without
from specdec.gsd.tree_session import append_tree
from specdec.runtime.session import ModelSession


@dataclass(eq=False)
class _Node:
    """A node of the draft's DAG (the root is the last committed token)."""

    id: int
    token: int
    depth: int
    suffix: tuple[int, ...]  # its last merge_context + 1 path tokens, ending with its own
    parent: _Node | None  # the node it was first drawn from: the path the draft computed
    confidence: float  # q(token) at that parent: the leaf rule's input
    row: int = -1  # its cache row in the draft session, once computed
    logits: torch.Tensor | None = None  # [V]
    q_full: torch.Tensor | None = None  # [V] q before truncation (confidence of children)
    proposal: SparseDist | None = None  # sampled: what its children are drawn from
    ranked: list[int] = field(default_factory=list)  # greedy: its children, best first
    n_children: int = 0  # children it can have (before the node budget)
    children: list[_Node] = field(default_factory=list)  # drawn so far, in draw order
    proposal_id: int = -1  # index in DraftTree.proposals once sent

    def ancestor_rows(self) -> list[int]:
        rows, node = [], self.parent
        while node is not None and node.depth > 0:
            rows.append(node.row)
            node = node.parent
        return rows[::-1]


class _Builder:
    """Grows one draft tree: the DAG (nodes, merges) and its unrolled, budgeted tree."""

    def __init__(self, prefix: Sequence[int], tree: TreeParams, params: SamplingParams, seed: int, top_n: int):
        self.tree, self.params, self.seed, self.top_n = tree, params, seed, top_n
        self.length = len(prefix)  # L: the root's children sit at absolute index L
        keep = tree.merge_context + 1
        self.root = _Node(0, prefix[-1], 0, tuple(prefix[-keep:]), None, 1.0, row=self.length - 1)
        self.next_id = 1
        self.by_key: dict[tuple[int, tuple[int, ...]], _Node] = {}
        self.merged = 0
        self.budget = tree.max_nodes  # tree nodes still allowed
        self.seconds = 0.0
        # the unrolled tree, as DraftTree fields
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.proposals: list[SparseDist] = []
        self.proposal_ids: list[int] = []
        self.root_proposal = -1

    def compute(self, session: ModelSession, frontier: list[tuple[int, _Node]]) -> None:
        """One draft forward for the frontier's nodes that have no logits yet; only the
        first `budget` frontier nodes can still get a child, so only those run."""
        todo = list({id(n): n for _, n in frontier[: self.budget] if n.logits is None}.values())
        if not todo:
            return
        out = append_tree(
            session, self.length, [n.token for n in todo], [n.depth for n in todo], [n.ancestor_rows() for n in todo]
        )
        self.seconds += out.seconds
        first_row = len(session.tokens) - len(todo)
        for i, node in enumerate(todo):
            node.row, node.logits = first_row + i, out.logits[i]

    def expand(self, frontier: list[tuple[int, _Node]]) -> list[tuple[int, _Node]]:
        """Give each frontier tree node its children, in order, within the node budget;
        return the next frontier (the children that are not leaves)."""
        next_frontier = []
        for index, node in frontier:
            if node.logits is None:  # past the budget
                continue
            if node.q_full is None:
                self.propose(node)
            count = min(node.n_children, self.budget)
            if count == 0:
                continue
            self.budget -= count
            if index == ROOT:
                self.root_proposal = self.proposal_id(node)
            else:
                self.proposal_ids[index] = self.proposal_id(node)
            for i in range(count):
                kid = self.child(node, i)
                self.tokens.append(kid.token)
                self.parents.append(index)
                self.proposal_ids.append(-1)
                if kid.depth < self.tree.depth and kid.confidence >= self.tree.prob_threshold:
                    next_frontier.append((len(self.tokens) - 1, kid))
        return next_frontier

    def propose(self, node: _Node) -> None:
        """Fix the node's proposal (sampled) or ranked children (greedy) from its logits."""
        tp = self.tree
        if self.params.greedy:
            probs = node.logits.float().softmax(-1)
            top = torch.topk(probs, min(tp.width, probs.shape[-1]))
            keep = top.values >= tp.sibling_threshold * top.values[0]
            node.ranked = top.indices[keep].tolist()
            node.n_children = len(node.ranked)
        else:
            probs = logits_to_probs(node.logits, self.params)
            q = truncate(probs, self.top_n)
            keep = q.probs >= tp.sibling_threshold * q.probs[0]
            node.proposal = SparseDist(q.token_ids[keep], q.probs[keep] / q.probs[keep].sum())
            node.n_children = min(tp.width, len(node.proposal.token_ids))
        node.q_full = probs

    def child(self, node: _Node, i: int) -> _Node:
        """The node's i-th child: drawn (and merged or created) on first use."""
        while len(node.children) <= i:
            j = len(node.children)
            if self.params.greedy:
                token = node.ranked[j]
            else:
                q = without(node.proposal, [c.token for c in node.children])
                key = branch(node.id, j)
                token = int(q.token_ids[rng.sample(q.probs, self.seed, rng.Stream.DRAFT, self.length + node.depth, key)])
            node.children.append(self._link(node, token))
        return node.children[i]

    def _link(self, parent: _Node, token: int) -> _Node:
        mc = self.tree.merge_context
        suffix = (parent.suffix + (token,))[-(mc + 1) :]
        key = (parent.depth + 1, suffix)
        if mc > 0 and key in self.by_key:
            self.merged += 1
            return self.by_key[key]
        node = _Node(self.next_id, token, parent.depth + 1, suffix, parent, float(parent.q_full[token]))
        self.next_id += 1
        self.by_key[key] = node
        return node

    def proposal_id(self, node: _Node) -> int:
        if node.proposal is None:
            return -1
        if node.proposal_id < 0:
            node.proposal_id = len(self.proposals)
            self.proposals.append(node.proposal)
        return node.proposal_id

    def result(self) -> DraftTree:
        dag_nodes = self.next_id - 1  # the root is not a draft node
        return DraftTree(
            self.tokens, self.parents, self.proposals, self.root_proposal, self.proposal_ids, dag_nodes, self.merged,
            self.seconds,
        )


def draft_tree(
    session: ModelSession,
    start: int,
    tokens: Sequence[int],  # the committed sequence is session.tokens[:start] + tokens
    tree: TreeParams,
    params: SamplingParams,
    seed: int,
    top_n: int = 64,
) -> DraftTree:
    """Draft one GSD tree after the committed sequence; the session ends holding exactly
    that sequence (the tree rows are dropped: the next round re-feeds accepted tokens)."""
    out = session.forward(start, tokens, 1)
    b = _Builder(session.tokens, tree, params, seed, top_n)
    b.root.logits, b.seconds = out.logits[-1], out.seconds
    try:
        frontier: list[tuple[int, _Node]] = [(ROOT, b.root)]  # (tree index, DAG node), breadth-first
        while frontier and b.budget > 0:  # one level per pass: one draft forward
            b.compute(session, frontier)
            frontier = b.expand(frontier)
        return b.result()
    finally:
        session.crop(b.length)
