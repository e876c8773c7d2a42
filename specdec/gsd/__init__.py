"""GSD: graph-structured speculative decoding (docs/algorithms.md §5), made lossless.

- `tree`: the per-request `TreeParams` and the `DraftTree` that crosses the network;
- `tree_session`: tree-attention forwards on a `ModelSession` and keeping the accepted path;
- `drafting`: the draft builds a token DAG level by level and unrolls it into a tree;
- `verifying`: one target forward over the tree, then multi-candidate speculative sampling.

The tree types (`TreeParams`, `DraftTree`) are in specdec.core.tree: the request and the wire share them.
"""
