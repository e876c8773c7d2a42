"""Counter-based randomness: every random draw is keyed by (request seed, stream, position).

A keyed draw does not depend on how many draws came before it, on which worker
makes it, or on whether that worker restarted in between. So a seeded sampled
request is reproducible across transports, batch neighbours and failovers, and no
generator state ever has to cross the network.

Why this stays lossless: each committed decision uses its own keys, and whether a draw
is used never depends on its value (a rejected round discards later draws unused; a
bonus token drawn and dropped for a judged draft token decided nothing), so every
committed decision sees fresh independent uniforms.
"""

from __future__ import annotations

import enum
import os

import torch

_MASK = (1 << 64) - 1


class Stream(enum.IntEnum):
    """Independent random streams; each has its own keys."""

    DRAFT = 1  # the draft's token at a position
    ACCEPT = 2  # the uniform of the accept/reject test at a position
    RESIDUAL = 3  # the recovered or bonus token at a position


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def key(seed: int, stream: Stream, position: int, branch: int = 0) -> int:
    """A 63-bit key for one draw; `branch` separates siblings of a tree draft."""
    h = _splitmix64(seed & _MASK)
    for part in (int(stream), position, branch):
        h = _splitmix64(h ^ (part & _MASK))
    return h >> 1


def generator(seed: int, stream: Stream, position: int, branch: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(key(seed, stream, position, branch))


def uniform(seed: int, stream: Stream, position: int, branch: int = 0) -> float:
    return float(torch.rand((), generator=generator(seed, stream, position, branch)))


def sample(probs: torch.Tensor, seed: int, stream: Stream, position: int, branch: int = 0) -> int:
    """One token from [V] probs (any non-negative weights), keyed: the inverse CDF at one
    keyed uniform. The cumulative sum is float64, so a token's chance is its weight to
    within ~1e-16 of the total, and a zero weight is never picked. (torch.multinomial with
    a generator costs ~7 ms over a 150k vocabulary on one core; this ~0.5 ms.)"""
    cumulative = probs.double().cumsum(-1)
    total = float(cumulative[-1])
    if not total > 0.0:
        raise ValueError("cannot sample from an all-zero distribution")
    x = uniform(seed, stream, position, branch) * total
    index = int(torch.searchsorted(cumulative, torch.tensor([x], dtype=torch.float64), right=True))
    if index >= cumulative.shape[-1] or float(probs[index]) <= 0.0:  # x rounded onto the last edge
        index = int((probs > 0).nonzero()[-1])
    return index


def fresh_seed() -> int:
    """A seed for requests that gave none (reported back so the run can be replayed)."""
    return int.from_bytes(os.urandom(8), "little") >> 1
