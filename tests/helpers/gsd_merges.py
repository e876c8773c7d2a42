"""Merge rules applied after the fact to an unrolled draft tree, written independently of
specdec/gsd/drafting.py so tests can hold the drafter to them.

`reference_links`: GSD's rule (the reference's `check_repetition`): in creation
(breadth-first) order, a node whose token and `m` preceding tokens equal those of a node
created earlier anywhere in the graph, not on its own path, is linked to it. Applied to
our unrolled greedy tree it counts the links the drafter must have made.

`same_depth_links`: the rule this project shipped before (nodes at the same depth whose
token and `m` preceding tokens match), for the before/after comparison.
"""

from __future__ import annotations

from typing import Sequence

ROOT = -1


def _paths(tokens: Sequence[int], parents: Sequence[int], prefix: Sequence[int]) -> list[list[int]]:
    """[n] the token sequence from the committed prefix down to each node, inclusive."""
    out: list[list[int]] = []
    for i, parent in enumerate(parents):
        out.append((list(prefix) if parent == ROOT else out[parent]) + [tokens[i]])
    return out


def reference_links(tokens: Sequence[int], parents: Sequence[int], prefix: Sequence[int], m: int) -> int:
    paths = _paths(tokens, parents, prefix)
    created: dict[tuple, list[int]] = {}  # key -> tree nodes that became DAG nodes
    dag_of: list[int] = []  # tree node -> the tree node of its DAG node
    links = 0
    for i, parent in enumerate(parents):
        key = tuple(paths[i][-(m + 1):])
        on_path, a = set(), parent
        while a != ROOT:
            on_path.add(dag_of[a])
            a = parents[a]
        hit = next((u for u in created.get(key, ()) if u not in on_path), None)
        if hit is None:
            created.setdefault(key, []).append(i)
            dag_of.append(i)
        else:
            links += 1
            dag_of.append(hit)
    return links


def same_depth_links(tokens: Sequence[int], parents: Sequence[int], prefix: Sequence[int], m: int) -> int:
    paths = _paths(tokens, parents, prefix)
    seen: set = set()
    links = 0
    for path in paths:
        key = (len(path), tuple(path[-(m + 1):]))
        links += key in seen
        seen.add(key)
    return links
