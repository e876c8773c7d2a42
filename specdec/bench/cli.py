"""`specdec bench`: the command. Registered in specdec/cli.py as `app.command("bench")(bench)`.

Kept free of torch imports at module level so `specdec --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from specdec.bench import DEFAULT_PROMPTS


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def bench(
    preset: str = typer.Option("tiny", help="Model pair: tiny (random, in memory) or qwen-coder (the real pair)."),
    cost: str = typer.Option("gpu-like", help="real (this machine's compute) or gpu-like (the emulated headline "
                                              "profile, docs/benchmarking.md, regime 2)."),
    cost_profile: Optional[str] = typer.Option(None, help="Another named cost profile or a path to its JSON "
                                                          "(emulated regime; overrides --cost)."),
    modes: str = typer.Option("autoregressive,sequential,pearl", help="Comma-separated modes; the autoregressive "
                                                                      "baseline always runs."),
    policies: str = typer.Option("fixed:2,fixed:4,fixed:8,heuristic,adaedl",
                                 help="Comma-separated policies NAME[:K][@THRESHOLD]: fixed:K sets k (k_max for "
                                      "adaedl/specdecpp), a plain name uses --draft-length (auto: 8, specdecpp: "
                                      "20); specdecpp:8@0.5 sets the stop threshold; adaedl_late is AdaEDL's "
                                      "earlier one-token-late rule, to compare with adaedl."),
    draft_length: int = typer.Option(4, help="k for plain policy names (fixed k, heuristic start, adaedl k_max)."),
    max_new_tokens: int = typer.Option(64, help="Tokens per run (EOS is ignored, so exactly this many)."),
    prompts: Path = typer.Option(DEFAULT_PROMPTS, help="Prompt set, jsonl lines {\"kind\", \"prompt\"}."),
    kinds: Optional[str] = typer.Option(None, help="Keep only these kinds, e.g. code,prose (default: all)."),
    limit: Optional[int] = typer.Option(None, help="Use the first N prompts (after --kinds)."),
    repeats: int = typer.Option(1, help="Repetitions of the whole prompt set."),
    temperature: float = typer.Option(0.0, help="0 = greedy (output checked identical to the baseline)."),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16."),
    peer: bool = typer.Option(True, "--peer/--no-peer", help="Also run Hugging Face assisted generation."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Raw records + summary (default "
                                                                  "bench-results/PRESET-COST.json)."),
    table: Optional[Path] = typer.Option(None, help="Markdown tables (default: next to the JSON, .md)."),
    plot: Optional[Path] = typer.Option(None, help="PNG of speedup and tau (default: next to the JSON, .png)."),
    threads: Optional[int] = typer.Option(None, help="torch threads (default: 1 for tiny, whose models are too "
                                                     "small to gain from more; torch's choice otherwise)."),
    seed: int = typer.Option(0, help="Seed of the tiny pair and base of the per-request seeds."),
    chat: Optional[bool] = typer.Option(None, "--chat/--no-chat", help="Chat template (default: on for qwen-coder, "
                                                                       "off for tiny)."),
    warmup_tokens: int = typer.Option(16, help="Tokens of the one warm-up run per configuration."),
    transport: str = typer.Option("inprocess", help="inprocess (specdec.Engine in this process), grpc (the local "
                                                    "stack on loopback through specdec.client, the cost profile "
                                                    "applied in the workers) or both (interleaved per prompt, "
                                                    "with the transport overhead table)."),
    acceptance_head: Optional[Path] = typer.Option(None, help="SpecDec++ head folder (specdec train-head): needed "
                                                              "by policy specdecpp; loaded by the draft worker too."),
    tree_nodes: Optional[int] = typer.Option(None, help="Mode gsd: nodes per verified tree at most (default 64; "
                                                        "31 keeps a tree pass within one flat budget of 32 tokens)."),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N: where the target runs (and the draft, unless "
                                           "--draft-device); the gRPC transport's workers get it too."),
    draft_device: Optional[str] = typer.Option(None, help="Put the draft on another device than the target, e.g. "
                                                          "cuda:1 (default: --device)."),
    runtime: str = typer.Option("eager", help="eager | compiled: each decoder layer under torch.compile with dynamic "
                                              "shapes (specdec/runtime/compiled.py); both models, both transports."),
):
    """Run modes x policies against the target-alone baseline; print and save tables, JSON and a plot."""
    from specdec.bench import report
    from specdec.bench.runner import BenchSettings, run_bench

    if cost not in ("real", "gpu-like"):
        _fail(f"--cost must be real or gpu-like, got {cost!r} (other profiles: --cost-profile NAME_OR_PATH)")
    if cost_profile and cost == "real":
        _fail("--cost real and --cost-profile contradict each other: drop one")
    cost_name = cost_profile or cost
    settings = BenchSettings(
        preset=preset, cost=cost_name, modes=_split(modes), policies=_split(policies), draft_length=draft_length,
        max_new_tokens=max_new_tokens, prompts_path=str(prompts), kinds=_split(kinds or ""), limit=limit,
        repeats=repeats, temperature=temperature, dtype=dtype, peer=peer, threads=threads, seed=seed, chat=chat,
        warmup_tokens=warmup_tokens, transport=transport,
        acceptance_head=str(acceptance_head.expanduser()) if acceptance_head else None, tree_nodes=tree_nodes,
        device=device, draft_device=draft_device, runtime=runtime,
    )
    _check_devices(device, draft_device, runtime)
    if transport not in ("inprocess", "grpc", "both"):
        _fail(f"--transport must be inprocess, grpc or both, got {transport!r}")
    if repeats < 1 or max_new_tokens < 1 or (limit is not None and limit < 1):
        _fail("--repeats, --max-new-tokens and --limit must be >= 1")
    json_path = json_path or Path("bench-results") / f"{preset}-{Path(cost_name).stem}.json"
    table = table or json_path.with_suffix(".md")
    plot = plot or json_path.with_suffix(".png")
    try:
        raw = run_bench(settings, progress=lambda line: typer.echo(line, err=True))
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    summary = report.summarise(raw)
    text = report.markdown(raw, summary)
    report.write_json(json_path, raw, summary)
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(text)
    report.write_plot(plot, raw, summary)
    typer.echo(text)
    typer.echo(f"wrote {json_path}, {table}, {plot}", err=True)
    if summary["not_identical"]:
        typer.echo("!!! GREEDY OUTPUT DIFFERS FROM THE BASELINE in " + ", ".join(summary["not_identical"]) + " !!!",
                   err=True)
        raise typer.Exit(1)


def _check_devices(device: str, draft_device: str | None, runtime: str) -> None:
    from specdec.models.placement import DEVICE
    from specdec.runtime.compiled import RUNTIMES

    for flag, value in (("--device", device), ("--draft-device", draft_device)):
        if value is not None and not DEVICE.match(value):
            _fail(f"{flag} must be cpu, cuda or cuda:N, got {value!r}")
    if runtime not in RUNTIMES:
        _fail(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if any(v.startswith("cuda") for v in (device, draft_device or "")):
        import torch

        if not torch.cuda.is_available():
            _fail("a cuda device was asked for, but torch sees none (torch.cuda.is_available() is False)")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def bench_structured(
    preset: str = typer.Option("qwen-coder", help="Model pair: qwen-coder (the real pair) or tiny."),
    cost: str = typer.Option("gpu-like", help="A cost profile name or path (emulated), or real (this machine)."),
    dtype: str = typer.Option("float32", help="float32 | bfloat16 | float16."),
    configs: str = typer.Option(",".join(["sequential:adaedl", "sequential:fixed:4", "pearl:fixed:4", "gsd:-",
                                          "auto:auto"]), help="Comma-separated MODE:POLICY[:K] (gsd:- = defaults)."),
    max_new_tokens: int = typer.Option(128, help="Tokens at most per JSON document."),
    limit: Optional[int] = typer.Option(None, help="Use the first N of the 3 prompts."),
    json_path: Path = typer.Option(Path("bench-results/structured.json"), "--json", help="Raw records + summary; "
                                                                                      "the table goes next to it (.md)."),
):
    """Speculative decoding with a JSON schema vs the constrained target alone, and the grammar's cost per token."""
    from specdec.bench.structured import StructuredSettings, markdown, run_structured, write

    settings = StructuredSettings(preset=preset, cost=None if cost == "real" else cost, dtype=dtype,
                                  configs=_split(configs), max_new_tokens=max_new_tokens, limit=limit)
    result = run_structured(settings, progress=lambda line: typer.echo(line, err=True))
    table = write(result, json_path)
    typer.echo(markdown(result))
    typer.echo(f"wrote {json_path}, {table}", err=True)
    bad = [row["config"] for row in result["summary"] if not (row["identical"] and row["valid"])]
    if bad:
        typer.echo("!!! OUTPUT DIFFERS FROM THE CONSTRAINED TARGET ALONE OR IS INVALID in " + ", ".join(bad), err=True)
        raise typer.Exit(1)
