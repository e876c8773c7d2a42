"""Imports point down: each folder is one layer and may import only its own layer or
those below it; no service imports another; the core imports no grpc, protobuf or model
code; the client SDK stays torch-free.

The check reads every module's imports (module level and inside functions) with `ast`,
so a lazy import counts as much as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

# Lowest first. A module may import a package of the same or a lower rank.
LAYERS: list[tuple[str, ...]] = [
    ("specdec.core", "specdec.telemetry", "specdec.pb"),  # maths + shared types; observability names; generated
    ("specdec.models", "specdec.grammar"),  # transformers loading, presets, the tiny pair; structured output
    ("specdec.runtime",),  # sessions, batching, cost shaping, chain drafting / verifying
    ("specdec.gsd", "specdec.specdecpp"),  # the two methods with model-level code of their own
    ("specdec.backend",),  # the endpoint interfaces and their in-process implementations
    ("specdec.loop",),  # the request loop, PEARL, the embedded Engine
    ("specdec.rpc", "specdec.client"),  # the gRPC edge; the SDK
    ("draft_worker", "target_worker", "coordinator", "gateway"),  # the services (the gateway: the HTTP API)
    ("specdec.launch",),  # whatever starts several services
    ("specdec.bench", "loadtest", "specdec.cli"),  # tools on top
]
SERVICES = ("draft_worker", "target_worker", "coordinator", "gateway")
PROJECT = ("specdec", *SERVICES, "loadtest")


def layer_of(module: str) -> tuple[int, str]:
    for rank, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                return rank, package
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> set[str]:
    """Absolute names of every module `path` imports (relative imports resolved)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def project_modules():
    for top in PROJECT:
        for path in sorted((REPO / top).rglob("*.py")):
            if "pb/v1" in path.as_posix():
                continue
            yield path, module_name(path)


def project_imports(names: set[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in PROJECT and _is_module(n)}


def _is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


MODULES = list(project_modules())


def test_every_module_belongs_to_a_layer():
    for _, module in MODULES:
        if module in PROJECT[:1]:  # the `specdec` package itself: only __version__ and a lazy Engine
            continue
        if module.endswith("__main__"):
            continue
        layer_of(module)


@pytest.mark.parametrize("path,module", MODULES, ids=[m for _, m in MODULES])
def test_imports_point_down(path, module):
    if module == "specdec" or module.endswith(".__main__"):
        # `python -m draft_worker` is a launcher (it parses the shared service flags);
        # `specdec` itself only exposes the lazy `Engine`.
        rank = len(LAYERS)
    else:
        rank, _ = layer_of(module)
    for name in project_imports(imports_of(path, module)):
        if name == "specdec":
            continue
        their_rank, their_package = layer_of(name)
        assert their_rank <= rank, f"{module} (layer {rank}) imports {name} (layer {their_rank}): arrows point down"
        mine = module.split(".")[0]
        if mine in SERVICES and their_package in SERVICES and their_package != mine:
            raise AssertionError(f"service {mine} imports service {their_package} ({name}): no service imports another")


def _third_party(path: Path, module: str) -> set[str]:
    return {n.split(".")[0] if not n.startswith("google.protobuf") else "google.protobuf"
            for n in imports_of(path, module)}


def test_the_core_imports_no_grpc_protobuf_or_model_code():
    core = [(p, m) for p, m in MODULES if m.startswith("specdec.core")]
    assert len(core) >= 8
    for path, module in core:
        bad = _third_party(path, module) & {"grpc", "google.protobuf", "transformers", "opentelemetry"}
        assert not bad, f"{module} imports {sorted(bad)}: the core is pure maths and types"
        assert not [n for n in project_imports(imports_of(path, module)) if not n.startswith("specdec.core")], module


def test_the_client_sdk_stays_torch_free():
    """The SDK imports only itself, the generated code and torch-free modules: the core's
    names and params, the rpc layer's security, params and retry hint."""
    allowed = ("specdec.client", "specdec.pb", "specdec.rpc.security", "specdec.rpc.params", "specdec.rpc.retry_after",
               "specdec.core.names", "specdec.core.params")
    for path, module in [(p, m) for p, m in MODULES if m.startswith("specdec.client")]:
        assert "torch" not in _third_party(path, module), module
        for name in project_imports(imports_of(path, module)):
            assert name in ("specdec.rpc", "specdec.core") or name.startswith(allowed), f"{module} imports {name}"
    for torch_free in ("rpc/security.py", "rpc/params.py", "rpc/retry_after.py", "core/names.py", "core/params.py"):
        assert "torch" not in _third_party(REPO / "specdec" / torch_free, torch_free)


def test_the_check_catches_an_upward_import(tmp_path):
    """Negative control: a core module importing the loop would be reported."""
    fake = tmp_path / "bad.py"
    fake.write_text("def f():\n    from specdec.loop.engine import Engine\n")
    names = project_imports(imports_of(fake, "specdec.core.bad"))
    assert "specdec.loop.engine" in names
    assert layer_of("specdec.loop.engine")[0] > layer_of("specdec.core.bad")[0]
