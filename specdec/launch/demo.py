"""`specdec demo`: the product end to end in one command.

Fetches the model pair if needed, starts draft worker, target worker and coordinator
as three processes on 127.0.0.1, streams one answer through the client SDK in PEARL
mode, prints the text and its stats, and shuts everything down.
"""

from __future__ import annotations

import sys
import time
from typing import Optional

import typer

DEFAULT_PROMPT = "Write a Python function that checks whether a number is prime."


def demo(
    prompt: str = typer.Argument(DEFAULT_PROMPT, help="What to ask."),
    preset: str = typer.Option("qwen-coder", help="Model pair: qwen-coder (real, fetched once) | tiny."),
    mode: str = typer.Option("pearl", help="autoregressive | sequential | pearl"),
    policy: str = typer.Option("adaedl", help="fixed | heuristic | adaedl"),
    draft_length: Optional[int] = typer.Option(None, help="k_max / window (default: 4; for pearl the coordinator's "
                                                          "measured draft/target speed ratio)."),
    max_new_tokens: int = typer.Option(96, help="Tokens to generate at most."),
    dtype: str = typer.Option("bfloat16", help="Worker dtype: bfloat16 is faster on CPUs with AVX512-BF16 / AMX."),
):
    """Bring up the three services, answer PROMPT through the SDK, print stats, shut down."""
    from specdec.client import Client
    from specdec.launch.stack import LocalStack

    if preset == "qwen-coder":
        from specdec.models.fetch import fetch_pair

        fetch_pair(progress=lambda msg: typer.echo(msg, err=True))
    typer.echo(f"starting draft worker, target worker and coordinator ({preset}, {dtype}) on 127.0.0.1 ...", err=True)
    began = time.perf_counter()
    with LocalStack(preset=preset, dtype=dtype, startup_timeout_s=900.0) as stack:
        typer.echo(f"stack up in {time.perf_counter() - began:.0f}s; coordinator at {stack.address}", err=True)
        typer.echo(f"\n>>> {prompt}\n", err=True)
        with Client(stack.address, timeout=1800.0) as client:
            last = None
            for chunk in client.generate_stream(
                prompt, chat=True, mode=mode, policy=policy, draft_length=draft_length, max_new_tokens=max_new_tokens
            ):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                last = chunk
        s = last.stats
        typer.echo(
            f"\n\n[{last.finish_reason}] mode={mode} policy={policy} | {s['tokens']} tokens in {s['wall_s']:.1f}s "
            f"({s['tokens'] / max(s['wall_s'], 1e-9):.2f} tok/s) | rounds {s['rounds']} | accepted "
            f"{s['accepted_tokens']}/{s['draft_tokens']} ({s['acceptance_rate']:.0%}) | tau "
            f"{s['mean_acceptance_length']:.2f} | ttft {s['time_to_first_token_s']:.2f}s | draft compute "
            f"{s['draft_compute_s']:.1f}s, target compute {s['target_compute_s']:.1f}s",
            err=True,
        )
    typer.echo("stack stopped.", err=True)
