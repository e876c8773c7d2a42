"""Counter-based randomness: every random draw is keyed by (request seed, stream, position).

A keyed draw does not depend on how many draws came before it, on which worker
makes it, or on whether that worker restarted in between. So a seeded sampled
request is reproducible across transports, batch neighbours and failovers, and no
generator state ever has to cross the network.

Why this stays lossless: a key is consumed for a decision at most once before its
position is committed (a rejected round discards later draws without having used
them), so every committed decision sees fresh independent uniforms.
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
    """One token from [V] probs, keyed."""
    g = generator(seed, stream, position, branch)
    return int(torch.multinomial(probs.float(), 1, generator=g))


def fresh_seed() -> int:
    """A seed for requests that gave none (reported back so the run can be replayed)."""
    return int.from_bytes(os.urandom(8), "little") >> 1
