"""A CNN <-> ViT cross path on the embedded data (issue 11, item 4): accuracy and export parity.

The local provider is the demo's AlexNet (scikit-learn digits, 64 px, cached); the host is a
timm ViT-Tiny (patch 8 at 64 px, random initialisation, nothing downloaded) trained here on the
rendered-shapes task, plus the same ViT with random weights as a control. Both are cut by the
generic ``fx`` splitter; links are ``linear`` (least-squares initialised, then trained like the
search trains them). The trained cross path is exported per provider side with parity and the
no-foreign-parameter check.

    python benchmarks/cross_family.py [--host-epochs 3] [--epochs 3]

Prints a table and writes benchmarks/results/cross_family.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F

from codenn import Service
from codenn.config.run import RunConfig
from codenn.fileio import atomic_json
from codenn.model.service import services_by_name
from codenn.paths.composed import ComposedPath
from codenn.train.base_models import evaluate_model
from codenn.train.data import tensors
from codenn.train.features import FeatureCache
from codenn.train.lstsq import init_path_links
from codenn.train.scenario import scenario_from_config
from codenn.train.tasks import task_splits
from codenn.train.trainer import LinkTrainer, accuracy
from codenn_adapters.onnx_export import export_path

RESULTS = Path(__file__).resolve().parent / "results" / "cross_family.json"


def vit_host(task: str, size: int, epochs: int, seed: int = 0) -> tuple[torch.nn.Module, float]:
    """A ViT-Tiny (patch 8) trained ``epochs`` on ``task``; its test accuracy there."""
    splits = task_splits(task, size, seed)
    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=size, patch_size=8,
                              num_classes=splits.num_classes)
    x, y = tensors(splits.train)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        for idx in torch.randperm(len(y), generator=gen).split(64):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        print(f"  vit on {task}: epoch {epoch + 1}/{epochs} ({time.perf_counter() - t0:.0f} s)", flush=True)
    xt, yt = tensors(splits.test)
    return model, evaluate_model(model, xt, yt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="link training epochs per path")
    parser.add_argument("--json", default=str(RESULTS))
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    run = RunConfig()
    scenario = scenario_from_config(run, log=print)
    local, splits, size = scenario.local, scenario.splits, run.local.base.size
    trained, host_acc = vit_host("shapes", size, args.host_epochs)
    torch.manual_seed(1)
    random_vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=size, patch_size=8)
    hosts = {"vit": Service("vit", trained, input_shape=(3, size, size)),
             "vit_random": Service("vit_random", random_vit, input_shape=(3, size, size))}
    services = services_by_name([local, *hosts.values()])
    data = {part: tensors(getattr(splits, part)) for part in ("train", "val", "test")}
    caches = {part: FeatureCache(services, x) for part, (x, _) in data.items()}
    cfg = run.search.train
    specs = {
        "original": f"{local.name}[:]",
        "skip": f"{local.name}[:2] > {local.name}[5:]",
        "cross, trained ViT": f"{local.name}[:2] > vit[1:4] > {local.name}[5:]",
        "cross, random ViT": f"{local.name}[:2] > vit_random[1:4] > {local.name}[5:]",
    }
    rows: list[dict[str, Any]] = []
    paths: dict[str, ComposedPath] = {}
    for label, spec in specs.items():
        torch.manual_seed(0)
        path = ComposedPath(spec, services, link="linear")
        t0 = time.perf_counter()
        ls = init_path_links(path, caches["train"], cfg.ls_samples, cfg.ls_ridge) if path.links else []
        if path.links:
            LinkTrainer(path, replace(cfg, epochs=args.epochs, progress=False), caches["train"],
                        data["train"][1]).train_epochs(args.epochs)
        st = path.stats()
        rows.append({"path": label, "spec": str(path.spec), "ls_initialised": ls,
                     "val_accuracy": accuracy(path, caches["val"], data["val"][1]),
                     "test_accuracy": accuracy(path, caches["test"], data["test"][1]),
                     "local_gflops": st.local_flops / 1e9, "host_gflops": st.host_flops / 1e9,
                     "link_params": st.link_params,
                     "seconds": round(time.perf_counter() - t0, 1)})
        paths[label] = path
        print(f"  {label}: {spec}: test {rows[-1]['test_accuracy']:.3f}", flush=True)
    for s in services.values():
        s.verify_frozen()
    with tempfile.TemporaryDirectory() as tmp:
        result = export_path(paths["cross, trained ViT"].eval(), Path(tmp) / "onnx", real_inputs=data["test"][0][:8],
                             log=lambda m: None)
    parity = max(p.rel for p in result.parity)
    print("\n| path | spec | val acc | test acc | local GFLOPs | host GFLOPs | link params | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['path']} | `{r['spec']}` | {r['val_accuracy']:.3f} | {r['test_accuracy']:.3f} | "
              f"{r['local_gflops']:.4f} | {r['host_gflops']:.4f} | {r['link_params']:,} | {r['seconds']} |")
    print(f"\nViT host on shapes: test accuracy {host_acc:.3f} after {args.host_epochs} epochs")
    print(f"export of the trained cross path: {', '.join(f.name for f in result.files)}; worst relative parity "
          f"{parity:.2e}; leak checks: {', '.join(c.file for c in result.leaks)}")
    atomic_json(Path(args.json), {
        "rows": rows, "vit_host_test_accuracy": host_acc, "host_epochs": args.host_epochs, "link_epochs": args.epochs,
        "export": {"files": [f.name for f in result.files], "worst_relative_parity": parity,
                   "leak_checked": [c.file for c in result.leaks], "exporter": result.exporter},
        "torch_threads": torch.get_num_threads(), "wall_seconds": round(time.perf_counter() - t_start, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
