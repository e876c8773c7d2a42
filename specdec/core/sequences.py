"""Token sequences: how much of one another two of them share."""

from __future__ import annotations

from typing import Sequence


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of `a` and `b`. The common case, one a
    prefix of the other (a session extended, a grammar state followed), is one C-level
    comparison; a mismatch is then found by a scan."""
    n = min(len(a), len(b))
    if list(a[:n]) == list(b[:n]):
        return n
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
