"""The wire contract: generated code is fresh, every proto element is documented,
enum values are prefixed, and the client SDK stays torch-free."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

from tests.helpers.paths import REPO

ROOT = REPO


def load_gen_protos():
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_modules_match_a_fresh_generation():
    gen = load_gen_protos()
    assert gen.stale_files(gen.OUT_DIR) == [], "run `make protos` and commit the result"


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    from grpc_tools import protoc

    gen = load_gen_protos()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        protos = [str(p.relative_to(gen.PROTO_ROOT)) for p in sorted(gen.PROTO_DIR.glob("*.proto"))]
        assert protoc.main(
            ["protoc", f"-I{gen.PROTO_ROOT}", "--include_source_info", f"--descriptor_set_out={out}", *protos]
        ) == 0
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def test_every_service_rpc_message_field_and_enum_value_has_a_comment():
    undocumented = []
    for file in descriptor_set().file:
        commented = {
            tuple(loc.path) for loc in file.source_code_info.location if loc.leading_comments.strip() or loc.trailing_comments.strip()
        }

        def need(path, name):
            if tuple(path) not in commented:
                undocumented.append(f"{file.name}: {name}")

        for i, message in enumerate(file.message_type):
            need([4, i], message.name)
            for j, field in enumerate(message.field):
                need([4, i, 2, j], f"{message.name}.{field.name}")
        for i, enum in enumerate(file.enum_type):
            need([5, i], enum.name)
            for j, value in enumerate(enum.value):
                need([5, i, 2, j], f"{enum.name}.{value.name}")
        for i, service in enumerate(file.service):
            need([6, i], service.name)
            for j, method in enumerate(service.method):
                need([6, i, 2, j], f"{service.name}.{method.name}")
    assert not undocumented, undocumented


def test_enum_values_carry_their_enum_prefix_and_zero_is_unspecified():
    for file in descriptor_set().file:
        assert file.package == "specdec.v1"
        for enum in file.enum_type:
            prefix = "".join("_" + c if c.isupper() else c.upper() for c in enum.name).lstrip("_") + "_"
            assert all(v.name.startswith(prefix) for v in enum.value), enum.name
            assert enum.value[0].number == 0 and enum.value[0].name == prefix + "UNSPECIFIED"


def test_the_client_sdk_imports_neither_torch_nor_transformers():
    code = "import specdec.client, sys; assert not {'torch', 'transformers'} & set(sys.modules), sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_the_shared_core_never_imports_grpc():
    """Only the gRPC edge may import grpc: the generated code (specdec/pb), the wire
    helpers (specdec/rpc) and the SDK (specdec/client). The full layer rules:
    tests/core/test_layers.py."""
    core = ROOT / "specdec"
    offenders = [
        str(path.relative_to(ROOT))
        for path in core.rglob("*.py")
        if path.relative_to(core).parts[0] not in ("pb", "rpc", "client")
        and any(line.lstrip().startswith(("import grpc", "from grpc")) for line in path.read_text().splitlines())
    ]
    assert not offenders
