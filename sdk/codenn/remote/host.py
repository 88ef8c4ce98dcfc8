"""A host provider's side of a run: the segments it serves, built from its own service and only
its own link tensors, and the checkpoints that make its split training durable."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from codenn.errors import ConfigError
from codenn.paths.links import build_link
from codenn.paths.spec import PathSpec
from codenn.remote.segment import HostSegment
from codenn.remote.served_model import TrainableModel
from codenn.search.store import RunStore
from codenn.train.scenario import Log

log = logging.getLogger("codenn.host")


def segments_from_run(run: str | os.PathLike[str] | RunStore, service: str, *, specs: Sequence[str] = (),
                      lr: float | None = None, weight_decay: float | None = None, device: str = "cpu",
                      log: Log = print, **options: Any) -> list[HostSegment]:
    """Every trained cross path of a ``codenn search`` run that visits host ``service`` (or only
    ``specs``), as segments built from the host's own service (rebuilt alone from the run's
    config), the local provider's public card (from run.json) and only the host-side link tensors
    of each path. ``lr``/``weight_decay`` for split training default to the run's training config."""
    store = run if isinstance(run, RunStore) else RunStore.open(run)
    config = store.run_config()
    if service not in {h.name for h in config.hosts}:
        raise ConfigError(f"run {str(store.root)!r} has no host service {service!r}; its hosts: "
                          f"{sorted(h.name for h in config.hosts)}")
    local_card = store.service_card(config.local.name)
    lr = config.search.train.lr if lr is None else lr
    weight_decay = config.search.train.weight_decay if weight_decay is None else weight_decay
    svc = store.services(only=[service], log=log)[service]
    sizes = {config.local.name: local_card.num_blocks, service: svc.num_blocks}
    wanted = {str(PathSpec.parse(s).resolve(sizes)) for s in specs}
    fingerprint = svc.fingerprint()
    out = []
    for trained in store.trained():
        spec = PathSpec.parse(trained)
        if len(spec.segments) != 3 or spec.segments[1].service != service or spec.segments[0].service != config.local.name:
            continue
        if wanted and trained not in wanted:
            continue
        store.check_trained_on(trained, {service: fingerprint})
        manifest = store.manifest(trained)
        visit = spec.one_host_visit(sizes)
        src, dst = local_card.output_of(visit.lout), local_card.input_of(visit.lin)
        opts = dict(manifest.link_options)
        entry = build_link(src, svc.card.input_of(visit.hin), manifest.link_factories[0], **opts)
        exit_ = build_link(svc.card.output_of(visit.hout), dst, manifest.link_factories[1], **opts)
        seg = HostSegment(spec, svc, entry, exit_, input_spec=src, output_spec=dst, device=device, lr=lr,
                          weight_decay=weight_decay, **options)
        seg.load_link_state(store.load_links(trained, prefixes=("0.", "1.")))  # host-side links only
        out.append(seg)
        log(f"serving {seg.name}: {spec}")
    missing = wanted - {str(seg.spec) for seg in out}
    if missing:
        raise ConfigError(f"run {str(store.root)!r} has no trained cross path {sorted(missing)} through {service!r}; "
                          f"trained ones: {[str(seg.spec) for seg in out] or 'none'}")
    if not out:
        raise ConfigError(f"run {str(store.root)!r} has no trained cross path "
                          f"{config.local.name} > {service} > {config.local.name}")
    return out


def checkpoint_file(save_dir: str | os.PathLike[str], model: str) -> Path:
    """Where a served model's split-training checkpoint lives."""
    return Path(save_dir) / f"{model}.safetensors"


def resume_checkpoints(models: Sequence[TrainableModel], save_dir: str | os.PathLike[str],
                       log_line: Callable[[str], None] = log.info) -> dict[str, int]:
    """Load each model's checkpoint from ``save_dir`` where one exists (after its fingerprint
    check); returns the split-training steps each resumed."""
    resumed = {}
    for model in models:
        file = checkpoint_file(save_dir, model.name)
        if file.exists():
            resumed[model.name] = model.load_checkpoint(file)
            log_line(f"resumed {model.name} from {file} ({resumed[model.name]} split-training steps)")
    return resumed
