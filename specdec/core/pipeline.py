"""The PEARL pipeline model: the speed-up PEARL, as `specdec.loop.pearl` runs it, reaches
for a measured acceptance and cost ratio when nothing else costs time (docs/algorithms.md §4).
The bench compares each PEARL row with it; policy auto estimates PEARL with it.

Time is counted in target passes (every pass costs 1, whatever its length: the flat
GPU-like regime); a draft step costs `c`. The model plays the same rules as the loop:
- the target starts with a pass over the prompt; after any rejection it at once runs a
  pass over the committed prefix alone (pre-verify), which leaves it a kept row;
- the draft drafts without pause while fewer than `window` tokens wait for the target,
  continuing the committed sequence, the window in flight and the pending tokens;
- when the target is free it takes every pending token: the first is judged against the
  kept row at once (no pass when rejected), the rest by one pass;
- a rejection discards the pending tokens and the draft's step in progress (the draft
  restarts when that step ends, as a real device finishes the kernel it runs);
- when no draft token can come (the length budget), the kept row gives the target's own token.

Acceptance is a two-state Markov chain fitted to the run's own verdicts: the chance
that a judged draft token is accepted right after a rejection (or at the start) and
right after an accepted token. Real drafts fail in streaks (after a recovered token the
draft is off track more often), which an i.i.d. `a` hides; both figures are reported.
The model ignores every per-call cost, so speed-up / model is the loop's efficiency.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Acceptance:
    after_reject: float  # P(accepted) of a judged draft token after a rejection or at the start
    after_accept: float  # P(accepted) after an accepted draft token

    @classmethod
    def fit(cls, verdicts: Iterable[Sequence[int]]) -> "Acceptance | None":
        """From one request's verdicts in call order, (drafted, accepted) per target call;
        a call judges its accepted tokens, then one rejected token if accepted < drafted."""
        counts = {True: [0, 0], False: [0, 0]}  # previous accepted? -> [accepted, judged]
        previous = False
        for drafted, accepted in verdicts:
            outcomes = [True] * accepted + ([False] if accepted < drafted else [])
            for ok in outcomes:
                counts[previous][0] += ok
                counts[previous][1] += 1
                previous = ok
        (ra, rn), (aa, an) = counts[False], counts[True]
        if rn == 0 and an == 0:
            return None
        iid = (ra + aa) / (rn + an)
        return cls(ra / rn if rn else iid, aa / an if an else iid)


def pearl_model(acceptance: Acceptance, c: float, window: int, tokens: int, episodes: int = 400,
                seed: int = 0, prefill: int = 1) -> float:
    """Mean over `episodes` of the target alone's time over PEARL's for `tokens` generated
    tokens: the speed-up. `prefill`: passes (and draft steps) the prompt costs under a
    chunked profile; the target alone takes prefill + tokens - 1 passes."""
    rnd = random.Random(seed)
    alone = prefill + tokens - 1
    return sum(alone / _episode(acceptance, c, max(1, window), tokens, rnd, prefill) for _ in range(episodes)) / episodes


@functools.lru_cache(maxsize=4096)
def _steady(a_r: float, a_a: float, c: float, window: int, tokens: int) -> tuple[float, float]:
    rnd = random.Random(0)
    passes = [0]
    elapsed = _episode(Acceptance(a_r, a_a), c, window, tokens, rnd, passes=passes)
    return tokens / elapsed, passes[0] / tokens


def steady_state(a_r: float, a_a: float, c: float, window: int, tokens: int = 600) -> tuple[float, float]:
    """(speed-up over the target alone, target passes per emitted token) of one long
    request: policy auto's estimate of PEARL (specdec/core/goodput.py). Inputs rounded to
    0.02 and cached, so a coordinator pays the ~1 ms simulation once per distinct point
    (600 tokens: within ~3% of a 2,000-token run)."""
    return _steady(_grid(a_r), _grid(a_a), max(0.02, _grid(c)), max(1, window), tokens)


def _grid(x: float) -> float:
    return round(round(x / 0.02) * 0.02, 2)


def _episode(acc: Acceptance, c: float, window: int, n: int, rnd: random.Random, prefill: int = 1,
             passes: list | None = None) -> float:
    t = 0.0
    committed = 0  # tokens emitted
    last_ok = False  # the Markov state: was the last judged draft token accepted?
    has_row = False
    pending = 0
    in_window = 0  # draft tokens in the target's pass, still to judge
    target_free_at: float | None = 0.0  # None: busy until pass_end
    pass_end = 0.0
    draft_next: float | None = prefill * c  # when the draft's step in progress ends (None: idle)
    first_pass = True

    def judge() -> bool:
        nonlocal last_ok
        last_ok = rnd.random() < (acc.after_accept if last_ok else acc.after_reject)
        return last_ok

    def may_draft() -> bool:
        return pending < window and n - committed - in_window - pending - 1 >= 1

    def restart(now: float) -> None:
        nonlocal pending, draft_next, has_row
        pending, has_row = 0, False
        step_end = draft_next if draft_next is not None and draft_next > now else now
        draft_next = step_end + c if n - committed - 1 >= 1 else None

    while committed < n:
        if target_free_at is not None:  # the target is idle at time t: what does it do?
            waiting = False
            if has_row and pending:
                pending -= 1
                if not judge():  # rejected against the kept row: no pass
                    committed += 1
                    restart(t)
                    continue
                committed += 1
                in_window, pending = pending, 0
            elif not has_row:
                in_window, pending = pending, 0  # a pre-verify pass (plus anything pending)
            elif draft_next is None:  # no draft token can come: the target's own token
                committed += 1
                has_row = False
                continue
            else:
                waiting = True  # for the draft's next token
            if not waiting:
                target_free_at, pass_end = None, t + (prefill if first_pass else 1.0)
                if passes is not None:
                    passes[0] += 1
                first_pass = False
                if draft_next is None and may_draft():
                    draft_next = t + c
        # the next event: a draft token or the end of the pass
        t_draft = draft_next if draft_next is not None else float("inf")
        t_pass = pass_end if target_free_at is None else float("inf")
        if t_draft == t_pass == float("inf"):
            break
        if t_draft < t_pass:
            t = t_draft
            pending += 1
            draft_next = t + c if may_draft() else None
            continue
        t = t_pass
        target_free_at = t
        accepted = 0
        rejected = False
        for _ in range(in_window):
            if judge():
                accepted += 1
            else:
                rejected = True
                break
        committed += accepted + int(rejected)
        in_window = 0
        if rejected:
            restart(t)
        else:
            has_row = True
            if draft_next is None and may_draft():
                draft_next = t + c
    return t
