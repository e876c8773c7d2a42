#!/usr/bin/env bash
# Fetch, here, the wheels a lent GPU machine lacks for scripts/gpu_check.sh, into .whl/ (git-ignored).
#
# The GPU machines of this workplace (/work/.library/device/KINDS.md) have python3 3.12 with
# torch (CUDA), grpcio, protobuf, typer, tokenizers and matplotlib, but an older transformers
# (whose models take `past_key_values=`, where ours pass `cache=`), no OpenTelemetry and no
# grpc health / reflection, and nothing can be fetched there. So the exact versions of this
# checkout's .venv are downloaded here as cp312 manylinux wheels (no dependencies resolved:
# the list below is the closure of what is missing there), carried with the working tree
# (the device tool's `carry: [".whl"]`), and installed there by scripts/gpu_check.sh into
# /tmp/specdec-site before it runs. About 30 MB; the working tree that travels may hold 64 MiB.
#
# Usage: scripts/gpu_wheels.sh            (then, on the GPU machine: scripts/gpu_check.sh --out DIR)
# Env:   PYTHON  the interpreter whose installed versions are pinned (default: <repo>/.venv/bin/python)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$repo_root/.venv/bin/python}"
dest="$repo_root/.whl"
PACKAGES=(
    transformers huggingface-hub httpx2 httpcore2 truststore hf-xet kernels tomlkit
    grpcio protobuf grpcio-health-checking grpcio-reflection googleapis-common-protos
    opentelemetry-api opentelemetry-sdk opentelemetry-semantic-conventions opentelemetry-proto
    opentelemetry-instrumentation opentelemetry-instrumentation-grpc
    opentelemetry-exporter-otlp-proto-common opentelemetry-exporter-otlp-proto-grpc
)
pins=()
for name in "${PACKAGES[@]}"; do
    version="$("$python" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')"
    if [[ -z "$version" ]]; then
        echo "gpu_wheels.sh: $name is not installed in $python: run make install first" >&2
        exit 2
    fi
    pins+=("$name==$version")
done
mkdir -p "$dest"
rm -f "$dest"/*.whl
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest" "${pins[@]}"
count=$(ls "$dest"/*.whl | wc -l)
echo "gpu_wheels.sh: $count wheels, $(du -sh "$dest" | cut -f1) in $dest (${pins[*]})" >&2
if [[ "$count" != "${#PACKAGES[@]}" ]]; then
    echo "gpu_wheels.sh: expected ${#PACKAGES[@]} wheels" >&2
    exit 1
fi
