"""Train SpecDec++'s acceptance head on our own pair: data (specdec/specdecpp/data.py), a
weighted soft-label cross-entropy fit, a calibration report, and the saved head.

    from specdec.specdecpp.train import TrainConfig, train
    result = train(TrainConfig(preset="tiny", prompts=PROMPTS, out=Path("/tmp/head")))
    result.head_dir, result.val_loss, result.calibration

The command line is `specdec train-head` (specdec/specdecpp/cli.py).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from specdec.models import load_preset
from specdec.models.loading import DType, eos_token_ids_of
from specdec.specdecpp.data import (
    LABELS,
    Examples,
    build_examples,
    generate_responses,
    load_prompts,
)
from specdec.specdecpp.head import AcceptanceHead, draft_model_id, head_meta

log = logging.getLogger(__name__)

DEFAULT_PROMPTS = Path(__file__).with_name("prompts.jsonl")


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "qwen-coder"
    prompts: Path = DEFAULT_PROMPTS
    out: Path = Path("~/.cache/specdec/heads/qwen-coder")
    limit: int | None = None  # use the first N prompts
    max_new_tokens: int = 128  # target response cap
    # of both models while making data: serving's default (load_model, the workers), so the
    # head sees the hidden states it was trained on; the dtype lands in head.json (draft_dtype)
    dtype: str = DType.FLOAT32.value
    chat: bool | None = None  # None: the chat template when the tokenizer has one
    mix_prob: float = 0.15  # positions where the target's token is swapped in (no loss there)
    # the paper's label: the head reads the state after the token is fed, so it sees the
    # token it scores and can predict min(1, p/q) for that token, not only its mean over q
    # (`expected`, 1 - TV, which suited the earlier head that read the state before it)
    label: str = "sampled"  # sampled | expected | greedy (data.py)
    reject_weight: float = 6.0  # weight of the reject class in the cross-entropy
    num_layers: int = 3
    epochs: int = 30
    patience: int = 10  # stop after this many epochs without a better validation loss
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    val_fraction: float = 0.2  # of the prompts, held out whole
    seed: int = 0
    gen_batch_size: int = 32
    forward_batch_size: int = 4
    progress: bool = True

    def validate(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"label must be one of {', '.join(LABELS)}; got {self.label!r}")
        if not 0.0 <= self.mix_prob < 1.0:
            raise ValueError(f"mix_prob must be in [0, 1), got {self.mix_prob}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.reject_weight <= 0 or self.epochs < 1 or self.max_new_tokens < 1:
            raise ValueError("reject_weight, epochs and max_new_tokens must be positive")


@dataclass
class CalibrationBin:
    lo: float
    hi: float
    n: int
    predicted: float  # mean head output P(accept)
    reweighted: float  # the same, with the reject-class weight undone (see `unweight`)
    label: float  # mean training label
    expected: float  # mean 1 - TV(p, q): acceptance probability when sampling
    greedy: float  # share of positions where the draft's argmax is the target's


@dataclass
class TrainResult:
    head_dir: Path
    n_prompts: int
    n_train: int
    n_val: int
    masked: int
    initial_val_loss: float
    train_loss: float
    val_loss: float
    val_kl: float
    best_epoch: int
    ece: float
    ece_reweighted: float
    calibration: list[CalibrationBin]
    seconds: dict[str, float] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


# -- the fit ----------------------------------------------------------------------------


def weighted_soft_ce(logits: torch.Tensor, y: torch.Tensor, reject_weight: float) -> torch.Tensor:
    """Cross-entropy against soft labels y = P(accept), reject class weighted; normalised
    by the total weight as the reference implementation does. logits [n, 2], y [n]."""
    logp = logits.float().log_softmax(-1)
    w_reject = reject_weight * (1.0 - y)
    return -(w_reject * logp[:, 0] + y * logp[:, 1]).sum() / (w_reject + y).sum().clamp_min(1e-12)


def unweight(p: torch.Tensor, reject_weight: float) -> torch.Tensor:
    """The weighted loss is minimised at p = y / (y + w (1 - y)), not at y; invert that."""
    return reject_weight * p / (1.0 - p + reject_weight * p)


def unweight_inverse(y: torch.Tensor, reject_weight: float) -> torch.Tensor:
    """The weighted-optimal output for a true acceptance y (the inverse of `unweight`)."""
    y = y.clamp(1e-4, 1 - 1e-4)
    return y / (y + reject_weight * (1.0 - y))


def split_by_prompt(examples: Examples, val_fraction: float, seed: int) -> tuple[Examples, Examples]:
    groups = examples.group.unique()
    if len(groups) < 2:
        raise ValueError("need responses to at least 2 prompts to hold some out for validation")
    order = groups[torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed))]
    n_val = min(len(groups) - 1, max(1, round(val_fraction * len(groups))))
    is_val = torch.isin(examples.group, order[:n_val])
    return examples.subset(torch.nonzero(~is_val)[:, 0]), examples.subset(torch.nonzero(is_val)[:, 0])


def evaluate(head: AcceptanceHead, data: Examples, cfg: TrainConfig) -> dict:
    with torch.inference_mode():
        logits = head(data.features)
    y = data.labels[cfg.label]
    p = logits.softmax(-1)[:, 1].clamp(1e-6, 1 - 1e-6)
    yc = y.clamp(1e-6, 1 - 1e-6)
    kl = (yc * (yc / p).log() + (1 - yc) * ((1 - yc) / (1 - p)).log()).mean()
    return dict(loss=float(weighted_soft_ce(logits, y, cfg.reject_weight)), kl=float(kl))


def fit(train_set: Examples, val_set: Examples, cfg: TrainConfig) -> tuple[AcceptanceHead, list[dict], float]:
    """AdamW with a cosine schedule; returns the head of the best validation epoch, the
    per-epoch history and the validation loss before training."""
    torch.manual_seed(cfg.seed)
    head = AcceptanceHead(train_set.features.shape[1], cfg.num_layers)
    head.standardise(train_set.features)
    y = train_set.labels[cfg.label]
    p0 = float(unweight_inverse(y.mean(), cfg.reject_weight))  # start at the best constant
    with torch.no_grad():
        head.out.bias.copy_(torch.tensor([0.0, math.log(p0 / (1 - p0))]))
    initial = evaluate(head, val_set, cfg)["loss"]
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)
    best = (float("inf"), 0, None)
    history = []
    bar = tqdm(range(1, cfg.epochs + 1), desc="training head (epochs)", disable=not cfg.progress)
    for epoch in bar:
        head.train()
        total = 0.0
        for rows in torch.randperm(len(train_set), generator=gen).split(cfg.batch_size):
            loss = weighted_soft_ce(head(train_set.features[rows]), y[rows], cfg.reject_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(rows)
        head.eval()
        val = evaluate(head, val_set, cfg)
        history.append(dict(epoch=epoch, train_loss=total / len(train_set), val_loss=val["loss"], val_kl=val["kl"]))
        bar.set_postfix(train=f"{total / len(train_set):.4f}", val=f"{val['loss']:.4f}")
        if val["loss"] < best[0]:
            best = (val["loss"], epoch, {k: v.clone() for k, v in head.state_dict().items()})
        elif epoch - best[1] >= cfg.patience:
            break
    head.load_state_dict(best[2])
    return head.eval(), history, initial


# -- calibration ------------------------------------------------------------------------


def calibration(head: AcceptanceHead, data: Examples, cfg: TrainConfig, bins: int = 10) -> list[CalibrationBin]:
    """Validation positions binned by predicted P(accept): predicted vs observed."""
    p = head.p_accept(data.features)
    index = (p * bins).long().clamp(max=bins - 1)
    out = []
    for b in range(bins):
        rows = index == b
        if not rows.any():
            continue
        mean = lambda t: float(t[rows].mean())  # noqa: E731
        out.append(CalibrationBin(b / bins, (b + 1) / bins, int(rows.sum()), mean(p),
                                  mean(unweight(p, cfg.reject_weight)), mean(data.labels[cfg.label]),
                                  mean(data.labels["expected"]), mean(data.labels["greedy"])))
    return out


def expected_calibration_error(table: list[CalibrationBin], reweighted: bool = False) -> float:
    n = sum(b.n for b in table)
    return sum(b.n * abs((b.reweighted if reweighted else b.predicted) - b.label) for b in table) / max(n, 1)


def calibration_markdown(table: list[CalibrationBin], label: str) -> str:
    lines = [
        f"| predicted P(accept) | positions | mean predicted | reweighted | observed label ({label}) "
        "| 1 - TV (sampling) | greedy agreement |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for b in table:
        lines.append(f"| {b.lo:.1f}-{b.hi:.1f} | {b.n} | {b.predicted:.3f} | {b.reweighted:.3f} | {b.label:.3f} "
                     f"| {b.expected:.3f} | {b.greedy:.3f} |")
    return "\n".join(lines)


def plot_reliability(table: list[CalibrationBin], path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    ax.plot([b.predicted for b in table], [b.label for b in table], "o-", label=f"head output vs label ({label})")
    ax.plot([b.reweighted for b in table], [b.label for b in table], "s--", label="reject weight undone")
    ax.plot([b.predicted for b in table], [b.greedy for b in table], "^:", label="head output vs greedy agreement")
    ax.set_ylabel("observed acceptance")
    ax.set_title("Acceptance head reliability (validation prompts)")
    ax.legend(fontsize=8)
    hist.bar([(b.lo + b.hi) / 2 for b in table], [b.n for b in table], width=0.09)
    hist.set_xlabel("predicted P(accept)")
    hist.set_ylabel("positions")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # callable on its own, not only after head.save
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- the whole run ----------------------------------------------------------------------


def train(cfg: TrainConfig) -> TrainResult:
    """Make (or reuse) the data, fit, report calibration, save the head in `cfg.out`."""
    cfg.validate()
    out = Path(cfg.out).expanduser()
    cache = out / "cache"
    seconds = {}
    began = time.perf_counter()
    pair = load_preset(cfg.preset, seed=cfg.seed, dtype=cfg.dtype)
    chat = cfg.chat if cfg.chat is not None else bool(getattr(pair.tokenizer, "chat_template", None))
    prompts = load_prompts(cfg.prompts, cfg.limit)
    seconds["load"] = time.perf_counter() - began

    t = time.perf_counter()
    samples = generate_responses(pair.target, pair.tokenizer, prompts, chat=chat, max_new_tokens=cfg.max_new_tokens,
                                 eos_ids=eos_token_ids_of(pair.target, pair.tokenizer), cache_file=cache / "responses.jsonl",
                                 batch_size=cfg.gen_batch_size, progress=cfg.progress)
    seconds["responses"] = time.perf_counter() - t
    t = time.perf_counter()
    examples = build_examples(pair.draft, pair.target, samples, mix_prob=cfg.mix_prob, seed=cfg.seed,
                              cache_dir=cache, batch_size=cfg.forward_batch_size, progress=cfg.progress)
    seconds["examples"] = time.perf_counter() - t

    t = time.perf_counter()
    train_set, val_set = split_by_prompt(examples, cfg.val_fraction, cfg.seed)
    head, history, initial = fit(train_set, val_set, cfg)
    seconds["fit"] = time.perf_counter() - t
    best = min(history, key=lambda h: h["val_loss"])
    table = calibration(head, val_set, cfg)
    seconds["total"] = time.perf_counter() - began

    result = TrainResult(
        head_dir=out, n_prompts=len(prompts), n_train=len(train_set), n_val=len(val_set), masked=examples.masked,
        initial_val_loss=initial, train_loss=best["train_loss"], val_loss=best["val_loss"], val_kl=best["val_kl"],
        best_epoch=best["epoch"], ece=expected_calibration_error(table),
        ece_reweighted=expected_calibration_error(table, reweighted=True), calibration=table, seconds=seconds,
        history=history,
    )
    _write_outputs(head, pair.draft, pair.target, cfg, chat, result)
    return result


def _write_outputs(head, draft, target, cfg: TrainConfig, chat: bool, result: TrainResult) -> None:
    out = result.head_dir
    training = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k not in ("out", "progress")}
    evaluation = {k: getattr(result, k) for k in ("n_prompts", "n_train", "n_val", "masked", "initial_val_loss",
                                                  "train_loss", "val_loss", "val_kl", "best_epoch", "ece",
                                                  "ece_reweighted")}
    evaluation["calibration"] = [asdict(b) for b in result.calibration]
    meta = head_meta(draft, cfg.num_layers, target_model=draft_model_id(target), chat=chat, training=training,
                     eval=evaluation, seconds=result.seconds)
    head.save(out, meta)
    table = calibration_markdown(result.calibration, cfg.label)
    (out / "calibration.md").write_text(table + "\n")
    plot_reliability(result.calibration, out / "calibration.png", cfg.label)
