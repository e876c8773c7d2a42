"""Load tests of the coordinator: bounded, loopback-only, torch-free (but for the chaos
scenario's greedy reference, which imports torch when it runs).

- scenarios.py  what load to send: steady / ramp / burst, the prompt mix, the bounds;
- runner.py     an asyncio load generator over specdec.client.AsyncClient, one
                record per request (latency, TTFT, TPOT, status, the server's stats);
- report.py     records -> requests/s, tokens/s, percentiles, errors by status,
                acceptance and tau; JSON, a markdown table and a PNG plot;
- chaos.py      the chaos scenario: 2 draft + 2 target replicas, one of each killed
                under load and one restarted (chaos_report.py: its phases and checks;
                reference.py: the target alone, which greedy outputs must equal);
- __main__.py   `python -m loadtest --stack tiny --clients 1,4,16 ...`.

Every run stops by itself: at most `requests` requests and `duration_s` seconds of
new requests, then a bounded drain. Addresses other than loopback are refused
unless `--allow-remote` is given.
"""

from loadtest.runner import RequestRecord, RunResult, run_plan
from loadtest.scenarios import LoadPlan, Scenario, check_loopback, load_prompts

__all__ = ["LoadPlan", "RequestRecord", "RunResult", "Scenario", "check_loopback", "load_prompts", "run_plan"]
