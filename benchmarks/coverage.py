"""Coverage benchmark: which timm and torchvision families codenn splits exactly, and why not.

For every ``timm.models`` module and every torchvision classification family, the smallest model
(parameters counted on the meta device among the few names that look smallest; nothing is
downloaded, weights are random):

- ``Service(name, model)`` with the default splitter choice and block count;
- the split at the maximum block count (every valid cut) from the same splitter;
- the recomposition error in eval mode at both counts, and in train mode (dropout masks drawn
  alike, batch-norm on batch statistics) at the maximum count, whose cuts include the default's;
- one two-block skip path ``m[:1] > m[N-1:]`` (first and last block of the default split; link
  ``paper`` where both boundaries are NCHW or flat, else ``linear``) exported to ONNX with the
  parity and no-foreign-tensor checks of ``export_path``: TorchScript first (5x faster than
  dynamo on 2 cores), dynamo where TorchScript fails (it bakes some batch sizes into reshapes).

Input: the model's own default size, except where that is larger than ``--reduce-to`` (224) and
the model runs at the smaller size: then the smaller one (the table says so). Each model runs in
a forked child with a hard time cap (``--cap``): a hung, huge or crashing model costs at most the
cap and is recorded as "timed out after N s" or "the child died". Writes JSON (``--out``) and a
markdown table (``--doc``): one row per family, and for every failure the reason and what to do.

    python benchmarks/coverage.py                               # everything (< 20 min on 2 cores)
    python benchmarks/coverage.py --limit 10 --no-export        # the first 10 families
    python benchmarks/coverage.py --families timm:levit,torchvision:vgg
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import re
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import timm
import torch
import torchvision
from torch import nn

from codenn import Service
from codenn.contracts.plugins import get_plugins
from codenn.errors import SplitError
from codenn.fileio import atomic_write
from codenn.testing import RECOMPOSITION_TOLERANCE, recomposition_error

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "coverage.json"
DOC = ROOT / "docs" / "coverage.md"
#: name fragments of small variants, smallest first: candidates are ranked by them
SIZE_WORDS = ("pico", "femto", "atto", "zepto", "nano", "micro", "xxs", "xxsmall", "tiny", "xs", "xsmall",
              "mini", "small", "light", "lite", "050", "075", "_s", "b0", "400mf", "800mf", "base")
BIG_WORDS = ("large", "huge", "giant", "gigantic", "xlarge", "448", "384", "512", "_plus", "dist")
#: torchvision builders whose train-mode forward returns auxiliary outputs unless told not to
TV_OPTIONS: dict[str, dict[str, Any]] = {"googlenet": {"aux_logits": False, "init_weights": True},
                                         "inception_v3": {"aux_logits": False, "init_weights": True}}
#: layouts the ``paper`` link joins; any other boundary takes the ``linear`` layout link
PAPER_LAYOUTS = ("NCHW", "NC")


# -- families and their smallest models ---------------------------------------------------------
def families() -> list[tuple[str, str, list[str]]]:
    """(source, family, model names) for every timm module and torchvision classification family."""
    out = [("timm", m, timm.list_models(module=m)) for m in sorted(timm.list_modules())]
    tv: dict[str, list[str]] = {}
    for name in torchvision.models.list_models(module=torchvision.models):
        tv.setdefault(torchvision.models.get_model_builder(name).__module__.split(".")[-1], []).append(name)
    out += [("torchvision", f, names) for f, names in sorted(tv.items())]
    return [f for f in out if f[2]]


def _rank(name: str) -> tuple[int, int, int, str]:
    small = next((i for i, w in enumerate(SIZE_WORDS) if w in name), len(SIZE_WORDS))
    big = sum(w in name for w in BIG_WORDS)
    return big, small, len(name), name


def build(source: str, name: str, device: str | torch.device = "cpu") -> nn.Module:
    """The model with random weights (nothing is downloaded)."""
    with torch.device(device):
        if source == "timm":
            model: nn.Module = timm.create_model(name, pretrained=False)
        else:
            model = torchvision.models.get_model(name, weights=None, **TV_OPTIONS.get(name, {}))
    return model


def smallest(source: str, names: list[str], candidates: int) -> tuple[str, int]:
    """The model with fewest parameters among the ``candidates`` best-ranked names: counted on
    the meta device, or on the CPU for a builder that copies data while it builds (torchvision
    regnet); the ranking puts small names first, so a CPU build stays cheap."""
    best: tuple[int, str] | None = None
    for name in sorted(names, key=_rank)[:candidates]:
        try:
            params = _params(source, name)
        except Exception:  # a builder that does not build at all: try the next name
            continue
        if best is None or params < best[0]:
            best = (params, name)
    if best is None:
        raise RuntimeError(f"none of {sorted(names, key=_rank)[:candidates]} builds on the meta device")
    return best[1], best[0]


def _params(source: str, name: str) -> int:
    try:
        model = build(source, name, "meta")
    except NotImplementedError:  # "Cannot copy out of meta tensor"
        model = build(source, name, "cpu")
    return sum(p.numel() for p in model.parameters())


def default_size(source: str, name: str, model: nn.Module) -> tuple[int, int, int]:
    """The model's own default input size (timm: its pretrained_cfg)."""
    if source == "timm":
        size = tuple(getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224)))
        return (int(size[0]), int(size[1]), int(size[2]))
    return (3, 299, 299) if name == "inception_v3" else (3, 224, 224)


