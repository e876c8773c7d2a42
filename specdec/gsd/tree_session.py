"""Tree attention on a `ModelSession`: run many branches in one forward, keep one.

A tree forward is a `ModelSession.run_rows` call: explicit position ids and which cached
and new rows each new row sees. Run alone, the model gets an explicit 4D additive mask
`[1, 1, new rows, cached + new rows]`; on a worker with `--max-batch`, the session's
batching runner merges it with other sessions' forwards (its visibility right-aligned
in the merged mask, specdec/runtime/batching.py) and settles the cost budget for the
merged forward, as for any other forward. Transformers (5.x,
`masking_utils.create_causal_mask`) passes a 4D mask through untouched, and both the
`sdpa` and `eager` attention add it to the scores; other attention kernels (flash)
ignore custom masks, so they are refused.
A tree row at depth d after a committed sequence of length L sits at position
L - 1 + d and sees the committed rows, its ancestors' rows and itself.

`session.tokens` stays the truth of what is cached: a tree row is recorded as
TREE_ROW, which matches no token, so a later `session.forward` never reuses it.
"""

from __future__ import annotations

from typing import Sequence

import torch

from specdec.core.sequences import common_prefix
from specdec.core.tree import ROOT
from specdec.runtime.session import ForwardResult, ModelSession, SessionStateLost

TREE_ROW = -1  # session.tokens entry of a cached row that is not on the linear sequence
# A target call whose uncached committed tail is longer than this prefills it first
# (plain causal attention), so the tree mask never grows to [prompt, prompt].
FOLD_LIMIT = 32
_MASKABLE = ("sdpa", "eager")


def linear_length(session: ModelSession) -> int:
    """Cached tokens before the first tree row."""
    try:
        return session.tokens.index(TREE_ROW)
    except ValueError:
        return len(session.tokens)


def check_tree_attention(model: torch.nn.Module) -> None:
    impl = getattr(model.config, "_attn_implementation", None)
    if impl not in _MASKABLE:
        raise ValueError(
            f"GSD needs an attention that honours a custom 4D mask ({' or '.join(_MASKABLE)}), "
            f"the model uses {impl!r}: load it with attn_implementation='sdpa'"
        )


def visibility(
    base: int, sees_prefix: Sequence[int], sees_rows: Sequence[Sequence[int]]
) -> torch.Tensor:
    """bool [m, base + m]: new row i (absolute row base + i) sees cached rows
    [0, sees_prefix[i]), the rows sees_rows[i] (absolute) and itself."""
    m = len(sees_prefix)
    cols = torch.arange(base + m)
    allowed = cols[None, :] < torch.tensor(list(sees_prefix), dtype=torch.long)[:, None]  # [m, base + m]
    allowed[torch.arange(m), base + torch.arange(m)] = True
    rows = [i for i, extra in enumerate(sees_rows) for _ in extra]
    if rows:
        allowed[torch.tensor(rows), torch.tensor([r for extra in sees_rows for r in extra])] = True
    return allowed


def forward_rows(
    session: ModelSession,
    tokens: Sequence[int],  # [m] appended after the cached rows
    positions: Sequence[int],  # [m] position ids
    sees_prefix: Sequence[int],  # [m] row i sees cached rows [0, sees_prefix[i])...
    sees_rows: Sequence[Sequence[int]],  # [m] ...and these rows (absolute), and itself
    record: Sequence[int],  # [m] what session.tokens records for each row
    n_logits: int,
) -> ForwardResult:
    """One forward appending `tokens` to the session's cache under a custom mask: through
    the session's batching runner when it has one (merged, the budget the runner's), else
    alone (the session's budget settled as for `session.forward`)."""
    check_tree_attention(session.model)
    visible = visibility(len(session.tokens), sees_prefix, sees_rows)
    out = session.run_rows(tokens, n_logits, positions, visible)
    session.tokens.extend(record)
    session.forget_row()  # tree rows are not the linear sequence: no kept row
    return out


