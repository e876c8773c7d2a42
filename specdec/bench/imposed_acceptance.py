"""A draft whose acceptance is imposed: EMULATED, and labelled so wherever it is used.

Random-initialised models of real sizes (specdec/models/qwen_sizes.py) cost what real ones
cost, but an independent random draft agrees with a random target almost never, so a bench
on them would measure speculation at acceptance ~0. What a draft contributes to speed is
its cost per forward and how often the target accepts its tokens; this keeps the first
real (the draft model's forward runs, whole, on its device) and imposes the second:

    after the draft's forward, each logits row that predicts position i is replaced by a
    point mass (logit +30, every other 0) on the target's greedy token at i with
    probability `p`, else on another token; the coin is keyed by (seed, i).

The target's greedy tokens come from a "script" per prompt: the prompt followed by the
target alone's greedy continuation (run first, as the bench's baseline is). A draft
session finds its script from its first forward (the prompt), kept on its KV cache
object, and each row's position from the forward's position ids (or the cache length),
so the imposed draft works under our sessions, GSD's tree rows and Hugging Face's
assisted generation alike. Where no script fits (an unknown prompt, a merged batch's
fresh cache) the draft's own logits pass through unchanged, and `misses` counts it.

What it is not: a model of a real draft's acceptance pattern. The coins are independent
per position (a real draft's acceptances cluster: easy stretches, hard tokens), and its
distribution is always confident (AdaEDL's entropy stop never fires; sampling is not
supported: greedy only). The rate to impose is a measured one: DEFAULT_ACCEPTANCE.
"""

from __future__ import annotations

from typing import Sequence

import torch

from specdec.core.rng import key

# The real pair's per-token acceptance: Qwen2.5-Coder 0.5B -> 1.5B, sequential fixed:4, tau
# 3.20 on real costs (BENCHMARKS.md §6a, 2026-12-02); with independent coins tau = (1 - p^5) /
# (1 - p) for k = 4, which gives p = 0.78.
DEFAULT_ACCEPTANCE = 0.78
CONFIDENT_LOGIT = 30.0  # softmax ~1 on the imposed token: greedy picks it, the entropy is ~0
_SCRIPT_ATTR = "_specdec_imposed_script"
_STREAM = 0x1A55  # keys the coins apart from the request streams of specdec.core.rng


class ImposedAcceptance:
    """Installed on a draft model (`install`), removed by `remove`; see the module docstring."""

    def __init__(self, p: float = DEFAULT_ACCEPTANCE, seed: int = 0):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"imposed acceptance must be in [0, 1], got {p}")
        self.p, self.seed = p, seed
        self.scripts: list[tuple[int, list[int]]] = []  # (prompt length, prompt + continuation)
        self.model: torch.nn.Module | None = None
        self.rows = 0  # logits rows replaced
        self.hits = 0  # ... by the target's token
        self.misses = 0  # rows left as the draft computed them (no script)

    def add_script(self, prompt_ids: Sequence[int], continuation: Sequence[int]) -> None:
        """The target alone's greedy `continuation` after `prompt_ids`."""
        prompt = [int(t) for t in prompt_ids]
        self.scripts = [(n, s) for n, s in self.scripts if s[:n] != prompt] + [
            (len(prompt), prompt + [int(t) for t in continuation])
        ]

    def hit(self, position: int) -> bool:
        """The keyed coin for the draft token at absolute `position`."""
        return key(self.seed, _STREAM, position) / float(1 << 63) < self.p

    def token_for(self, script: list[int], position: int, vocab: int) -> int | None:
        if position >= len(script):
            return None
        right = script[position]
        if self.hit(position):
            return right
        return (right + 1 + key(self.seed, _STREAM, position, 1) % (vocab - 1)) % vocab  # never `right`

    def install(self, model: torch.nn.Module) -> torch.nn.Module:
        forward = type(model).forward.__get__(model)  # the class's, whatever was installed before

        def imposed(*args, **kwargs):
            out = forward(*args, **kwargs)
            self._impose(out, args, kwargs)
            return out

        model.forward = imposed
        self.model = model
        return model

    def remove(self) -> None:
        if self.model is not None and "forward" in self.model.__dict__:
            del self.model.forward
        self.model = None

    def _script_of(self, cache, ids: torch.Tensor, cached: int) -> list[int] | None:
        script = getattr(cache, _SCRIPT_ATTR, None) if cache is not None else None
        if script is None and cached == 0 and ids.shape[0] == 1:
            fed = ids[0].tolist()  # a session's first forward: its prompt (and perhaps more)
            fits = [(n, s) for n, s in self.scripts if len(fed) >= n and s[: len(fed)] == fed[: len(s)]]
            script = max(fits)[1] if fits else None
            if script is not None and cache is not None:
                setattr(cache, _SCRIPT_ATTR, script)
        return script

    @torch.inference_mode()
    def _impose(self, out, args, kwargs) -> None:
        ids = args[0] if args else kwargs.get("input_ids")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        logits = out.logits
        if ids is None or logits is None:
            return
        n = logits.shape[1]
        self.rows += ids.shape[0] * n
        # the cache already holds this forward's rows: the prefix before it is its length minus them
        cached = cache.get_seq_length() - ids.shape[1] if cache is not None else 0
        script = self._script_of(cache, ids, cached) if ids.shape[0] == 1 else None
        if script is None:
            self.misses += ids.shape[0] * n
            return
        positions = kwargs.get("position_ids")
        if positions is not None:
            rows = positions[0, -n:].tolist()
        else:
            rows = list(range(cached + ids.shape[1] - n, cached + ids.shape[1]))
        vocab = logits.shape[-1]
        new = torch.zeros_like(logits)
        for r, position in enumerate(rows):  # row at position j predicts the token at j + 1
            token = self.token_for(script, position + 1, vocab)
            if token is None:
                new[0, r] = logits[0, r]
                self.misses += 1
                continue
            new[0, r, token] = CONFIDENT_LOGIT
            self.hits += int(token == script[position + 1])
        out.logits = new

    def stats(self) -> dict:
        return {"imposed_acceptance": self.p, "rows": self.rows, "rows_on_target_token": self.hits,
                "rows_passed_through": self.misses}
