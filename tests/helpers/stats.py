"""Chi-square goodness of fit with small-expectation bins pooled (shared by distribution tests)."""

from __future__ import annotations

from collections import Counter

import numpy as np
from scipy import stats


def chi_square_pvalue(samples, expected_probs: dict, min_expected: float = 5.0) -> float:
    """p-value that `samples` come from `expected_probs` (outcome -> probability).

    Outcomes with an expected count below `min_expected` are pooled into one bin, and
    any sample outside the support lands there too (so an impossible outcome counts).
    """
    n = len(samples)
    counts = Counter(samples)
    big = {o: p for o, p in expected_probs.items() if p * n >= min_expected}
    obs = [counts.get(o, 0) for o in big]
    exp = [p * n for p in big.values()]
    rest_obs = n - sum(obs)
    rest_exp = n - sum(exp)
    if rest_exp >= 1e-9 or rest_obs:
        obs.append(rest_obs)
        exp.append(max(rest_exp, 1e-9))
    exp = np.array(exp) * (n / sum(exp))  # exact totals for scipy
    return float(stats.chisquare(obs, exp).pvalue)


def position_pvalues(samples, joint: dict) -> list[float]:
    """p-values of `samples` (tuples of emitted tokens) against the exact `joint`
    {(x1, ..., xn): p}: all positions jointly, then each position on its own."""
    pvalues = [chi_square_pvalue([tuple(s) for s in samples], joint)]
    for i in range(len(next(iter(joint)))):
        marginal: dict = {}
        for outcome, p in joint.items():
            marginal[outcome[i]] = marginal.get(outcome[i], 0.0) + p
        pvalues.append(chi_square_pvalue([s[i] for s in samples], marginal))
    return pvalues
