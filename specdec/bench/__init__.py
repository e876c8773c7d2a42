"""`specdec bench`: the mode x policy matrix against the target-alone baseline.

- runner.py  runs the matrix (interleaved with the baseline, warm-up first) and
             collects one raw record per run;
- peer.py    Hugging Face assisted generation on the same pair, as the outside peer;
- report.py  the analytic bounds, medians per configuration and per prompt kind,
             the markdown tables, the JSON file and the PNG plot;
- cli.py     the typer command (`specdec bench --help`).

scripts/gpu_check.sh (a short loan of a GPU, one command) runs on top of it:
- gpu_check.py           the steps, each under a time budget (budget.py), and the files;
- equality.py            greedy equality of every mode x policy against the target alone;
- cost_curve.py          one forward's cost vs tokens and vs batch, as a cost profile;
- imposed_acceptance.py  a draft whose acceptance is imposed (EMULATED) for random real sizes;
- gpu_report.py          its summary.md.

The rules it follows are docs/benchmarking.md's: same invocation, same prompts, same
max tokens, medians, raw JSON kept, both cost regimes labelled, never a speed
asserted in a test.
"""

from pathlib import Path

DEFAULT_PROMPTS = Path(__file__).parent / "prompts.jsonl"
