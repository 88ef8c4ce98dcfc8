"""Runtime benchmark: the original local model and trained paths on every available runtime.

For each path (the original model, the paper's Experiment 2 skip path ``lout=1 lin=4``, the
search run's selected path and its best cross path) and each runtime this machine has
(torch eager, torch CUDA graphs, ONNX Runtime CPU, ONNX Runtime CUDA with IO binding, with and
without CUDA graphs), at batch 1 and 64: p50 / p95 latency and throughput. Inputs are random
normal batches (never zeros), rotated; warm-up first; CUDA events on GPU. Measurements run in
interleaved rounds (every case, runtime and batch once per round), so the baseline is re-timed
in every round and drift hits every row alike; each row keeps its per-round p50s. For the torch
runtimes each block and link is also timed alone: a path should cost about the sum of its parts.

    python benchmarks/runtime.py                       # default scenario, its search run, 64x64
    python benchmarks/runtime.py --source random --input-size 224   # ImageNet-size, random weights

``--source scenario`` uses the trained services of the embedded default scenario and the trained
links of ``--run`` (default: the run directory ``make demo`` writes; searched first if missing).
``--source random`` builds the same architectures with random weights at ``--input-size`` (latency
does not depend on the weights) and random links: a timing-only set-up, closer to the paper's
224x224 AlexNet. Writes JSON and a markdown table (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from codenn.config.run import RunConfig
from codenn.errors import CodennError
from codenn.fileio import atomic_write
from codenn.model.service import Service
from codenn.model.timing import Samples, sample
from codenn.paths.composed import ComposedPath
from codenn.paths.spec import PathSpec
from codenn.search.store import RunStore
from codenn.train.scenario import scenario_from_config
from codenn_adapters.onnx_export import export_path, path_ops
from codenn_adapters.runtimes import Timing, make_runtime, sample_runtime, time_runtime

PAPER_SKIP = "alexnet: lout=1 lin=4"  # the paper's Experiment 2 path (1.4 ms vs 2.0 ms for AlexNet)


@dataclass
class Case:
    """One model to time: a label, the path, and where its links come from."""

    label: str
    path: ComposedPath
    links: str
    onnx: str | None = None
    export: dict[str, Any] = field(default_factory=dict)


# -- what to time ------------------------------------------------------------------------------
def scenario_cases(run_dir: str, log: Any) -> tuple[list[Case], str]:
    """Trained services of the default scenario and the trained links of its search run."""
    from codenn.search.store import load_run_path
    from codenn.search.strategies import Search

    run = RunConfig()
    scenario = scenario_from_config(run, log=log)
    services = [scenario.local, *scenario.hosts]
    if not RunStore(run_dir).exists():
        log(f"no search run in {run_dir}: running the default search first (what `make demo` does)")
        Search(scenario.local, scenario.hosts, scenario.splits, run.search, run_dir=run_dir, log=log,
               metadata={"base_models": scenario.info}, run_config=run).run()
    store = RunStore.open(run_dir)
    trained = store.trained()
    local = scenario.local.name
    cases = [Case("original", ComposedPath(f"{local}[:]", services), "none")]
    specs: list[tuple[str, str]] = [("paper Exp. 2 skip (lout=1, lin=4)", _canonical(PAPER_SKIP, services))]
    selected = store.selected_spec()
    if selected:
        specs.append(("selected", selected))
    crossed = sorted((r for r in trained.values() if r.kind == "cross" and r.cost is not None),
                     key=lambda r: r.cost or 0.0)
    estimated = sorted((r for r in store.rows() if r.kind == "cross" and r.latency_us), key=lambda r: r.latency_us)
    if crossed:
        specs.append(("best trained cross path", crossed[0].spec))
    elif estimated:  # the run trained no cross path: time the one with the lowest estimated latency
        specs.append(("fastest cross path (estimate)", estimated[0].spec))
    for label, spec in specs:
        if spec in trained:
            path, _ = load_run_path(run_dir, spec, log=log)
            cases.append(Case(label, path, f"trained ({run_dir})"))
        else:
            torch.manual_seed(0)
            cases.append(Case(label, ComposedPath(spec, services, link=run.search.link), "untrained (timing only)"))
    return cases, f"default scenario, trained (run {run_dir})"


def random_cases(size: int, specs: list[str], log: Any, local_model: str | None = None) -> tuple[list[Case], str]:
    """The default scenario's architectures (or ``local_model``) with random weights at ``size``."""
    run = RunConfig()
    torch.manual_seed(0)
    shape = (3, size, size)
    if local_model:
        local = Service.from_name(local_model, input_shape=shape)
    else:
        local = Service.from_name(run.local.base.model, name=run.local.name, input_shape=shape)
    hosts = [Service.from_name(h.base.model, name=h.name, input_shape=shape) for h in run.hosts
             if h.name != local.name]
    services = [local, *hosts]
    paper_skip = f"{local.name}:{PAPER_SKIP.partition(':')[2]}"
    cases = [Case("original", ComposedPath(f"{local.name}[:]", services), "none"),
             Case("paper Exp. 2 skip (lout=1, lin=4)", ComposedPath(paper_skip, services, link=run.search.link), "random")]
    for spec in specs:
        cases.append(Case(spec, ComposedPath(spec, services, link=run.search.link), "random"))
    log(f"random-weight services at {size}x{size}: {', '.join(s.name for s in services)}")
    return cases, f"random weights, {size}x{size} (timing only)"


