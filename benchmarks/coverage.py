"""Coverage benchmark: which timm and torchvision families codenn splits exactly, and why not.

For every ``timm.models`` module and every torchvision classification family, the smallest model
(parameters counted on the meta device among the few names that look smallest; nothing is
downloaded, weights are random), at the model's own default input size:

- ``Service(name, model)`` with the default splitter choice and block count;
- the recomposition error (eval and train mode, batch 2) at the default and the maximum block count;
- one skip path ``m[:1] > m[2:]`` (default link) exported to ONNX with parity (``export_path``).

Each model runs in a forked child with a time cap, so one slow or crashing model costs only its
cap. Writes JSON (``--out``) and a markdown table (``--doc``): one row per family, and the reason
for every failure.

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
from pathlib import Path as FsPath
from typing import Any

import timm
import torch
import torchvision
from torch import nn

from codenn import Service
from codenn.fileio import atomic_write
from codenn.testing import RECOMPOSITION_TOLERANCE, recomposition_error

ROOT = FsPath(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "coverage.json"
DOC = ROOT / "docs" / "coverage.md"
#: name fragments of small variants, smallest first: candidates are ranked by them
SIZE_WORDS = ("pico", "femto", "atto", "zepto", "nano", "micro", "xxs", "xxsmall", "tiny", "xs", "xsmall",
              "mini", "small", "light", "lite", "050", "075", "_s", "b0", "base")
BIG_WORDS = ("large", "huge", "giant", "gigantic", "xlarge", "448", "384", "512", "_plus", "dist")
#: torchvision builders whose train-mode forward returns auxiliary outputs unless told not to
TV_OPTIONS: dict[str, dict[str, Any]] = {"googlenet": {"aux_logits": False, "init_weights": True},
                                         "inception_v3": {"aux_logits": False, "init_weights": True}}


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
    with torch.device(device):
        if source == "timm":
            model: nn.Module = timm.create_model(name, pretrained=False)
        else:
            model = torchvision.models.get_model(name, weights=None, **TV_OPTIONS.get(name, {}))
    return model


def smallest(source: str, names: list[str], candidates: int) -> tuple[str, int]:
    """The model with fewest parameters among the ``candidates`` best-ranked names (meta device)."""
    best: tuple[int, str] | None = None
    for name in sorted(names, key=_rank)[:candidates]:
        try:
            params = sum(p.numel() for p in build(source, name, "meta").parameters())
        except Exception:  # a builder that cannot run on meta: try the next name
            continue
        if best is None or params < best[0]:
            best = (params, name)
    if best is None:
        raise RuntimeError(f"none of {sorted(names, key=_rank)[:candidates]} builds on the meta device")
    return best[1], best[0]


def input_size(source: str, name: str, model: nn.Module) -> tuple[int, int, int]:
    if source == "timm":
        size = tuple(getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224)))
        return (int(size[0]), int(size[1]), int(size[2]))
    return (3, 299, 299) if name == "inception_v3" else (3, 224, 224)


# -- one model ------------------------------------------------------------------------------------
def measure(source: str, family: str, name: str, export: bool) -> dict[str, Any]:
    """Everything about one model; a failure records the step and the reason."""
    torch.manual_seed(0)
    row: dict[str, Any] = {"source": source, "family": family, "model": name}
    step = "build"
    t0 = time.perf_counter()
    try:
        model = build(source, name).eval()
        row["input_size"] = list(size := input_size(source, name, model))
        step = "split"
        service = Service(re.sub(r"\W", "_", name), model, input_shape=size)
        row.update(splitter=service.splitter_name, blocks=service.num_blocks,
                   layouts=[b.layout for b in service.boundaries])
        splitter = _splitter(service.splitter_name)
        top = splitter.max_blocks(model)
        row["max_blocks"] = top
        step = "recomposition"
        errors: dict[str, dict[str, float]] = {}
        for label, count in (("default", service.num_blocks), ("max", top)):
            blocks = [m for _, m in splitter.split(model, count)]
            errors[label] = {mode: recomposition_error(model, blocks, service.input_spec, train=mode == "train")
                             for mode in ("eval", "train")}
        row["recomposition"] = errors
        worst = max(e for d in errors.values() for e in d.values())
        row["exact"] = worst <= RECOMPOSITION_TOLERANCE
        if not row["exact"]:
            row["reason"] = f"recomposition error {worst:.3e} > {RECOMPOSITION_TOLERANCE:.0e}"
        if export and service.num_blocks >= 3:
            step = "export"
            row["export"] = _export(service)
    except Exception as exc:
        row["failed_at"] = step
        row["reason"] = f"{type(exc).__name__}: {str(exc)[:600]}"
        row["traceback_tail"] = traceback.format_exc().splitlines()[-3:]
        if step in ("build", "split", "recomposition"):
            row["exact"] = False
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def _splitter(name: str) -> Any:
    from codenn.plugins import get_plugins

    return get_plugins().splitters.get(name)


def _export(service: Service) -> dict[str, Any]:
    from codenn.paths import Path
    from codenn_adapters.onnx_export import export_path

    path = Path(f"{service.name}[:1] > {service.name}[2:]", [service])
    with tempfile.TemporaryDirectory() as tmp:
        result = export_path(path, tmp, threads=1)
    worst = result.worst()
    return {"ok": result.ok, "spec": str(path.spec), "parity": dataclasses.asdict(worst)}


def _child(queue: Any, source: str, family: str, name: str, export: bool, threads: int) -> None:
    torch.set_num_threads(threads)
    queue.put(measure(source, family, name, export))


def run_capped(source: str, family: str, name: str, *, export: bool, cap: float, threads: int) -> dict[str, Any]:
    """``measure`` in a forked child, killed after ``cap`` seconds."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, source, family, name, export, threads))
    t0 = time.perf_counter()
    proc.start()
    try:
        row: dict[str, Any] = queue.get(timeout=cap)
    except Exception:
        row = {"source": source, "family": family, "model": name, "exact": False, "failed_at": "time cap",
               "reason": f"no result within the {cap:.0f} s cap (killed)" if proc.is_alive()
               else f"the child process died (exit code {proc.exitcode})",
               "seconds": round(time.perf_counter() - t0, 2)}
    proc.join(timeout=5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return row


# -- report ---------------------------------------------------------------------------------------
def _fmt_err(row: dict[str, Any]) -> str:
    rec = row.get("recomposition")
    if not rec:
        return "-"
    return f"{max(e for d in rec.values() for e in d.values()):.1e}"


def _fmt_export(row: dict[str, Any]) -> str:
    exp = row.get("export")
    if exp:
        par = exp["parity"]
        return f"{'ok' if exp['ok'] else 'FAIL'} {par.get('rel', 0):.1e}"
    return "failed" if row.get("failed_at") == "export" else "-"


def markdown(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = ["# Coverage: timm and torchvision families", "",
             "Written by `python benchmarks/coverage.py` (`make bench-coverage`); do not edit by hand.",
             "The smallest model of each family, random weights, its own default input size; split at the "
             "default and the maximum block count, recomposition error (max over eval and train mode, "
             "tolerance 1e-5), and the skip path `m[:1] > m[2:]` exported to ONNX (worst parity).", "",
             f"Run: {summary['when']}, {summary['threads']} thread(s), {summary['seconds']:.0f} s; "
             f"families: {summary['families']}{' (a subset)' if summary['subset'] else ''}.", ""]
    for source in ("timm", "torchvision"):
        s = summary["by_source"].get(source)
        if s:
            lines.append(f"- **{source}**: {s['exact']} of {s['total']} families split exactly; "
                         f"{s['exported']} of {s['export_tried']} skip paths exported with parity.")
    lines += ["", "| source | family | model | params | input | splitter | blocks (max) | boundary layouts "
              "| recomposition | export | s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        layouts = ", ".join(dict.fromkeys(r.get("layouts", []))) or "-"
        blocks = f"{r['blocks']} ({r.get('max_blocks', '?')})" if "blocks" in r else "-"
        size = "x".join(str(s) for s in r.get("input_size", [])[1:]) or "-"
        lines.append(f"| {r['source']} | {r['family']} | {r['model']} | {r.get('params', 0) / 1e6:.1f}M | {size} | "
                     f"{r.get('splitter', '-')} | {blocks} | {layouts} | {_fmt_err(r)} | {_fmt_export(r)} | "
                     f"{r['seconds']:.0f} |")
    failures = [r for r in rows if r.get("reason")]
    if failures:
        lines += ["", "## Failures and their reasons", ""]
        for r in failures:
            lines.append(f"- **{r['source']}:{r['family']}** (`{r['model']}`, at {r.get('failed_at', 'check')}): "
                         f"{r['reason'].splitlines()[0] if r['reason'] else ''}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="", help="comma-separated SOURCE:FAMILY or FAMILY names")
    parser.add_argument("--limit", type=int, default=0, help="only the first N families (0: all)")
    parser.add_argument("--cap", type=float, default=90.0, help="seconds per model before it is killed")
    parser.add_argument("--candidates", type=int, default=4, help="names per family whose parameters are counted")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX export of the skip path")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--doc", default=str(DOC))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

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
        row = {"params": params, **run_capped(source, family, name, export=not args.no_export, cap=args.cap,
                                             threads=args.threads)}
        rows.append(row)
        print(f"{source:11} {family:24} {name:36} {row.get('splitter', '-'):6} {row.get('blocks', '-')!s:>3}/"
              f"{row.get('max_blocks', '-')!s:<4} err {_fmt_err(row):8} export {_fmt_export(row):12} "
              f"{row['seconds']:6.1f}s {row.get('reason', '')[:100]}", flush=True)

    by_source: dict[str, dict[str, int]] = {}
    for r in rows:
        s = by_source.setdefault(r["source"], {"total": 0, "exact": 0, "export_tried": 0, "exported": 0})
        s["total"] += 1
        s["exact"] += bool(r.get("exact"))
        if "export" in r or r.get("failed_at") == "export":
            s["export_tried"] += 1
            s["exported"] += bool(r.get("export", {}).get("ok"))
    summary = {"when": time.strftime("%Y-%m-%d %H:%M"), "threads": args.threads,
               "seconds": time.perf_counter() - t0, "families": len(rows),
               "subset": bool(args.families or args.limit), "by_source": by_source,
               "versions": {"torch": torch.__version__, "timm": timm.__version__,
                            "torchvision": torchvision.__version__}}
    atomic_write(args.out, json.dumps({"summary": summary, "rows": rows}, indent=1).encode())
    atomic_write(args.doc, markdown(summary, rows).encode())
    print(json.dumps(summary["by_source"]), f"{summary['seconds']:.0f} s; wrote {args.out} and {args.doc}")


if __name__ == "__main__":
    main()
