"""The draft side of a GSD round: grow a token DAG level by level, unrolled into a tree.

Two structures grow side by side:
- the **DAG** (`_Node`): what the draft computed. A node is one draft row: its logits,
  its proposal, computed once in the context of the path it was first drawn on;
- the **tree** (`_Entry`, then `DraftTree`): what the target verifies, breadth-first
  within the node budget. Each tree node points at a DAG node; a DAG node reached by
  several paths appears once per path.

Level d expands the frontier (the tree nodes at depth d that are not leaves): the DAG
nodes of the frontier that have no logits yet run in ONE draft forward with a tree mask
(a level whose every node is already computed skips its forward), then each tree node
draws up to `width` children from its DAG node's proposal. Merging (GSD's
`check_repetition`): a drawn child whose token and `merge_context` preceding tokens (on
its tree path) equal those of an existing DAG node anywhere in the graph, at any depth,
that is not on its own path, is linked to that node instead of becoming a new one: the
draft computes nothing for it, and its children come from that node's proposal.

Why this stays lossless (acceptance walks one tree node per depth, see verifying.py):
- a tree node's proposal q is exactly what its children were drawn from: the request's
  sampling distribution at its DAG node, truncated to the top-N and to
  q >= sibling_threshold * max q, renormalised; the i-th sibling is drawn from q without
  siblings 0..i-1 (`without`). Which context produced q does not matter: speculative
  sampling is exact for any proposal independent of the target's randomness;
- sampled children are drawn per TREE node (its own RNG branch), not per DAG node: the
  DAG shares the draft's compute, not its draws. Sharing draws would let a node's own
  children decide, through the budget they use up below it, how many children a later
  copy of it gets, and the walk would then test candidates selected by their own
  identities (biased). Greedy children are the top tokens of q, so copies of a node have
  the same children anyway, and those link to the same DAG nodes: the DAG is shared whole;
- how many children a tree node gets (width, support of q, node budget) is fixed by
  counts known before its own draws; token identities drawn at depth d only shape depth
  d + 1 and below (merges, leaves).
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
    """A node of the draft's DAG: one draft row (the root is the last committed token)."""

    id: int
    token: int
    depth: int  # position after the committed sequence in the context it was computed in
    parent: _Node | None  # the node it was first drawn from: the path the draft computes it on
    row: int = -1  # its cache row in the draft session, once computed
    logits: torch.Tensor | None = None  # [V]
    q_full: torch.Tensor | None = None  # [V] q before truncation (confidence of children)
    proposal: SparseDist | None = None  # sampled: what its children are drawn from
    ranked: list[int] = field(default_factory=list)  # greedy: its children, best first
    n_children: int = 0  # children it can have (before the node budget)
    proposal_id: int = -1  # index in DraftTree.proposals once sent

    def path_tokens(self) -> list[int]:
        """The tokens after the committed sequence on the path it was computed on, its own last."""
        tokens, node = [], self
        while node is not None and node.depth > 0:
            tokens.append(node.token)
            node = node.parent
        return tokens[::-1]

    def ancestor_rows(self) -> list[int]:
        rows, node = [], self.parent
        while node is not None and node.depth > 0:
            rows.append(node.row)
            node = node.parent
        return rows[::-1]


@dataclass(frozen=True)
class _Entry:
    """A node of the unrolled tree: where a DAG node sits on one root path."""

    index: int  # in DraftTree.tokens (ROOT for the root)
    node: _Node
    depth: int  # on this path (1 = a child of the root)
    path: frozenset  # ids of the DAG nodes on this path, its own included: never linked to
    suffix: tuple[int, ...]  # the path's last merge_context + 1 tokens, ending with its own