def _canonical(spec: str, services: list[Service]) -> str:
    return str(PathSpec.parse(spec).resolve({s.name: s.num_blocks for s in services}))


# -- which runtimes ----------------------------------------------------------------------------
def runtime_plan(cuda: bool, threads: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, registered runtime, options) for every runtime this machine can run."""
    plan: list[tuple[str, str, dict[str, Any]]] = [("torch-eager cpu", "torch-eager", {"device": "cpu"}),
                                                   ("ort-cpu", "ort-cpu", {"threads": threads})]
    if cuda:
        plan = [("torch-eager cuda", "torch-eager", {"device": "cuda"}),
                ("torch-cudagraph", "torch-cudagraph", {"device": "cuda"}),
                ("ort-cuda", "ort-cuda", {"device": "cuda"}),
                ("ort-cuda + graph", "ort-cuda", {"device": "cuda", "cuda_graph": True})] + plan
    return plan


def ort_cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _inputs(path: ComposedPath, batch: int, n: int = 4) -> list[torch.Tensor]:
    spec = path.local.input_spec
    return [spec.example(batch=batch, seed=100 + i) for i in range(n)]


def _repeats(runtime: Any, xs: list[torch.Tensor], wanted: int, budget_s: float) -> int:
    """As many repeats as fit ``budget_s`` (at least 20, at most ``wanted``), judged by one call."""
    per_call = max(sample(runtime.run, xs[:1], warmup=0, repeats=1, device=runtime.device).median(), 1e-6)
    return int(max(20, min(wanted, budget_s / per_call)))


def parts_sum_ms(runtime_name: str, options: dict[str, Any], path: ComposedPath, batch: int, repeats: int,
                 budget_s: float) -> float:
    """Sum of each block's and link's own p50 in the same runtime (a torch runtime)."""
    total = 0.0
    for op, module in path_ops(path):
        runtime = make_runtime(runtime_name, _Wrapped(module), **options)
        xs = [op.input.example(batch=batch, seed=200 + i) for i in range(4)]
        n = _repeats(runtime, xs, repeats, budget_s / 4)
        total += time_runtime(runtime, xs, warmup=min(10, n), repeats=n).p50_ms
    return total


class _Wrapped(nn.Module):
    """A block or link as a standalone module (runtimes move and eval their module in place)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inner = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


# -- the run -----------------------------------------------------------------------------------
def device_name(cuda: bool) -> str:
    if cuda:
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("scenario", "random"), default="scenario")
    parser.add_argument("--run", default=None, help="search run directory (default: the one `make demo` writes)")
    parser.add_argument("--input-size", type=int, default=224, help="with --source random")
    parser.add_argument("--spec", action="append", default=[], help="extra path to time (with --source random)")
    parser.add_argument("--local-model", default=None,
                        help="with --source random: another torchvision/timm local model (default: alexnet)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per measurement (at most)")
    parser.add_argument("--budget", type=float, default=4.0, help="seconds per measurement (caps repeats)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (repeats are split among them)")
    parser.add_argument("--no-parts", action="store_true", help="skip the per-block/link sums")
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/runtime-{cpu,gpu}.json)")
    args = parser.parse_args(argv)

    def log(m: str) -> None:
        print(m, flush=True)

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    out = Path(args.out or f"benchmarks/results/runtime-{'gpu' if cuda else 'cpu'}.json")
    if args.source == "scenario":
        run_dir = args.run or f"runs/{RunConfig().search.strategy}-{RunConfig().hash()[:8]}"
        cases, source = scenario_cases(run_dir, log)
    else:
        cases, source = random_cases(args.input_size, args.spec, log, args.local_model)
    report = benchmark(cases, source, batches=args.batches, repeats=args.repeats, budget_s=args.budget,
                       parts=not args.no_parts, rounds=args.rounds, log=log)
    write_report(report, out)
    return report


