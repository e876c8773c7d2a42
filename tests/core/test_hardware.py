"""`--dtype auto` (specdec/models/hardware.py): measured once, cached, explained."""

from __future__ import annotations

import json

from specdec.models import hardware


def test_auto_measures_once_then_reads_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hardware.json"
    calls = []

    def fake_measure():
        calls.append(1)
        return {"float32": 0.002, "bfloat16": 0.001}

    monkeypatch.setattr(hardware, "measure_cpu", fake_measure)
    first = hardware.choose_dtype("cpu", cache=cache)
    second = hardware.choose_dtype("cpu", cache=cache)
    assert first[0] == second[0] == "bfloat16" and len(calls) == 1
    assert "measured" in first[1] and "cached" in second[1] and "1.00 ms in bfloat16 vs 2.00 ms" in first[1]
    assert list(json.loads(cache.read_text()).values()) == [{"float32": 0.002, "bfloat16": 0.001}]


def test_bfloat16_must_win_clearly(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware, "measure_cpu", lambda: {"float32": 0.002, "bfloat16": 0.0019})
    assert hardware.choose_dtype("cpu", cache=tmp_path / "h.json")[0] == "float32"  # emulated bfloat16: exact wins


def test_the_real_measurement_gives_both_dtypes():
    times = hardware.measure_cpu()
    assert set(times) == {"float32", "bfloat16"} and all(t > 0 for t in times.values())


def test_cuda_and_explicit_dtypes_need_no_measurement(monkeypatch):
    monkeypatch.setattr(hardware, "measure_cpu", lambda: (_ for _ in ()).throw(AssertionError("measured")))
    assert hardware.choose_dtype("cuda:0", cache=None)[0] == "bfloat16"
    assert hardware.resolve_dtype("float32") == ("float32", None)


def test_up_keeps_the_tiny_pair_and_emulated_costs_exact():
    from specdec.launch.cli import chosen_dtype

    assert chosen_dtype("auto", "tiny", None) == "float32"
    assert chosen_dtype("auto", "qwen-coder", "gpu-like") == "float32"
    assert chosen_dtype("bfloat16", "tiny", None) == "bfloat16"