def input_size(model: nn.Module, default: tuple[int, int, int], reduce_to: int) -> tuple[int, int, int]:
    """``default``, or (C, reduce_to, reduce_to) where the default is larger and the model runs
    on the smaller input (a fixed patch grid or window will not)."""
    chans, height, width = default
    if reduce_to <= 0 or height * width <= reduce_to * reduce_to:
        return default
    small = (chans, reduce_to, reduce_to)
    try:
        with torch.no_grad():
            ok = isinstance(model(torch.randn(1, *small)), torch.Tensor)
    except Exception:  # the model refuses the smaller input: keep its own size
        return default
    return small if ok else default


# -- one model ------------------------------------------------------------------------------------
class NoCut(SplitError):
    """A model the splitter leaves whole: reported as a failure to split, not as an exact split."""


def measure(source: str, family: str, name: str, export: str, reduce_to: int) -> dict[str, Any]:
    """Everything about one model; a failure records the step and the reason."""
    torch.manual_seed(0)
    row: dict[str, Any] = {"source": source, "family": family, "model": name}
    times: dict[str, float] = {}
    row["phase_seconds"] = times
    step = "build"
    t0 = last = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal last
        now = time.perf_counter()
        times[phase] = round(now - last, 2)
        last = now

    try:
        model = build(source, name).eval()
        own = default_size(source, name, model)
        size = input_size(model, own, reduce_to)
        row["input_size"] = list(size)
        if size != own:
            row["default_input_size"] = list(own)
        lap("build")
        step = "split"
        service = Service(re.sub(r"\W", "_", name), model, input_shape=size)
        row.update(splitter=service.splitter_name, blocks=service.num_blocks,
                   layouts=[b.layout for b in service.boundaries])
        splitter = get_plugins().splitters.get(service.splitter_name)
        top = splitter.max_blocks(model)
        row["max_blocks"] = top
        if top < 2:  # one block recomposes trivially, but there is nothing to stitch
            raise NoCut(f"splitter {service.splitter_name!r} finds no valid cut in {type(model).__name__}: "
                        "nowhere in its graph is exactly one activation tensor live (branches that run "
                        "side by side up to the head), so it stays one block")
        # the splitter's own blocks, not the service's FrozenBlocks: those stay in eval mode
        top_blocks = [m for _, m in splitter.split(model, top)]
        lap("split")
        step = "recomposition"
        spec = service.input_spec
        errors = {"default": {"eval": recomposition_error(model, list(service.blocks), spec)},
                  "max": {"eval": recomposition_error(model, top_blocks, spec),
                          "train": recomposition_error(model, top_blocks, spec, train=True)}}
        del top_blocks
        row["recomposition"] = errors
        worst = max(e for d in errors.values() for e in d.values())
        row["exact"] = worst <= RECOMPOSITION_TOLERANCE
        if not row["exact"]:
            row["failed_at"] = "recomposition"
            row["reason"] = f"recomposition error {worst:.3e} > {RECOMPOSITION_TOLERANCE:.0e}"
        lap("recomposition")
        if export:
            step = "export"
            row["export"] = _export(service, export)
            lap("export")
    except Exception as exc:
        row["failed_at"] = step
        row["reason"] = f"{type(exc).__name__}: {str(exc)[:700]}"
        row["traceback_tail"] = traceback.format_exc().splitlines()[-3:]
        if step != "export":
            row["exact"] = False
        lap(step)
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def _export(service: Service, exporter: str) -> dict[str, Any]:
    """The skip path of the first and the last block, exported with its checks."""
    from codenn.paths.composed import ComposedPath
    from codenn_adapters.onnx_export import export_path

    n = service.num_blocks
    if n < 3:
        return {"ok": None, "why": f"{n} blocks: a skip path needs at least 3"}
    ends = (service.boundaries[0].layout, service.boundaries[n - 2].layout)
    link = "paper" if all(lay in PAPER_LAYOUTS for lay in ends) else "linear"
    path = ComposedPath(f"{service.name}[:1] > {service.name}[{n - 1}:]", [service], link=link)
    first = ""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = export_path(path, tmp, threads=1, exporter=exporter)
        except Exception as exc:  # TorchScript bakes some batch sizes in: dynamo is codenn's first choice
            if exporter != "torchscript":
                raise
            first = f"torchscript: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            result = export_path(path, tmp, threads=1, exporter="auto")
    return {"ok": result.ok, "spec": str(path.spec), "link": link, "exporter": result.exporter,
            "parity": dataclasses.asdict(result.worst()), **({"first_try": first} if first else {})}