def benchmark(cases: list[Case], source: str, *, batches: list[int], repeats: int, budget_s: float,
              parts: bool = True, rounds: int = 3, log: Any = print) -> dict[str, Any]:
    """Export every case, time it on every runtime this machine has, judge the goals."""
    cuda = torch.cuda.is_available()
    threads = torch.get_num_threads()
    plan = runtime_plan(cuda, threads)
    skipped: dict[str, str] = {}
    if not cuda:
        skipped.update({"torch-cudagraph": "CUDA not available", "ort-cuda": "CUDA not available"})
    elif not ort_cuda_available():
        plan = [p for p in plan if p[1] != "ort-cuda"]
        skipped["ort-cuda"] = "this onnxruntime has no CUDAExecutionProvider"
    log(f"device: {device_name(cuda)}; runtimes: {', '.join(p[0] for p in plan)}")
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(cases):
            case.path.eval()
            res = export_path(case.path, Path(tmp) / f"case{i}")
            case.onnx = res.path_of("merged")
            case.export = {"worst_rel_error": res.worst().rel, "files": [f.name for f in res.files]}
        # Rounds interleave every case, runtime and batch, so drift (other load, clocks) hits all
        # alike; each round re-times the original model, and its per-round p50s are reported.
        runtimes: dict[tuple[int, str], Any] = {}
        samples: dict[tuple[int, str, int], list[Samples]] = {}
        round_p50: dict[tuple[int, str, int], list[float]] = {}
        errors: dict[tuple[int, str, int], str] = {}
        for r in range(rounds):
            for ci, case in enumerate(cases):
                for label, runtime_name, options in plan:
                    for batch in batches:
                        key = (ci, label, batch)
                        if key in errors:
                            continue
                        try:
                            if (ci, label) not in runtimes:
                                model = case.onnx if runtime_name.startswith("ort") else case.path
                                runtimes[(ci, label)] = make_runtime(runtime_name, model, **options)
                            runtime = runtimes[(ci, label)]
                            xs = _inputs(case.path, batch)
                            n = _repeats(runtime, xs, max(1, repeats // rounds), budget_s / rounds)
                            taken = sample_runtime(runtime, xs, warmup=min(10, n) if r == 0 else 2, repeats=n)
                        except CodennError as exc:
                            log(f"  {case.label} / {label} / batch {batch}: skipped: {exc}")
                            errors[key] = str(exc)
                            continue
                        samples.setdefault(key, []).append(taken)
                        round_p50.setdefault(key, []).append(taken.median() * 1e3)
        for ci, case in enumerate(cases):
            stats = case.path.stats()
            for label, runtime_name, options in plan:
                for batch in batches:
                    key = (ci, label, batch)
                    if key in errors:
                        rows.append({"path": case.label, "runtime": label, "batch": batch, "error": errors[key]})
                        continue
                    pooled = Samples.pool(samples[key])
                    t = Timing.of(runtimes[(ci, label)], pooled)
                    row = {"path": case.label, "spec": str(case.path.spec), "links": case.links, "runtime": label,
                           "batch": batch, "repeats": t.repeats, "p50_ms": t.p50_ms, "p95_ms": t.p95_ms,
                           "mean_ms": t.mean_ms, "throughput_sps": pooled.throughput(),
                           "round_p50_ms": round_p50[key],
                           "local_gflops": stats.local_flops / 1e9, "host_gflops": stats.host_flops / 1e9}
                    if runtime_name.startswith("torch") and parts:
                        row["parts_sum_ms"] = parts_sum_ms(runtime_name, options, case.path, batch, repeats, budget_s)
                        row["ratio_vs_parts"] = t.p50_ms / row["parts_sum_ms"]
                    rows.append(row)
                    log(f"  {case.label:<36} {label:<18} b={batch:<3} p50 {t.p50_ms:9.3f} ms  p95 {t.p95_ms:9.3f} ms"
                        f"  {row['throughput_sps']:10.1f}/s" + (f"  parts {row['parts_sum_ms']:.3f} ms"
                                                               if "parts_sum_ms" in row else ""))
    return {
        "benchmark": "runtime",
        "device": device_name(cuda),
        "cuda": cuda,
        "source": source,
        "input_shape": list(cases[0].path.local.input_spec.shape),
        "threads": threads,
        "versions": _versions(),
        "paths": [{"label": c.label, "spec": str(c.path.spec), "links": c.links, **c.path.stats().to_dict(),
                   "export": c.export} for c in cases],
        "skipped_runtimes": skipped,
        "rows": rows,
        "goals": goals(rows, cuda),
        "rounds": rounds,
        "wall_seconds": round(time.perf_counter() - t_start, 1),
    }


def write_report(report: dict[str, Any], out: Path) -> None:
    """The JSON and its markdown table beside it, each written atomically."""
    table = markdown(report)
    atomic_write(out, (json.dumps(report, indent=2) + "\n").encode())
    atomic_write(out.with_suffix(".md"), table.encode())
    print()
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}")


def goals(rows: list[dict[str, Any]], cuda: bool) -> dict[str, Any]:
    """The issue's goals, judged on this run's rows."""
    ok = [r for r in rows if "p50_ms" in r]

    def p50(path: str, runtime: str, batch: int) -> float | None:
        return next((r["p50_ms"] for r in ok if r["path"] == path and r["runtime"] == runtime and r["batch"] == batch),
                    None)

    out: dict[str, Any] = {}
    skip = "paper Exp. 2 skip (lout=1, lin=4)"
    faster = []
    for r in ok:
        if r["path"] != skip:
            continue
        base = p50("original", r["runtime"], r["batch"])
        if base:
            faster.append({"runtime": r["runtime"], "batch": r["batch"], "skip_ms": r["p50_ms"],
                           "original_ms": base, "ratio": r["p50_ms"] / base})
    out["skip_faster_than_original"] = {"met": bool(faster) and all(f["ratio"] < 1 for f in faster), "cases": faster}
    if cuda:
        graph = [r for r in ok if r["runtime"] == "torch-cudagraph" and "ratio_vs_parts" in r]
        out["cudagraph_within_1.15x_of_parts"] = {
            "met": bool(graph) and all(r["ratio_vs_parts"] <= 1.15 for r in graph),
            "worst": max((r["ratio_vs_parts"] for r in graph), default=None)}
        pairs = []
        for r in ok:
            if r["runtime"] == "ort-cuda + graph":
                t = p50(r["path"], "torch-cudagraph", r["batch"])
                if t:
                    pairs.append(r["p50_ms"] / t)
        out["ort_graph_within_1.1x_of_torch_graph"] = {"met": bool(pairs) and max(pairs) <= 1.1,
                                                      "worst": max(pairs, default=None)}
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Device: **{report['device']}**; {report['source']}; input {report['input_shape']}; "
             f"torch {report['versions']['torch']}, onnxruntime {report['versions']['onnxruntime']}.", "",
             "| path | runtime | batch | p50 ms | p95 ms | throughput /s | sum of parts ms | p50 / parts |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["rows"]:
        if "error" in r:
            lines.append(f"| {r['path']} | {r['runtime']} | {r['batch']} | skipped: {r['error']} | | | | |")
            continue
        parts = f"{r['parts_sum_ms']:.3f}" if "parts_sum_ms" in r else ""
        ratio = f"{r['ratio_vs_parts']:.2f}" if "ratio_vs_parts" in r else ""
        lines.append(f"| {r['path']} | {r['runtime']} | {r['batch']} | {r['p50_ms']:.3f} | {r['p95_ms']:.3f} | "
                     f"{r['throughput_sps']:,.0f} | {parts} | {ratio} |")
    lines += ["", "Paths: " + "; ".join(f"{p['label']} = `{p['spec']}` ({p['local_flops'] / 1e9:.3f} local GFLOPs, "
                                        f"links {p['links']}, ONNX worst rel. error {p['export']['worst_rel_error']:.1e})"
                                        for p in report["paths"]), ""]
    base = [r for r in report["rows"] if r["path"] == "original" and "round_p50_ms" in r]
    if base:
        lines.append("Original model's p50 in each of the " + str(report["rounds"]) + " interleaved rounds (drift): " +
                     "; ".join(f"{r['runtime']} b={r['batch']}: " + " / ".join(f"{v:.2f}" for v in r["round_p50_ms"])
                               for r in base) + " ms.")
        lines.append("")
    for name, g in report["goals"].items():
        lines.append(f"- goal {name}: {'met' if g['met'] else 'NOT met'}"
                     + (f" (worst {g['worst']:.3f})" if g.get("worst") is not None else ""))
    return "\n".join(lines) + "\n"


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version()}


if __name__ == "__main__":
    main()
