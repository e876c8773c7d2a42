"""How often GSD's drafts merge, and what merging saves, on real text (issue: GSD with a real graph).

For each prompt, greedy, default tree settings: the draft grows its trees round after round
(the target verifies each, so the drafts follow the target's own text), once with merging as
shipped (`--merge-context`, default 1) and once with merging off on the same committed text.
On the merge-off trees, GSD's reference rule (tests/helpers/gsd_merges.py: any depth, off the
node's own path, 0 or 1 preceding tokens) and the same-depth rule this project shipped before
(2 preceding tokens) count the links they would make: the same drafts, three rules.

    python scripts/gsd_merge_rate.py --preset qwen-coder --prompts 4 --tokens 32 --json bench-results/gsd-merges.json

`--shapes` instead measures what tree size pays: for each shape (`nodes=64,prob=0.1,merge=0`),
tau, the tree and the draft forwards per round, and the speed-up those counts give under the
GPU-like profile (a draft forward 8 ms, a target pass 30 ms per 32 tokens: a model of the
emulation from counts, not a timing; the bench times it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from specdec.core.sampling import SamplingParams
from specdec.core.tree import TreeParams
from specdec.gsd.drafting import draft_tree
from specdec.gsd.verifying import verify_draft_tree
from specdec.models.presets import load_preset
from specdec.models.text import encode_prompt
from specdec.runtime.session import ModelSession

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the rules live with the tests that hold the drafter to them
from tests.helpers.gsd_merges import reference_links, same_depth_links  # noqa: E402

PROMPTS = Path(__file__).resolve().parents[1] / "specdec" / "bench" / "prompts.jsonl"


def draft_forwards(tree, saved_forwards: int) -> int:
    """Draft forwards of a round: the committed sequence's, then one per level that had
    nodes to expand, less the levels every node of which was computed already."""
    depth = tree.depths()
    levels = max((depth[p] for p in tree.parents if p >= 0), default=0)
    return 1 + levels - saved_forwards


def gpu_like_speedup(rows: list[dict], draft_ms: float = 8.0, target_ms: float = 30.0, flat: int = 32) -> float:
    """Emitted tokens per ms over the target alone's (one pass per token), from the counts."""
    ms = sum(r["draft_forwards"] * draft_ms + target_ms * -(-(r["tree_nodes"] + 1) // flat) for r in rows)
    emitted = sum(r["accepted"] + 1 for r in rows)
    return (emitted / ms) * target_ms


def run_prompt(pair, ids: list[int], tokens: int, tree: TreeParams, compare: bool = True) -> dict:
    """Rounds of draft + verify until `tokens` are committed; per-round tree figures."""
    greedy = SamplingParams()
    off = dataclasses.replace(tree, merge_context=-1)
    draft, target = ModelSession(pair.draft), ModelSession(pair.target)
    out: list[int] = []
    rows = []
    while len(out) < tokens:
        seq = ids + out
        merged = draft_tree(draft, 0, seq, tree, greedy, seed=0)
        plain = draft_tree(draft, 0, seq, off, greedy, seed=0) if compare else merged
        verdict = verify_draft_tree(target, 0, seq, merged, greedy, seed=0).verdict
        rows.append(dict(
            tree_nodes=len(merged), dag_nodes=merged.dag_nodes, merged=merged.merged_nodes,
            saved_rows=merged.saved_rows, saved_forwards=merged.saved_forwards,
            reference_on_same=reference_links(merged.tokens, merged.parents, seq, tree.merge_context),
            plain_nodes=len(plain),
            plain_reference=reference_links(plain.tokens, plain.parents, seq, tree.merge_context),
            plain_reference_m0=reference_links(plain.tokens, plain.parents, seq, 0),
            plain_same_depth=same_depth_links(plain.tokens, plain.parents, seq, 2),
            accepted=verdict.accepted, draft_forwards=draft_forwards(merged, merged.saved_forwards),
        ))
        out += list(verdict.tokens) + [verdict.next_token]
    return dict(rounds=rows, tokens=out[:tokens])


def summarise(results: list[dict]) -> dict:
    rows = [r for res in results for r in res["rounds"]]
    total = {k: sum(r[k] for r in rows) for k in rows[0]}
    n = len(rows)
    return dict(
        rounds=n, tau=(sum(r["accepted"] for r in rows) + n) / n,
        merged_per_round=total["merged"] / n, merge_rate=total["merged"] / total["tree_nodes"],
        dag_per_round=total["dag_nodes"] / n, tree_per_round=total["tree_nodes"] / n,
        saved_rows_per_round=total["saved_rows"] / n, saved_forwards_per_round=total["saved_forwards"] / n,
        drafter_equals_reference=all(r["merged"] == r["reference_on_same"] for r in rows),
        plain_reference_rate=total["plain_reference"] / total["plain_nodes"],
        plain_reference_m0_rate=total["plain_reference_m0"] / total["plain_nodes"],
        plain_same_depth_rate=total["plain_same_depth"] / total["plain_nodes"],
        draft_forwards_per_round=total["draft_forwards"] / n, gpu_like_speedup_model=gpu_like_speedup(rows),
    )


def parse_shape(text: str) -> TreeParams:
    """`nodes=64,prob=0.1,merge=0,width=4,depth=8`: TreeParams with those fields changed."""
    names = dict(nodes="max_nodes", prob="prob_threshold", merge="merge_context", width="width", depth="depth",
                 sibling="sibling_threshold")
    fields = {}
    for part in filter(None, text.split(",")):
        key, value = part.split("=")
        fields[names[key]] = float(value) if key in ("prob", "sibling") else int(value)
    tree = TreeParams(**fields)
    tree.validate()
    return tree


def shapes_table(pair, prompts: list[list[int]], tokens: int, shapes: list[str]) -> tuple[str, dict]:
    lines = ["| shape | tree nodes / round | draft forwards / round | merged / round | rows saved / round | tau "
             "| GPU-like speed-up (model from counts) |", "|---|---|---|---|---|---|---|"]
    out = {}
    for text in shapes:
        s = summarise([run_prompt(pair, ids, tokens, parse_shape(text), compare=False) for ids in prompts])
        out[text] = s
        lines.append(f"| {text} | {s['tree_per_round']:.1f} | {s['draft_forwards_per_round']:.1f} "
                     f"| {s['merged_per_round']:.1f} | {s['saved_rows_per_round']:.1f} | {s['tau']:.2f} "
                     f"| {s['gpu_like_speedup_model']:.2f}x |")
    return "\n".join(lines), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="qwen-coder")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--merge-context", type=int, default=TreeParams().merge_context)
    ap.add_argument("--shapes", help="semicolon-separated tree shapes to compare (see above) instead")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    pair = load_preset(args.preset, dtype=args.dtype)
    tree = TreeParams(merge_context=args.merge_context)
    prompts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines() if line.strip()]
    began = time.time()
    if args.shapes:
        ids = [encode_prompt(pair.tokenizer, p, True) for p in prompts[: args.prompts]]
        table, out = shapes_table(pair, ids, args.tokens, args.shapes.split(";"))
        print(table + f"\n\n{time.time() - began:.0f} s.")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(dict(settings=vars(args) | {"json": str(args.json)}, shapes=out), indent=1))
        return
    results = []
    for prompt in prompts[: args.prompts]:
        results.append(run_prompt(pair, encode_prompt(pair.tokenizer, prompt, True), args.tokens, tree))
    s = summarise(results)
    print(f"| rounds | tree nodes / round | DAG nodes / round | merged / round (share of tree nodes) "
          f"| draft rows saved / round | draft forwards saved / round | tau |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {s['rounds']} | {s['tree_per_round']:.1f} | {s['dag_per_round']:.1f} | {s['merged_per_round']:.1f} "
          f"({100 * s['merge_rate']:.1f}%) | {s['saved_rows_per_round']:.1f} | {s['saved_forwards_per_round']:.2f} "
          f"| {s['tau']:.2f} |")
    print(f"\nOn the same drafts with merging off (share of tree nodes a rule links): GSD's rule with "
          f"{args.merge_context} preceding token(s) {100 * s['plain_reference_rate']:.1f}%, with 0 "
          f"{100 * s['plain_reference_m0_rate']:.1f}%, the old same-depth rule (2 preceding) "
          f"{100 * s['plain_same_depth_rate']:.1f}%. Drafter's links == GSD's rule on every merged tree: "
          f"{s['drafter_equals_reference']}. {time.time() - began:.0f} s.")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(settings=vars(args) | {"json": str(args.json)}, summary=s,
                                             results=results), indent=1))


if __name__ == "__main__":
    main()
