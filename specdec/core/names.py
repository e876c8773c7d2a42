"""The names a request chooses from, and their defaults: defined once, torch-free, so
the command lines (typer `Enum` choices), the coordinator's proto mapping and the core
request all agree."""

from __future__ import annotations

import enum


class Mode(str, enum.Enum):
    AUTOREGRESSIVE = "autoregressive"  # the target alone: the baseline, through the same code path
    SEQUENTIAL = "sequential"  # vanilla speculative decoding: draft, then verify
    PEARL = "pearl"  # drafting and verification overlapped (pre-/post-verify)
    GSD = "gsd"  # graph-structured drafts verified as a tree
    AUTO = "auto"  # sequential or PEARL, whichever the measured costs say pays (specdec/core/goodput.py)


class PolicyName(str, enum.Enum):
    FIXED = "fixed"
    HEURISTIC = "heuristic"
    ADAEDL = "adaedl"
    SPECDECPP = "specdecpp"
    AUTO = "auto"  # k in 0..k_max per round by expected goodput (0: the target alone)
    # AdaEDL's earlier rule, kept only to compare against (the bench): the entropy of the token
    # just drafted decides, so the uncertain token is still sent (docs/algorithms.md §2)
    ADAEDL_LATE = "adaedl_late"


class FinishReason(str, enum.Enum):
    STOP = "stop"  # EOS or a stop token
    LENGTH = "length"  # max_new_tokens or the model's context
    CANCELLED = "cancelled"


DEFAULT_MODE = Mode.AUTO  # what a request that names no mode runs: whatever the measured costs say pays
DEFAULT_POLICY = PolicyName.AUTO  # ... and no policy

# The flat keyword names of mode gsd's tree shape (SDK, engine, CLI) -> TreeParams fields
# (and the proto's TreeParams). One table, so every front end spells them alike.
TREE_KWARGS = {
    "tree_width": "width",
    "tree_depth": "depth",
    "tree_nodes": "max_nodes",
    "sibling_threshold": "sibling_threshold",
    "prob_threshold": "prob_threshold",
    "merge_context": "merge_context",
}


def tree_fields(**kwargs) -> dict:
    """{TreeParams field: value} of the tree keywords that are set (None: the default)."""
    unknown = set(kwargs) - set(TREE_KWARGS)
    if unknown:
        raise TypeError(f"unknown tree keywords {sorted(unknown)}: use {', '.join(TREE_KWARGS)}")
    return {TREE_KWARGS[k]: v for k, v in kwargs.items() if v is not None}
