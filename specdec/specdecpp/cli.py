"""`specdec train-head`: the command. Registered in specdec/cli.py as
`app.command("train-head")(train_head)`; torch is imported only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

DEFAULT_PROMPTS = Path(__file__).with_name("prompts.jsonl")


def train_head(
    preset: str = typer.Option("qwen-coder", help="Model pair: qwen-coder (the real pair) or tiny (seconds)."),
    prompts: Path = typer.Option(DEFAULT_PROMPTS, help="Prompts, jsonl lines {\"kind\", \"prompt\"}."),
    out: Optional[Path] = typer.Option(None, help="Folder for the head, its report and the data cache "
                                                  "(default ~/.cache/specdec/heads/PRESET)."),
    limit: Optional[int] = typer.Option(None, help="Use the first N prompts."),
    max_new_tokens: int = typer.Option(128, help="Cap on each target response."),
    dtype: str = typer.Option("float32", help="float32 | bfloat16: the models' dtype while making data; serve the "
                                             "draft in the same one (float32 is serving's default)."),
    chat: Optional[bool] = typer.Option(None, "--chat/--no-chat", help="Chat template (default: when the "
                                                                       "tokenizer has one)."),
    label: str = typer.Option("sampled", help="sampled (min(1, p/q) of a draft sample, the paper's) | expected "
                                              "(1 - TV(p, q), its mean over the draft's proposal) | greedy (argmax "
                                              "agreement)."),
    reject_weight: float = typer.Option(6.0, help="Weight of the reject class in the cross-entropy."),
    mix_prob: float = typer.Option(0.15, help="Share of positions where the target's token is swapped in (no loss)."),
    num_layers: int = typer.Option(3, help="Residual blocks before the output layer."),
    epochs: int = typer.Option(30, help="Passes over the training positions at most (the best validation epoch is "
                                        "kept; 10 without improvement stop early)."),
    batch_size: int = typer.Option(256, help="Positions per optimiser step."),
    lr: float = typer.Option(1e-3, help="AdamW learning rate (cosine decay)."),
    val_fraction: float = typer.Option(0.2, help="Share of the prompts held out for validation."),
    seed: int = typer.Option(0, help="Seed of the draft samples, the swaps, the split and the init."),
    gen_batch_size: int = typer.Option(32, help="Prompts per batch while generating target responses."),
    threads: Optional[int] = typer.Option(None, help="torch threads (default: torch's choice)."),
):
    """Train SpecDec++'s acceptance head for a preset's draft; writes head.safetensors, head.json,
    calibration.md and calibration.png to OUT (data cached in OUT/cache: reruns are fast)."""
    import torch

    from specdec.specdecpp.train import TrainConfig, calibration_markdown, train

    if threads:
        torch.set_num_threads(threads)
    cfg = TrainConfig(
        preset=preset, prompts=prompts, out=out or Path("~/.cache/specdec/heads") / preset, limit=limit,
        max_new_tokens=max_new_tokens, dtype=dtype, chat=chat, mix_prob=mix_prob, label=label,
        reject_weight=reject_weight, num_layers=num_layers, epochs=epochs, batch_size=batch_size, lr=lr,
        val_fraction=val_fraction, seed=seed, gen_batch_size=gen_batch_size,
    )
    try:
        r = train(cfg)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo(f"positions: {r.n_train} train, {r.n_val} validation ({r.n_prompts} prompts, {r.masked} swapped "
               "in and masked)")
    typer.echo(f"weighted CE: validation {r.initial_val_loss:.4f} at start -> {r.val_loss:.4f} (epoch "
               f"{r.best_epoch}), train {r.train_loss:.4f}; validation KL {r.val_kl:.4f}")
    typer.echo(f"ECE: {r.ece:.3f} raw, {r.ece_reweighted:.3f} with the reject weight undone")
    typer.echo(calibration_markdown(r.calibration, label))
    typer.echo("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in r.seconds.items()))
    typer.echo(f"wrote {r.head_dir}/head.safetensors, head.json, calibration.md, calibration.png")