class _Builder:
    """Grows one draft tree: the DAG (nodes, merges) and its unrolled, budgeted tree."""

    def __init__(
        self, prefix: Sequence[int], tree: TreeParams, params: SamplingParams, seed: int, top_n: int, guide=None
    ):
        self.tree, self.params, self.seed, self.top_n = tree, params, seed, top_n
        self.guide = guide  # structured output: each row masked by its own path (specdec.grammar.Guide)
        self.length = len(prefix)  # L: the root's children sit at absolute index L
        self.keep = tree.merge_context + 1  # tokens that must match for a merge (0: no merging)
        self.root = _Node(0, prefix[-1], 0, None, row=self.length - 1)
        self.next_id = 1
        self.by_key: dict[tuple[int, ...], list[_Node]] = {}  # merge key -> DAG nodes, oldest first
        self.merged = 0
        self.saved_rows = 0  # tree nodes expanded whose DAG node another path had computed
        self.saved_forwards = 0  # levels whose every node was computed already: no draft forward
        self.budget = tree.max_nodes  # tree nodes still allowed
        self.seconds = 0.0
        # the unrolled tree, as DraftTree fields
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.proposals: list[SparseDist] = []
        self.proposal_ids: list[int] = []
        self.root_proposal = -1

    def root_entry(self, prefix: Sequence[int]) -> _Entry:
        return _Entry(ROOT, self.root, 0, frozenset({self.root.id}), tuple(prefix[-self.keep :]) if self.keep else ())

    def compute(self, session: ModelSession, frontier: list[_Entry]) -> None:
        """One draft forward for the frontier's DAG nodes that have no logits yet; only the
        first `budget` frontier nodes can still get a child, so only those run."""
        if frontier[0].index == ROOT:  # the root's logits come with the committed sequence's forward
            return
        live = frontier[: self.budget]
        todo = list({id(e.node): e.node for e in live if e.node.logits is None}.values())
        self.saved_rows += len(live) - len(todo)
        if not todo:
            self.saved_forwards += 1
            return
        out = append_tree(
            session, self.length, [n.token for n in todo], [n.depth for n in todo], [n.ancestor_rows() for n in todo]
        )
        self.seconds += out.seconds
        if self.guide is not None:
            self.guide.mask_paths(out.logits, session.tokens[: self.length], [n.path_tokens() for n in todo])
        first_row = len(session.tokens) - len(todo)
        for i, node in enumerate(todo):
            node.row, node.logits = first_row + i, out.logits[i]

    def expand(self, frontier: list[_Entry]) -> list[_Entry]:
        """Give each frontier tree node its children, in order, within the node budget;
        return the next frontier (the children that are not leaves)."""
        next_frontier = []
        for entry in frontier:
            node = entry.node
            if node.logits is None:  # past the budget
                continue
            if node.q_full is None:
                self.propose(node)
            count = min(node.n_children, self.budget)
            if count == 0:
                continue
            self.budget -= count
            if entry.index == ROOT:
                self.root_proposal = self.proposal_id(node)
            else:
                self.proposal_ids[entry.index] = self.proposal_id(node)
            drawn: list[int] = []
            for i in range(count):
                token = self.draw(entry, drawn)
                drawn.append(token)
                suffix = (entry.suffix + (token,))[-self.keep :] if self.keep else ()
                kid = self.link(entry, token, suffix)
                self.tokens.append(token)
                self.parents.append(entry.index)
                self.proposal_ids.append(-1)
                if entry.depth + 1 < self.tree.depth and float(node.q_full[token]) >= self.tree.prob_threshold:
                    index = len(self.tokens) - 1
                    next_frontier.append(_Entry(index, kid, entry.depth + 1, entry.path | {kid.id}, suffix))
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

    def draw(self, entry: _Entry, drawn: list[int]) -> int:
        """The tree node's next child: greedy the next best token; sampled a draw from the
        proposal without the siblings drawn so far, on this tree node's own RNG branch."""
        node = entry.node
        if self.params.greedy:
            return node.ranked[len(drawn)]
        q = without(node.proposal, drawn)
        key = branch(entry.index + 1, len(drawn))
        return int(q.token_ids[rng.sample(q.probs, self.seed, rng.Stream.DRAFT, self.length + entry.depth, key)])

    def link(self, entry: _Entry, token: int, key: tuple[int, ...]) -> _Node:
        """The DAG node for a drawn child: an existing node off this path whose token and
        merge_context preceding tokens match (merged), else a new one."""
        if self.keep and len(key) == self.keep:
            for node in self.by_key.get(key, ()):
                if node.id not in entry.path:
                    self.merged += 1
                    return node
        parent = entry.node
        node = _Node(self.next_id, token, parent.depth + 1, parent)
        self.next_id += 1
        if self.keep:
            self.by_key.setdefault(key, []).append(node)
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
            self.seconds, self.saved_rows, self.saved_forwards,
        )


def draft_tree(
    session: ModelSession,
    start: int,
    tokens: Sequence[int],  # the committed sequence is session.tokens[:start] + tokens
    tree: TreeParams,
    params: SamplingParams,
    seed: int,
    top_n: int = 64,
    guide=None,  # structured output (specdec.grammar.Guide)
) -> DraftTree:
    """Draft one GSD tree after the committed sequence; the session ends holding exactly
    that sequence (the tree rows are dropped: the next round re-feeds accepted tokens)."""
    out = session.forward(start, tokens, 1)
    if guide is not None:
        guide.mask_chain(out.logits[-1:], session.tokens)
    b = _Builder(session.tokens, tree, params, seed, top_n, guide)
    b.root.logits, b.seconds = out.logits[-1], out.seconds
    try:
        frontier = [b.root_entry(session.tokens)]  # breadth-first
        while frontier and b.budget > 0:  # one level per pass: at most one draft forward
            b.compute(session, frontier)
            frontier = b.expand(frontier)
        return b.result()
    finally:
        session.crop(b.length)
