"""Every `make` target that writes results runs, as the Makefile spells it, from a fresh
clone: a copy of the checkout's files without bench-results/, .certs/ or .venv/, so a
command that assumes a folder exists (bench-results/ once did) fails here, not for a user.

The command lines come from `make -n TARGET` (make itself expands the recipe), so they
cannot drift from the Makefile; the test only points the output flags at new nested folders
under tmp_path and scales the run down (tiny preset, one prompt or request, a few tokens).
Each is a real subprocess of the real CLI. Not run: install (the venv exists), test,
test-full, test-slow, test-ray (the suites themselves), demo (fetches the real pair), clean, and
loadtest-chaos (five processes and a restart: tests/e2e/test_chaos.py runs its CLI scaled down, into
new nested folders, and checks the Makefile's command parses).
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

NOT_RUN = {"install", "test", "test-full", "test-slow", "test-ray", "demo", "clean", "loadtest-chaos"}
GENERATED = ("bench-results", ".certs")  # output folders the Makefile names: must all be redirected
MAKE_ENV_DROP = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "DNS")  # under `make test`: keep the outer make's state out


@dataclass(frozen=True)
class Scaled:
    """How a target's command is run here: `outputs` (flag -> file under the output folder)
    replace the Makefile's own output paths and must be in its command; `small` flags are
    set (replaced, or added) to bound the run; `expect` are the files it must write."""

    outputs: dict = field(default_factory=dict)
    small: dict = field(default_factory=dict)
    expect: tuple = ()


TARGETS = {
    "bench": Scaled(
        outputs={"--json": "bench/tiny.json"},
        small={"--limit": "1", "--max-new-tokens": "4", "--warmup-tokens": "2", "--modes": "sequential",
               "--policies": "fixed:2", "--no-peer": None},
        expect=("bench/tiny.json", "bench/tiny.md", "bench/tiny.png"),  # table and plot default next to the JSON
    ),
    "loadtest": Scaled(
        outputs={"--json": "load/a.json", "--plot": "load/plots/a.png", "--markdown": "load/tables/a.md"},
        small={"--clients": "1", "--requests": "1", "--duration": "10", "--drain": "20", "--max-new-tokens": "4",
               "--warmup": "0", "--startup-timeout": "120"},
        expect=("load/a.json", "load/plots/a.png", "load/tables/a.md"),
    ),
    "certs": Scaled(
        outputs={"--out": "certs/local"},
        expect=tuple(f"certs/local/{stem}.{kind}" for stem in ("ca", "tls", "client") for kind in ("crt", "key")),
    ),
    "protos": Scaled(),  # writes specdec/pb/v1 inside the clone: removed first, compared after
}


def _make_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in MAKE_ENV_DROP}


def fresh_clone(dest: Path) -> Path:
    """The checkout's tracked and new (not ignored) files, as a clone would have them."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True, timeout=60).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"needs a git checkout to lay out a fresh clone: {exc}")
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file():  # listed but deleted in the working tree: a clone would not have it either
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def make_commands(clone: Path, target: str) -> list[list[str]]:
    """The target's recipe as make expands it, one argv per command; `-o` keeps make from
    wanting the missing .venv/.installed (the install step is not under test)."""
    out = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", target, f"PY={sys.executable}"], cwd=clone, env=_make_env(),
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    text = re.sub(r"\\\n", " ", out.stdout)  # a recipe's continued lines: one command
    return [shlex.split(line) for line in text.splitlines() if line.strip()]


def scaled(argv: list[str], how: Scaled, out: Path) -> list[str]:
    argv = list(argv)
    for flag, name in how.outputs.items():
        assert flag in argv, f"the Makefile's command no longer has {flag}: {shlex.join(argv)}"
        argv[argv.index(flag) + 1] = str(out / name)
    for flag, value in how.small.items():
        if flag in argv:
            if value is not None:
                argv[argv.index(flag) + 1] = value
        else:
            argv += [flag] if value is None else [flag, value]
    left = [a for a in argv if a.startswith(GENERATED)]
    assert not left, f"an output path of the Makefile's is not redirected here: {left}"
    return argv


def test_every_make_target_is_run_here_or_named_as_not_run():
    phony = re.search(r"^\.PHONY:(.*)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert phony, "the Makefile lists its targets in .PHONY"
    assert set(phony.group(1).split()) == set(TARGETS) | NOT_RUN


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make (CI runs `make test`)")
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_make_target_runs_from_a_fresh_clone(target, tmp_path):
    clone = fresh_clone(tmp_path / "clone")
    assert not (clone / "bench-results").exists() and not (clone / ".certs").exists() and not (clone / ".venv").exists()
    out = tmp_path / "new" / "nested"
    how = TARGETS[target]
    if target == "protos":
        shutil.rmtree(clone / "specdec" / "pb" / "v1")  # the command must create what it writes
    for argv in make_commands(clone, target):
        argv = scaled(argv, how, out)
        run = subprocess.run(argv, cwd=clone, env=_make_env(), capture_output=True, text=True, timeout=150)
        assert run.returncode == 0, f"{shlex.join(argv)} exited {run.returncode}:\n{run.stderr[-4000:]}"
    for name in how.expect:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, f"{target} did not write {name}"
    for name in how.expect:
        if name.endswith(".json"):
            json.loads((out / name).read_text())
        elif name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if target == "protos":
        generated = sorted(p.name for p in (clone / "specdec" / "pb" / "v1").iterdir())
        committed = sorted(p.name for p in (REPO / "specdec" / "pb" / "v1").glob("*.py*"))
        assert generated == committed
        assert all(filecmp.cmp(clone / "specdec/pb/v1" / n, REPO / "specdec/pb/v1" / n, False) for n in generated)
