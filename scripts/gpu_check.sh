#!/usr/bin/env bash
# Everything worth knowing from a short loan of one GPU, in one command (issue 18):
# greedy equality of every mode and policy on the device, the cost of one forward against
# tokens and batch for Qwen2.5 0.5B / 7B / 32B shapes (random weights, bf16), eager and
# compiled, written as cost profiles, the bench on the device, and the orchestration's
# share of a real pass. Every step is guarded by a time budget (450 s by default); the
# whole run is killed at the budget + 60 s, and what it measured is still on disk.
#
# Usage: scripts/gpu_check.sh --out DIR [--device cuda|cuda:N|cpu] [--draft-device DEV]
#                             [--quick] [--budget-s S] [--sizes 7b,32b] [--acceptance P]
#        --quick --device cpu: the tiny stand-ins, the default suite's smoke run (~1 min)
# Writes: DIR/summary.md (every table), DIR/results.json, DIR/profiles/*.json (measured
#         cost profiles: --cost-profile DIR/profiles/NAME.json), DIR/bench/*, DIR/log.txt
# Env:    PYTHON  interpreter (default: <repo>/.venv/bin/python, else python3)
# On a lent GPU machine (no .venv there, nothing to fetch): run scripts/gpu_wheels.sh HERE first and
# carry .whl with the working tree; this script installs those wheels into /tmp/specdec-site for
# python3 and puts them first on PYTHONPATH (device tool: carry [".whl"], timeout_s 600).
# Exit:   0 all steps ok or skipped by the budget; 1 a step failed (see summary.md); 2 bad arguments
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$repo_root/.venv/bin/python" ]]; then python="$repo_root/.venv/bin/python"; else python=python3; fi
fi
export PYTHONPATH="$repo_root${PYTHONPATH:+:$PYTHONPATH}"  # the workers it starts import specdec from here too
# the carried wheels only where the interpreter lacks what specdec needs (a lent GPU machine's python3)
if compgen -G "$repo_root/.whl/*.whl" > /dev/null \
        && ! "$python" -c "import grpc, opentelemetry.sdk" 2> /dev/null; then
    site=/tmp/specdec-site
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$repo_root"/.whl/*.whl
    export PYTHONPATH="$repo_root:$site:$PYTHONPATH"
fi

out="" device="cuda" budget="" quick=0
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --out) out="${args[$((i + 1))]:-}" ;;
        --out=*) out="${args[$i]#--out=}" ;;
        --device) device="${args[$((i + 1))]:-}" ;;
        --budget-s) budget="${args[$((i + 1))]:-}" ;;
        --quick) quick=1 ;;
        -h|--help) exec "$python" -m specdec.bench.gpu_check --help ;;
    esac
done
if [[ -z "$out" ]]; then
    echo "usage: scripts/gpu_check.sh --out DIR [--device cuda|cpu] [--quick] (see the header of this file)" >&2
    exit 2
fi
if [[ -z "$budget" ]]; then
    if [[ "$quick" == 1 ]]; then budget=75; else budget=450; fi
fi
mkdir -p "$out"
# The budget guards each step; a step that overruns it (a compilation, a hung device) is cut
# off here: the results written so far stay (results.json and summary.md after every step).
hard_limit=$(( ${budget%.*} + 60 ))
{
    echo "# $(date -u +%FT%TZ) scripts/gpu_check.sh $*"
    echo "# load average: $(cat /proc/loadavg 2>/dev/null || echo unknown)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
} > "$out/log.txt"
cd "$repo_root"
set +e
timeout --signal=TERM --kill-after=10 "$hard_limit" "$python" -m specdec.bench.gpu_check "$@" 2> >(tee -a "$out/log.txt" >&2)
status=$?
set -e
if [[ $status == 124 || $status == 137 ]]; then
    echo "gpu_check: killed at the hard limit ($hard_limit s); the results written so far are in $out" | tee -a "$out/log.txt" >&2
fi
exit $status
