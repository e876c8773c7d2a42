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
    mode: str = typer.Option("auto", help="auto | autoregressive | sequential | pearl (auto: what the measured "
                                          "costs say pays, the target alone included)"),
    policy: str = typer.Option("auto", help="auto | fixed | heuristic | adaedl"),
    draft_length: Optional[int] = typer.Option(None, help="k_max / window (default: 8 for auto, else 4; for pearl "
                                                          "the coordinator's measured draft/target speed ratio)."),
    max_new_tokens: int = typer.Option(96, help="Tokens to generate at most."),
    baseline_tokens: int = typer.Option(24, help="Tokens of the target-alone run whose rate is printed beside "
                                                 "the answer's (0: skip it)."),
    dtype: str = typer.Option("auto", help="auto | float32 | bfloat16 (auto: bfloat16 where a short measurement "
                                           "says it is faster on this machine)."),
):
    """Bring up the three services, answer PROMPT through the SDK, print stats next to the
    target alone's rate, shut down."""
    from specdec.client import Client
    from specdec.launch.cli import chosen_dtype
    from specdec.launch.stack import LocalStack

    if preset == "qwen-coder":
        from specdec.models.fetch import fetch_pair

        fetch_pair(progress=lambda msg: typer.echo(msg, err=True))
    dtype = chosen_dtype(dtype, preset, None)
    typer.echo(f"starting draft worker, target worker and coordinator ({preset}, {dtype}) on 127.0.0.1 ...", err=True)
    began = time.perf_counter()
    with LocalStack(preset=preset, dtype=dtype, startup_timeout_s=900.0) as stack:
        typer.echo(f"stack up in {time.perf_counter() - began:.0f}s; coordinator at {stack.address}", err=True)
        with Client(stack.address, timeout=1800.0) as client:
            alone = None
            if baseline_tokens > 0:  # also what the coordinator measures the target's pass from
                typer.echo(f"measuring the target alone ({baseline_tokens} tokens) ...", err=True)
                alone = client.complete(prompt, chat=True, mode="autoregressive", max_new_tokens=baseline_tokens,
                                        ignore_eos=True).stats
            typer.echo(f"\n>>> {prompt}\n", err=True)
            last = None
            for chunk in client.generate_stream(
                prompt, chat=True, mode=mode, policy=policy, draft_length=draft_length, max_new_tokens=max_new_tokens
            ):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                last = chunk
        s = last.stats
        ran = s["mode_run"] or mode
        auto_k = ", ".join(f"k={k}: {n}" for k, n in sorted(s["auto_k_rounds"].items()))
        typer.echo(
            f"\n\n[{last.finish_reason}] mode={mode} (ran {ran}) policy={policy}"
            f"{f' (rounds by k: {auto_k})' if auto_k else ''} | {s['tokens']} tokens in {s['wall_s']:.1f}s "
            f"({s['tokens'] / max(s['wall_s'], 1e-9):.2f} tok/s) | rounds {s['rounds']} | accepted "
            f"{s['accepted_tokens']}/{s['draft_tokens']} ({s['acceptance_rate']:.0%}) | tau "
            f"{s['mean_acceptance_length']:.2f} | ttft {s['time_to_first_token_s']:.2f}s | draft compute "
            f"{s['draft_compute_s']:.1f}s, target compute {s['target_compute_s']:.1f}s",
            err=True,
        )
        if alone is not None:  # decode rates, after the first token: the two runs' lengths differ, their prefill does not
            own = _decode_rate(s)
            base = _decode_rate(alone)
            typer.echo(f"decoding after the first token: target alone {base:.2f} tok/s | this answer {own:.2f} tok/s "
                       f"({own / base:.2f}x)", err=True)
    typer.echo("stack stopped.", err=True)


def _decode_rate(stats) -> float:
    return (stats["tokens"] - 1) / max(stats["wall_s"] - stats["time_to_first_token_s"], 1e-9)
