"""Training data for the acceptance head: target responses, then one labelled example
per draft position (SpecDec++, docs/algorithms.md §3), both cached on disk.

For a prompt with target response r (greedy, chat template):
1. The frozen draft runs teacher-forced over prompt + r; at each response position t it
   samples a draft token x_t ~ q(. | r_<t) (seeded, temperature 1).
2. The mixed sequence z takes z_t = x_t, except that with probability `mix_prob` (0.15)
   the target's own token r_t is swapped in; those positions get no loss (no draft
   token is there). Like the paper this keeps z close to what the target writes, with
   the draft's tokens in it, as a draft window sees it at serving time.
3. One draft forward over prompt + z gives the feature h_t: the last hidden state at the
   position whose INPUT is z_t, i.e. the state after z_t is fed. That is exactly the
   `out.hidden[-1]` drafting.py hands the head for z_t (the forward that feeds a draft
   token), so serving sees what training saw, and the head sees the token it judges, as
   in the paper. The same forward gives q'_t at the position that PRODUCES z_t (one
   earlier); one target forward gives p'_t there.
4. Labels for z_t, all from the context that produced it (fp32, temperature 1):
   - sampled:  min(1, p'(z_t) / q'(z_t))         the paper's soft label (the default)
   - expected: sum_v min(p'(v), q'(v)) = 1 - TV   its mean over the draft's proposal
   - greedy:   argmax p' == argmax q'             acceptance when decoding greedily
   z_t was sampled under r's context, not z's; where earlier tokens differ this is a
   small bias in `sampled` only (`expected` has none): a knowing simplification that
   saves a sequential draft pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from specdec.models.text import encode_prompt
from specdec.specdecpp.head import draft_model_id

log = logging.getLogger(__name__)

LABELS = ("sampled", "expected", "greedy")
# Part of the examples cache key: "after-token" = h_t is the state whose input is z_t (the
# earlier data used the state before it, and must not be reused).
FEATURE_POSITION = "after-token"


@dataclass(frozen=True)
class Sample:
    prompt: str
    prompt_ids: list[int]
    response_ids: list[int]  # the target's greedy response, EOS included when it ended


@dataclass
class Examples:
    """One row per unmasked draft position."""

    features: torch.Tensor  # [n, h] fp32 draft hidden state whose input is the token
    labels: dict[str, torch.Tensor]  # name (LABELS) -> [n] fp32 in [0, 1]
    group: torch.Tensor  # [n] int64 index of the prompt (train/val split by prompt)
    masked: int = 0  # positions dropped because the target's token was swapped in

    def __len__(self) -> int:
        return self.features.shape[0]

    def subset(self, rows: torch.Tensor) -> "Examples":
        return Examples(self.features[rows], {k: v[rows] for k, v in self.labels.items()}, self.group[rows])


def load_prompts(path: str | Path, limit: int | None = None) -> list[str]:
    """A jsonl file of {"prompt": ..., "kind": ...} lines (or plain text, one per line)."""
    prompts = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            prompts.append(json.loads(line)["prompt"] if line.lstrip().startswith("{") else line)
    if not prompts:
        raise ValueError(f"{path} holds no prompts: give a jsonl file of {{\"prompt\": ...}} lines")
    return prompts[:limit] if limit else prompts


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# -- 1. target responses --------------------------------------------------------------


class _Ticks(StoppingCriteria):
    """Advances a progress bar once per generated step; never stops anything."""

    def __init__(self, bar: tqdm):
        self.bar, self.steps = bar, 0

    def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
        self.bar.update(1)
        self.steps += 1
        return torch.zeros(input_ids.shape[0], dtype=torch.bool)


def generate_responses(target, tokenizer, prompts: Sequence[str], *, chat: bool, max_new_tokens: int,
                       eos_ids: Sequence[int], cache_file: Path, batch_size: int = 16,
                       progress: bool = True) -> list[Sample]:
    """The target's greedy responses, generated in left-padded batches and appended to
    `cache_file` (jsonl) so a rerun only generates what is missing.

    Batching with padding may change a near-tie greedy choice relative to unbatched
    decoding; the responses are training data, so that does not matter.
    """
    setting = dict(target=draft_model_id(target), dtype=str(next(target.parameters()).dtype), chat=chat,
                   max_new_tokens=max_new_tokens)
    key = _digest(setting)
    cached: dict[str, Sample] = {}
    if cache_file.exists():
        for line in cache_file.read_text().splitlines():
            row = json.loads(line)
            if row["key"] == key:
                cached[row["prompt"]] = Sample(row["prompt"], row["prompt_ids"], row["response_ids"])
    todo = sorted({p for p in prompts if p not in cached}, key=lambda p: len(encode_prompt(tokenizer, p, chat)))
    if todo:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=list(eos_ids),
                                  pad_token_id=pad)
        batches = -(-len(todo) // batch_size)
        bar = tqdm(total=batches * max_new_tokens, desc=f"target responses ({batches} batches)", unit="step",
                   disable=not progress)
        for i in range(0, len(todo), batch_size):
            batch = todo[i : i + batch_size]
            ids = [encode_prompt(tokenizer, p, chat) for p in batch]
            width = max(map(len, ids))
            inputs = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
            ticks = _Ticks(bar)
            with torch.inference_mode():
                out = target.generate(input_ids=inputs, attention_mask=mask, generation_config=config,
                                      stopping_criteria=StoppingCriteriaList([ticks]))
            bar.update(max(0, max_new_tokens - ticks.steps))  # the batch may have ended early at EOS
            with cache_file.open("a") as f:
                for prompt, prompt_ids, row in zip(batch, ids, out[:, width:].tolist()):
                    response = _cut_at_eos(row, eos_ids)
                    cached[prompt] = Sample(prompt, prompt_ids, response)
                    f.write(json.dumps(dict(key=key, prompt=prompt, prompt_ids=prompt_ids, response_ids=response,
                                            **setting)) + "\n")
        bar.close()
    return [cached[p] for p in prompts]


def _cut_at_eos(tokens: list[int], eos_ids: Sequence[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in eos_ids:
            return tokens[: i + 1]
    return tokens


# -- 2. labelled draft positions ------------------------------------------------------


def build_examples(draft, target, samples: Sequence[Sample], *, mix_prob: float, seed: int, cache_dir: Path,
                   batch_size: int = 4, progress: bool = True) -> Examples:
    """Features and labels for every response position (see the module docstring);
    cached in `cache_dir` under a key of everything they depend on."""
    key = _digest(FEATURE_POSITION, draft_model_id(draft), draft_model_id(target), str(next(draft.parameters()).dtype),
                  str(next(target.parameters()).dtype), mix_prob, seed,
                  [(s.prompt_ids, s.response_ids) for s in samples])
    path = cache_dir / f"examples-{key}.safetensors"
    if path.exists():
        t = load_file(str(path))
        labels = {name: t[f"label_{name}"] for name in LABELS}
        return Examples(t["features"], labels, t["group"], int(t["masked"]))
    rows: list[tuple[torch.Tensor, dict, torch.Tensor]] = []
    masked = 0
    order = [i for i in range(len(samples)) if samples[i].response_ids]
    for i in tqdm(range(0, len(order), batch_size), desc="draft/target passes (batches)", disable=not progress):
        chunk = order[i : i + batch_size]
        mixed, swapped = [], []
        gens = [torch.Generator().manual_seed(seed * 1_000_003 + idx) for idx in chunk]  # per prompt
        for idx, gen, x in zip(chunk, gens, _sample_drafts(draft, [samples[j] for j in chunk], gens)):
            r = torch.tensor(samples[idx].response_ids)
            swap = torch.rand(len(r), generator=gen) < mix_prob
            mixed.append(torch.where(swap, r, x).tolist())
            swapped.append(swap)
        prompts = [samples[j].prompt_ids for j in chunk]
        hidden, q_logits = _teacher_forced(draft, prompts, mixed, want_hidden=True)
        _, p_logits = _teacher_forced(target, prompts, mixed)
        for idx, z, swap, h, ql, pl in zip(chunk, mixed, swapped, hidden, q_logits, p_logits):
            keep = ~swap
            labels = _labels(torch.tensor(z)[keep], pl[keep], ql[keep])
            rows.append((h[keep], labels, torch.full((int(keep.sum()),), idx)))
            masked += int(swap.sum())
    features = torch.cat([r[0] for r in rows])
    labels = {name: torch.cat([r[1][name] for r in rows]) for name in LABELS}
    examples = Examples(features, labels, torch.cat([r[2] for r in rows]), masked)
    cache_dir.mkdir(parents=True, exist_ok=True)
    save_file({"features": features.contiguous(), "group": examples.group, "masked": torch.tensor(masked),
               **{f"label_{k}": v for k, v in labels.items()}}, str(path))
    return examples


def _teacher_forced(model, prompts: list[list[int]], responses: list[list[int]], want_hidden: bool = False):
    """One right-padded batch forward over prompt + response. Returns, per row, the
    [T, h] fp32 hidden states (or None) of the positions whose INPUTS are the T response
    tokens, and the [T, V] logits of the positions that PRODUCE them (one earlier: the
    last prompt token .. the second-to-last response token)."""
    seqs = [p + r for p, r in zip(prompts, responses)]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=want_hidden)
    hidden, logits = [], []
    for row, (p, r) in enumerate(zip(prompts, responses)):
        producing = slice(len(p) - 1, len(p) + len(r) - 1)
        fed = slice(len(p), len(p) + len(r))
        logits.append(out.logits[row, producing].float())
        hidden.append(out.hidden_states[-1][row, fed].float() if want_hidden else None)
    return hidden, logits


def _sample_drafts(draft, samples: Sequence[Sample], gens: Sequence[torch.Generator]) -> list[torch.Tensor]:
    """x_t ~ q(. | prompt, r_<t) at every response position; one generator per prompt."""
    _, logits = _teacher_forced(draft, [s.prompt_ids for s in samples], [s.response_ids for s in samples])
    return [torch.multinomial(lg.softmax(-1), 1, generator=g)[:, 0] for lg, g in zip(logits, gens)]


def _labels(tokens: torch.Tensor, p_logits: torch.Tensor, q_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """tokens [n], logits [n, V] (target p, draft q) -> the three labels, each [n]."""
    p, q = p_logits.softmax(-1), q_logits.softmax(-1)
    p_x = p.gather(-1, tokens[:, None])[:, 0]
    q_x = q.gather(-1, tokens[:, None])[:, 0]
    return {
        "sampled": (p_x / q_x.clamp_min(1e-30)).clamp(max=1.0),
        "expected": torch.minimum(p, q).sum(-1).clamp(0.0, 1.0),
        "greedy": (p.argmax(-1) == q.argmax(-1)).float(),
    }
