"""rng.py: keyed draws are reproducible, independent of order, distinct across keys."""

from specdec.core import rng


def test_same_key_same_draw_regardless_of_order():
    a = [rng.uniform(7, rng.Stream.ACCEPT, p) for p in range(50)]
    b = [rng.uniform(7, rng.Stream.ACCEPT, p) for p in reversed(range(50))][::-1]
    assert a == b


def test_streams_seeds_positions_and_branches_give_distinct_keys():
    keys = {
        rng.key(seed, stream, pos, branch)
        for seed in range(4)
        for stream in rng.Stream
        for pos in range(30)
        for branch in range(3)
    }
    assert len(keys) == 4 * len(rng.Stream) * 30 * 3


def test_uniforms_look_uniform():
    draws = [rng.uniform(123, rng.Stream.DRAFT, p) for p in range(4000)]
    assert 0.48 < sum(draws) / len(draws) < 0.52
    assert sum(d < 0.1 for d in draws) / len(draws) > 0.08


def test_fresh_seeds_are_in_range_and_differ():
    seeds = {rng.fresh_seed() for _ in range(10)}
    assert len(seeds) == 10 and all(0 <= s < 2**63 for s in seeds)