def _child(conn: Any, source: str, family: str, name: str, export: str, threads: int, reduce_to: int) -> None:
    torch.set_num_threads(threads)
    conn.send(measure(source, family, name, export, reduce_to))
    conn.close()


def run_capped(source: str, family: str, name: str, *, export: str, cap: float, threads: int,
               reduce_to: int) -> dict[str, Any]:
    """``measure`` in a forked child, killed after ``cap`` seconds (a crash is noticed at once)."""
    ctx = mp.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, source, family, name, export, threads, reduce_to))
    t0 = time.perf_counter()
    proc.start()
    send.close()
    row: dict[str, Any] | None = None
    while row is None and time.perf_counter() - t0 < cap:
        if receive.poll(0.2):
            try:
                row = receive.recv()
            except EOFError:  # the child exited without a result
                break
        elif not proc.is_alive() and not receive.poll(0.2):
            break
    if row is None:
        alive = proc.is_alive()
        row = {"source": source, "family": family, "model": name, "exact": False, "failed_at": "time cap",
               "reason": f"timed out after {cap:.0f} s (killed)" if alive
               else f"the child process died (exit code {proc.exitcode}; -9 is usually out of memory)"}
    proc.join(timeout=5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    receive.close()
    row["wall_seconds"] = round(time.perf_counter() - t0, 2)
    row.setdefault("seconds", row["wall_seconds"])
    return row


# -- what to do about a failure -------------------------------------------------------------------
def advice(row: dict[str, Any]) -> str:
    """What a provider can do about this row's failure."""
    reason = row.get("reason", "")
    at = row.get("failed_at", "")
    if at == "time cap":
        if "timed out" in reason:
            return (f"run it alone with a longer cap (`python benchmarks/coverage.py --families "
                    f"{row['source']}:{row['family']} --cap 900`); a split that is slow on 2 cores is not wrong")
        return "run it alone to see the crash; a model that needs more memory than the machine has"
    if at == "choose":
        return "no variant builds on the meta device; choose the model by name and test it alone"
    if at == "build":
        return "the model itself does not build with these versions of timm/torchvision; nothing codenn can do"
    if "could not trace" in reason:
        return ("torch.fx cannot trace it: make the named module a leaf (FxSplitter(leaf_modules=...) or "
                "timm.layers.register_notrace_module) or write a splitter plugin (docs/writing-plugins.md)")
    if reason.startswith("NoCut"):
        return ("a splitter plugin of its own that cuts each branch at the same depth (a boundary is one "
                "tensor, so the branches must be joined first), or use the model whole as a host")
    if at == "split":
        return "the splitter refused it (see the reason); a splitter plugin of its own is the way"
    if at == "recomposition":
        return "a bug in the generic splitter: the blocks do not recompose the model; report it with this row"
    if at == "export":
        return ("the split is exact; the ONNX export of the skip path failed (see the reason): export the "
                "blocks with TorchScript (`codenn export --exporter torchscript`) or report the operator")
    return "see the reason"


# -- report ---------------------------------------------------------------------------------------
def _fmt_err(row: dict[str, Any]) -> str:
    rec = row.get("recomposition")
    if not rec:
        return "-"
    return f"{max(e for d in rec.values() for e in d.values()):.1e}"


def _fmt_export(row: dict[str, Any]) -> str:
    exp = row.get("export")
    if exp and exp.get("ok") is None:
        return "n/a"
    if exp:
        par = exp["parity"]
        how = " (dynamo)" if exp.get("first_try") else ""
        return f"{'ok' if exp['ok'] else 'FAIL'} {par.get('rel', 0):.1e}{how}"
    return "failed" if row.get("failed_at") == "export" else "-"


def _fmt_size(row: dict[str, Any]) -> str:
    size = "x".join(str(s) for s in row.get("input_size", [])[1:]) or "-"
    own = row.get("default_input_size")
    return f"{size} (own {own[1]}x{own[2]})" if own else size


def markdown(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = ["# Coverage: timm and torchvision families", "",
             "Written by `python benchmarks/coverage.py` (`make bench-coverage`); do not edit by hand.", "",
             "The smallest model of each family (parameters counted on the meta device), random weights, at "
             "its own default input size, or at 224x224 where the default is larger and the model accepts "
             "224 (the input column then shows its own size). Each model: `Service(name, model)` (default "
             "splitter and block count) and the split at the maximum block count; recomposition error in "
             f"eval mode at both counts and in train mode at the maximum (tolerance {RECOMPOSITION_TOLERANCE:.0e}; "
             "the column shows the worst); the two-block skip path `m[:1] > m[N-1:]` (first and last block "
             "of the default split, link `paper` between NCHW/flat boundaries, else `linear`) exported to "
             f"ONNX with `export_path` and the {summary['exporter']} exporter (dynamo where TorchScript fails; "
             "worst relative parity, tolerance "
             "1e-4; the blocks between are not exported). Each model "
             f"runs in its own process with a {summary['cap']:.0f} s cap.", "",
             f"Run: {summary['when']}, {summary['threads']} thread(s), {summary['seconds']:.0f} s in all; "
             f"families: {summary['families']}{' (a subset)' if summary['subset'] else ''}; "
             f"torch {summary['versions']['torch']}, timm {summary['versions']['timm']}, "
             f"torchvision {summary['versions']['torchvision']}.", ""]
    if summary.get("rerun"):
        again = summary["rerun"]
        lines += [f"Measured again after a fix of the benchmark ({again['seconds']:.0f} s): "
                  f"{', '.join(again['families'])}.", ""]
    for source in ("timm", "torchvision"):
        s = summary["by_source"].get(source)
        if s:
            pct = 100 * s["exact"] / max(s["total"], 1)
            lines.append(f"- **{source}**: {s['exact']} of {s['total']} families split exactly ({pct:.0f} %); "
                         f"{s['exported']} of {s['export_tried']} skip paths exported with parity.")
    lines += ["", "| source | family | model | params | input | splitter | blocks (max) | boundary layouts "
              "| recomposition | export | s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        layouts = ", ".join(dict.fromkeys(r.get("layouts", []))) or "-"
        blocks = f"{r['blocks']} ({r.get('max_blocks', '?')})" if "blocks" in r else "-"
        lines.append(f"| {r['source']} | {r['family']} | {r['model']} | {r.get('params', 0) / 1e6:.1f}M | "
                     f"{_fmt_size(r)} | {r.get('splitter', '-')} | {blocks} | {layouts} | {_fmt_err(r)} | "
                     f"{_fmt_export(r)} | {r['seconds']:.0f} |")
    failures = [r for r in rows if r.get("reason")]
    if failures:
        lines += ["", "## Failures: the reason and what to do", ""]
        for r in failures:
            reason = " ".join(r["reason"].split())[:500]
            lines.append(f"- **{r['source']}:{r['family']}** (`{r['model']}`, at {r.get('failed_at', 'check')}): "
                         f"{reason}  \n  *What to do:* {advice(r)}")
    return "\n".join(lines) + "\n"


def _counts(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per source: families, exact splits, skip paths tried and exported with parity."""
    by_source: dict[str, dict[str, int]] = {}
    for r in rows:
        s = by_source.setdefault(r["source"], {"total": 0, "exact": 0, "export_tried": 0, "exported": 0})
        s["total"] += 1
        s["exact"] += bool(r.get("exact"))
        if ("export" in r and r["export"].get("ok") is not None) or r.get("failed_at") == "export":
            s["export_tried"] += 1
            s["exported"] += bool(r.get("export", {}).get("ok"))
    return by_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="", help="comma-separated SOURCE:FAMILY or FAMILY names")
    parser.add_argument("--limit", type=int, default=0, help="only the first N families (0: all)")
    parser.add_argument("--cap", type=float, default=60.0, help="seconds per model before it is killed")
    parser.add_argument("--candidates", type=int, default=4, help="names per family whose parameters are counted")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per model (1: 2 threads on 2 shared cores oversubscribe and run 3x slower)")
    parser.add_argument("--exporter", default="torchscript", choices=("torchscript", "dynamo", "auto"),
                        help="ONNX exporter of the skip path (torchscript: dynamo, codenn's first choice, "
                        "only where TorchScript fails; dynamo adds ~5 s per model)")
    parser.add_argument("--reduce-to", type=int, default=224,
                        help="side of the input used where the model's own is larger and it accepts this (0: never)")
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX export of the skip path")
    parser.add_argument("--render", action="store_true", help="only rewrite --doc from the JSON in --out")
    parser.add_argument("--merge", action="store_true",
                        help="replace the chosen families' rows in the JSON in --out (a partial rerun)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--doc", default=str(DOC))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.render:
        data = json.loads(Path(args.out).read_text())
        atomic_write(args.doc, markdown(data["summary"], data["rows"]).encode())
        return
    get_plugins()  # loaded once here; every forked child inherits it

    chosen = families()
    if args.families:
        wanted = {w.strip() for w in args.families.split(",") if w.strip()}
        chosen = [f for f in chosen if f[1] in wanted or f"{f[0]}:{f[1]}" in wanted]
    if args.limit:
        chosen = chosen[: args.limit]
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for source, family, names in chosen:
        try:
            name, params = smallest(source, names, args.candidates)
        except Exception as exc:
            rows.append({"source": source, "family": family, "model": "-", "exact": False, "failed_at": "choose",
                         "reason": str(exc), "seconds": 0.0})
            continue
        row = {"params": params, **run_capped(source, family, name, export="" if args.no_export else args.exporter, cap=args.cap,
                                             threads=args.threads, reduce_to=args.reduce_to)}
        rows.append(row)
        print(f"{time.perf_counter() - t0:6.0f}s {source:11} {family:24} {name:32} {row.get('splitter', '-'):4} "
              f"{row.get('blocks', '-')!s:>3}/{row.get('max_blocks', '-')!s:<4} err {_fmt_err(row):8} "
              f"export {_fmt_export(row):12} {row['seconds']:6.1f}s {row.get('phase_seconds', '')} "
              f"{row.get('reason', '')[:120]}", flush=True)

    by_source = _counts(rows)
    summary = {"when": time.strftime("%Y-%m-%d %H:%M"), "threads": args.threads, "cap": args.cap, "exporter": args.exporter,
               "reduce_to": args.reduce_to, "seconds": time.perf_counter() - t0, "families": len(rows),
               "subset": bool(args.families or args.limit), "by_source": by_source,
               "versions": {"torch": torch.__version__, "timm": timm.__version__,
                            "torchvision": torchvision.__version__}}
    if args.merge:  # the earlier full run, these families measured again
        data = json.loads(Path(args.out).read_text())
        fresh = {(r["source"], r["family"]): r for r in rows}
        again = sorted(f"{source}:{family}" for source, family in fresh)
        rows = [fresh.pop((r["source"], r["family"]), r) for r in data["rows"]] + list(fresh.values())
        summary.update(when=data["summary"]["when"], seconds=data["summary"]["seconds"], families=len(rows),
                       subset=data["summary"]["subset"], by_source=_counts(rows),
                       rerun={"families": again, "seconds": round(time.perf_counter() - t0, 1)})
    atomic_write(args.out, json.dumps({"summary": summary, "rows": rows}, indent=1).encode())
    atomic_write(args.doc, markdown(summary, rows).encode())
    print(json.dumps(summary["by_source"]), f"{summary['seconds']:.0f} s; wrote {args.out} and {args.doc}")


if __name__ == "__main__":
    main()