def append_tree(
    session: ModelSession,
    prefix_len: int,  # the committed sequence: session.tokens[:prefix_len]
    tokens: Sequence[int],  # [m] tree nodes to run, whose ancestors are already cached
    depths: Sequence[int],  # [m] depth of each (1 = a child of the last committed token)
    ancestor_rows: Sequence[Sequence[int]],  # [m] cache rows of each node's tree ancestors
) -> ForwardResult:
    """The draft's per-level forward: logits [m, V] of m tree nodes, one per node."""
    m = len(tokens)
    return forward_rows(
        session, tokens, [prefix_len - 1 + d for d in depths], [prefix_len] * m, ancestor_rows, [TREE_ROW] * m, m
    )


def forward_tree(
    session: ModelSession,
    start: int,
    tokens: Sequence[int],  # the committed sequence is session.tokens[:start] + tokens
    tree_tokens: Sequence[int],  # [n]
    tree_parents: Sequence[int],  # [n] parent index in tree_tokens, ROOT = the last committed token
) -> ForwardResult:
    """The target's forward: make the session hold the committed sequence, then run the
    tree after it. Logits [n + 1, V]: the last committed position, then each node."""
    if start > linear_length(session):
        raise SessionStateLost(f"session holds {linear_length(session)} tokens, caller assumed {start}")
    total = start + len(tokens)
    if total < 1:
        raise ValueError("the committed sequence is empty")
    sequence = session.tokens[:start] + list(tokens)
    reuse = min(start + common_prefix(session.tokens[start:], tokens), total - 1)
    session.crop(reuse)
    seconds = 0.0
    if total - reuse > FOLD_LIMIT:  # a prompt: prefill all but its last token plainly
        seconds += session.forward(reuse, sequence[reuse:-1], 1).seconds
        reuse = total - 1
    fresh = sequence[reuse:]
    n = len(tree_tokens)
    depth, ancestors = _depths_and_ancestors(tree_parents)
    out = forward_rows(
        session,
        fresh + list(tree_tokens),
        list(range(reuse, total)) + [total - 1 + d for d in depth],
        list(range(reuse, total)) + [total] * n,
        [[] for _ in fresh] + [[total + a for a in anc] for anc in ancestors],
        fresh + [TREE_ROW] * n,
        n + 1,
    )
    return ForwardResult(out.logits, None, out.new_tokens, seconds + out.seconds)


@torch.inference_mode()
def keep_path(session: ModelSession, prefix_len: int, path: Sequence[int], path_tokens: Sequence[int]) -> None:
    """Keep the tree rows `prefix_len + path[i]` as rows `prefix_len + i`; drop the other
    tree rows. The session then holds the committed sequence plus the accepted tokens."""
    if any(t != TREE_ROW for t in session.tokens[prefix_len:]):
        raise ValueError("keep_path expects only tree rows after the prefix")
    if list(path) != list(range(len(path))):
        src = torch.tensor([prefix_len + r for r in path], dtype=torch.long)
        dst = slice(prefix_len, prefix_len + len(path))
        for layer in session.cache.layers:
            if getattr(layer, "is_sliding", False):
                raise ValueError("GSD cannot keep a tree path in a sliding-window cache")
            if not getattr(layer, "is_initialized", True):
                continue
            # gathered copy first, then written: a source row is never an earlier destination
            layer.keys[..., dst, :] = layer.keys[..., src.to(layer.keys.device), :]
            layer.values[..., dst, :] = layer.values[..., src.to(layer.values.device), :]
    session.tokens[prefix_len : prefix_len + len(path)] = list(path_tokens)
    session.crop(prefix_len + len(path))


def _depths_and_ancestors(parents: Sequence[int]) -> tuple[list[int], list[list[int]]]:
    depth: list[int] = []
    ancestors: list[list[int]] = []
    for i, parent in enumerate(parents):
        if not ROOT <= parent < i:
            raise ValueError(f"tree node {i} has parent {parent}: parents must come before their children")
        depth.append(1 if parent == ROOT else depth[parent] + 1)
        ancestors.append([] if parent == ROOT else ancestors[parent] + [parent])
    return depth, ancestors
