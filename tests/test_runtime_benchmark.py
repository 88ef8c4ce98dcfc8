"""benchmarks/runtime.py end to end on tiny models, so the script cannot rot unnoticed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from codenn.paths.composed import ComposedPath
from tiny import tiny_scenario

pytestmark = pytest.mark.onnx
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "runtime.py"


def load_script():
    spec = importlib.util.spec_from_file_location("runtime_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_runtime_benchmark_times_every_cpu_runtime_and_judges_the_goals(tmp_path) -> None:
    bench = load_script()
    local, host, _splits, plugins = tiny_scenario(size=16)
    services = [local, host]
    cases = [bench.Case("original", ComposedPath("local[:]", services), "none"),
             bench.Case("paper Exp. 2 skip (lout=1, lin=4)", ComposedPath("local: lout=1 lin=4", services, plugins=plugins),
                        "random")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = bench.benchmark(cases, "tiny", batches=[1, 3], repeats=40, budget_s=0.01, rounds=2,
                                 log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "runtime.json"
    bench.write_report(report, out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    table = out.with_suffix(".md").read_text()
    assert table.startswith(f"Device: **{report['device']}**") and "| original | ort-cpu | 3 |" in table
    assert "interleaved rounds (drift)" in table
    labels = [p["label"] for p in report["paths"]]
    assert [p["spec"] for p in report["paths"]] == ["local[:]", "local[:2] > local[4:]"]
    assert all(p["export"]["worst_rel_error"] < 1e-4 for p in report["paths"])
    timed = [r for r in report["rows"] if "p50_ms" in r]
    # every path on both CPU runtimes at both batch sizes, timed in each of the two rounds
    assert {(r["path"], r["runtime"], r["batch"]) for r in timed} >= {
        (p, rt, b) for p in labels for rt in ("torch-eager cpu", "ort-cpu") for b in (1, 3)}
    for r in timed:
        assert 0 < r["p50_ms"] <= r["p95_ms"] and r["repeats"] >= 40 and len(r["round_p50_ms"]) == 2
        assert r["throughput_sps"] > 0
    parts = [r for r in timed if "parts_sum_ms" in r]
    assert {r["path"] for r in parts} == set(labels)
    assert all(r["runtime"].startswith("torch") and r["ratio_vs_parts"] > 0 for r in parts)
    if not report["cuda"]:
        assert report["skipped_runtimes"] == {"torch-cudagraph": "CUDA not available",
                                              "ort-cuda": "CUDA not available"}
    goal = report["goals"]["skip_faster_than_original"]
    assert len(goal["cases"]) == 4 and goal["met"] == all(c["ratio"] < 1 for c in goal["cases"])
