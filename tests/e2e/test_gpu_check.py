"""scripts/gpu_check.sh end to end on the CPU (`--device cpu --quick`, a 45 s budget): the
tiny pair and shrunken stand-ins for the real sizes, every file it promises, each step ok
or skipped with a note. Speed is never asserted; which steps the budget lets run depends on
the machine, so the checks hold whichever did."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer import Typer
from typer.testing import CliRunner

from specdec.bench.cli import bench
from specdec.runtime.cost import CostProfile
from tests.helpers.paths import REPO

STATUSES = {"ok", "skipped", "cut"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--device", "cpu", "--quick", "--budget-s", "45",
         "--out", str(out)],
        cwd=REPO, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=300,
    )
    return out, proc


def test_the_quick_run_succeeds_and_writes_every_file(quick_run):
    out, proc = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("summary.md", "results.json", "log.txt"):
        assert (out / name).is_file(), name
    results = json.loads((out / "results.json").read_text())
    steps = {s["name"]: s for s in results["steps"]}
    assert {"env", "equality-tiny", "profiles", "overhead-shares"} <= set(steps)
    assert all(s["status"] in STATUSES for s in steps.values()), [s for s in steps.values()
                                                                  if s["status"] not in STATUSES]
    assert all(s["note"] for s in steps.values() if s["status"] == "skipped")  # a skip says why
    assert steps["equality-tiny"]["status"] == "ok" and results["equality"]["tiny"]["all_ok"]
    assert results["settings"]["quick"] and results["env"]["device"] == "cpu"


def test_what_ran_is_in_the_files_and_the_summary(quick_run):
    out, _ = quick_run
    results = json.loads((out / "results.json").read_text())
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# GPU check (--quick") and "## Steps" in summary
    assert "### tiny (float32, ties within 4 steps): ALL OK" in summary
    for label, res in results["equality"].items():
        assert res["all_ok"] and not res["failures"], label
    for label, res in results.get("bench", {}).items():
        assert (out / res["json"]).is_file() and not res["not_identical"], label
        assert (out / res["json"]).with_suffix(".png").is_file()
        if "imposed" in res:
            assert "EMULATED" in summary and res["imposed"]["rows"] > 0
    for profile in results["profiles"]:  # each loads as `--cost-profile PATH` loads it
        loaded = CostProfile.load(str(out / profile["path"]))
        assert loaded.name == profile["name"] and loaded.roofline and loaded.target_ms > 0
        assert profile["name"] in summary
    for key, runs in results.get("cost", {}).items():
        for runtime, curve in runs.items():
            assert runtime in ("eager", "compiled") and curve["tokens"]["ms"].keys() <= {"1", "2", "4", "8"}
    if "overhead" in results.get("bench", {}):
        assert {r["transport"] for r in results["overhead_shares"]} == {"inprocess", "grpc"}


def test_the_script_refuses_bad_arguments(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage" in proc.stderr
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--out", str(tmp_path), "--device", "tpu"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "devices are cpu, cuda or cuda:N" in proc.stderr


@pytest.mark.parametrize("args,message", [
    (["--device", "gpu"], "--device must be cpu, cuda or cuda:N"),
    (["--draft-device", "cuda:x"], "--draft-device must be cpu, cuda or cuda:N"),
    (["--runtime", "fast"], "--runtime must be one of eager, compiled"),
])
def test_the_bench_refuses_bad_device_and_runtime_flags(args, message, tmp_path):
    app = Typer()
    app.command()(bench)
    result = CliRunner().invoke(app, [*args, "--json", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and message in result.output


def test_the_bench_refuses_cuda_without_a_gpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    app = Typer()
    app.command()(bench)
    result = CliRunner().invoke(app, ["--device", "cuda", "--json", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and "torch sees none" in result.output
