"""The embedded engine: the public Python API over the orchestration loop, in one process.

    from specdec import Engine
    engine = Engine.from_preset("tiny", seed=0)
    out = engine.generate("def add(a, b):", max_new_tokens=32, mode="pearl")
    out.text, out.stats.mean_acceptance_length
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from typing import Iterator, Sequence

import torch

from specdec.backend.local import LocalDraft, LocalTarget
from specdec.core.params import GenerationParams
from specdec.core.request import GenerationRequest, GenerationResult
from specdec.core.speed import SpeedRatio
from specdec.grammar import check_constraint, compiler_for
from specdec.loop.generate import generate as run_request
from specdec.models import DType, check_pair, load_preset
from specdec.models.loading import eos_token_ids_of
from specdec.models.placement import Placement
from specdec.models.text import TextStream, encode_messages, encode_prompt
from specdec.runtime.compiled import apply_runtime
from specdec.runtime.cost import CostProfile
from specdec.runtime.session import model_device


class Engine:
    def __init__(
        self,
        draft: torch.nn.Module | None,
        target: torch.nn.Module,
        tokenizer,
        *,
        cost: CostProfile | str | None = None,
        preset: str | None = None,
        eos_token_ids: Sequence[int] | None = None,
        acceptance_head=None,  # SpecDec++: an AcceptanceHead, or the folder of one (specdec.specdecpp.head.load_head)
        proposal_top_n: int = 64,
    ):
        if draft is not None:
            check_pair(draft, target)
        if isinstance(acceptance_head, (str, os.PathLike)):
            from specdec.specdecpp.head import load_head

            acceptance_head = load_head(acceptance_head, draft)
        self.draft, self.target, self.tokenizer = draft, target, tokenizer
        self.preset = preset
        self.cost = CostProfile.load(cost) if isinstance(cost, str) else cost
        self.eos_token_ids = list(eos_token_ids) if eos_token_ids is not None else eos_token_ids_of(target, tokenizer)
        self.context_length = int(getattr(target.config, "max_position_embeddings", 32768))
        self.vocab_size = int(target.config.vocab_size)
        self.speed = SpeedRatio()  # what this engine's requests measured: PEARL's default window
        # both models on one device and no cost profile giving each its own: PEARL's overlap splits it
        self.speed.shared_device = draft is not None and self.cost is None and model_device(draft) == model_device(target)
        budget = (lambda role: self.cost.budget(role, preset)) if self.cost else (lambda role: None)
        self.target_endpoint = LocalTarget(target, budget("target"), grammar=compiler_for(target, tokenizer))
        self.draft_endpoint = (
            LocalDraft(draft, budget("draft"), top_n=proposal_top_n, head=acceptance_head,
                       grammar=compiler_for(draft, tokenizer))
            if draft is not None else None
        )

    @classmethod
    def from_preset(
        cls, name: str = "qwen-coder", *, seed: int = 0, dtype: DType | str = "float32", device: str = "cpu",
        draft_device: str | None = None, runtime: str = "eager", **kwargs,
    ):
        """`device` (cpu | cuda | cuda:N) holds the target, and the draft unless `draft_device`
        puts it elsewhere; `runtime` eager | compiled (specdec/runtime/compiled.py)."""
        pair = load_preset(name, seed=seed, dtype=dtype, device=device)
        if draft_device and draft_device != device:
            pair.draft.to(Placement(draft_device).device)
        for model in (pair.draft, pair.target):
            apply_runtime(model, runtime)
        return cls(pair.draft, pair.target, pair.tokenizer, preset=name, **kwargs)

    # -- requests -----------------------------------------------------------------

    def make_request(self, prompt: str | Sequence[int], **params) -> GenerationRequest:
        """Tokenise and validate; raises ValueError naming the bad field. `params` are the
        fields of specdec.core.params.GenerationParams (max_new_tokens, temperature, top_k,
        top_p, seed, mode, policy, draft_length, threshold, ignore_eos, chat, and mode gsd's
        tree_width / tree_depth / tree_nodes / sibling_threshold / prob_threshold /
        merge_context); None or absent: the default."""
        settings = GenerationParams(**params)  # TypeError names an unknown keyword
        if settings.stop:
            raise ValueError("stop strings are applied to the text by the coordinator: use the client SDK")
        request = GenerationRequest.from_params(self.encode(prompt, chat=settings.chat), settings)
        request.validate(self.context_length, self.vocab_size)
        check_constraint(settings.response_format)
        return request

    def encode(self, prompt: str | Sequence[int] | Sequence[dict], chat: bool = False) -> list[int]:
        """Text, token ids, or a conversation ([{"role": ..., "content": ...}, ...], rendered
        with the tokenizer's chat template)."""
        if isinstance(prompt, str):
            return encode_prompt(self.tokenizer, prompt, chat)
        if prompt and isinstance(prompt[0], dict):
            return encode_messages(self.tokenizer, prompt)
        return [int(t) for t in prompt]

    async def agenerate(self, prompt, on_tokens=None, **kwargs) -> GenerationResult:
        request = self.make_request(prompt, **kwargs)
        result = await run_request(
            request, self.draft_endpoint, self.target_endpoint, self.eos_token_ids, self.context_length, on_tokens,
            speed=self.speed,
        )
        if self.tokenizer is not None:  # None: a token-id engine (prompts are ids; no text)
            result.text = self.tokenizer.decode(result.token_ids, skip_special_tokens=True)
        return result

    def generate(self, prompt, on_tokens=None, **kwargs) -> GenerationResult:
        """Generate to completion. `on_tokens(new_ids)` is called as tokens are committed."""
        return _run_sync(self.agenerate(prompt, on_tokens=on_tokens, **kwargs))

    def stream(self, prompt, **kwargs) -> Iterator[str]:
        """Yield text deltas as tokens are committed (detokenised incrementally)."""
        chunks: queue.Queue = queue.Queue()
        done = object()
        text = TextStream(self.tokenizer, self.encode(prompt, kwargs.get("chat", False)))

        def on_tokens(new):
            chunks.put(text.push(new)[0])

        def work():
            try:
                result = self.generate(prompt, on_tokens=on_tokens, **kwargs)
                chunks.put(text.finish())  # a held-back partial character, if any
                chunks.put(result)
            except BaseException as exc:
                chunks.put(exc)
            chunks.put(done)

        threading.Thread(target=work, daemon=True).start()
        while (item := chunks.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, GenerationResult):
                self.last_result = item
                continue
            if item:
                yield item


def _run_sync(coro):
    """asyncio.run, also from inside a running loop (notebooks): then on a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", _capture(coro)))
    t.start()
    t.join()
    if isinstance(box["r"], BaseException):
        raise box["r"]
    return box["r"]


def _capture(coro):
    try:
        return asyncio.run(coro)
    except BaseException as exc:
        return exc
