"""Generate the Python protobuf and gRPC modules from protos/ (`make protos`).

    python scripts/gen_protos.py          # write specdec/pb/v1/*_pb2{,_grpc}.py{,i}
    python scripts/gen_protos.py --check  # exit 1 if the committed files are stale

protoc names modules after the proto package (`specdec.v1`); they live in
`specdec.pb.v1`, so their cross-imports are rewritten. Nobody edits the output.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PROTO_DIR = PROTO_ROOT / "specdec" / "v1"
OUT_DIR = ROOT / "specdec" / "pb" / "v1"
INIT = '"""Generated from protos/specdec/v1 by scripts/gen_protos.py; do not edit."""\n'
IMPORT = re.compile(r"^from specdec\.v1 import ", re.MULTILINE)


def generate(out_dir: Path) -> None:
    """Run protoc into a scratch folder, fix the imports, write `out_dir` afresh."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    protos = sorted(PROTO_DIR.glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        include = Path(protoc.__file__).parent / "_proto"
        args = [
            "protoc", f"-I{PROTO_ROOT}", f"-I{include}",
            f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}",
            *(str(p.relative_to(PROTO_ROOT)) for p in protos),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed (see above)")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        for path in sorted((Path(tmp) / "specdec" / "v1").iterdir()):
            (out_dir / path.name).write_text(IMPORT.sub("from specdec.pb.v1 import ", path.read_text()))
        (out_dir / "__init__.py").write_text(INIT)


def stale_files(out_dir: Path) -> list[str]:
    """Names that differ between `out_dir` and a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "v1"
        generate(fresh)
        names = {p.name for p in fresh.iterdir()} | {p.name for p in out_dir.glob("*") if p.is_file()}
        return sorted(
            n for n in names
            if not ((out_dir / n).exists() and (fresh / n).exists() and filecmp.cmp(out_dir / n, fresh / n, False))
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Fail if the committed modules are stale.")
    args = parser.parse_args()
    if args.check:
        stale = stale_files(OUT_DIR)
        if stale:
            sys.exit(f"generated protobuf modules are stale: {', '.join(stale)}; run `make protos`")
        print("generated protobuf modules are up to date")
        return
    generate(OUT_DIR)
    print(f"wrote {OUT_DIR.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
