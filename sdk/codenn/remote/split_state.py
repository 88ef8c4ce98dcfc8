"""A host segment's split-training state, one per calling provider, and its durable checkpoint.

Why per provider: two local providers that may train the same served path must not see, steal
or disturb each other's pending steps; each gets its own pending forward graphs, its own AdamW
moments and its own ledger of applied steps. Why a ledger: a ``train/backward`` retried after a
timeout must not apply the same gradient twice, so an applied step answers again with what it
answered first, and a different gradient for it is refused.

The checkpoint is one safetensors file (no pickle): the host-side link weights keyed as
:meth:`HostSegment.link_state` gives them, every provider's optimizer tensors under
``optimizer/INDEX/PARAM/NAME``, and in the metadata the path, the host blocks' fingerprint and,
per provider, its step counters, optimizer settings and recent ledger.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

import torch
from torch import nn

from codenn.errors import ConfigError, ConflictError

FORMAT = "codenn-host-checkpoint/1"
LEDGER_SIZE = 64
"""Applied steps remembered per provider, so that a retried backward is answered, not re-applied."""


class SegmentStateError(ConflictError):
    """A split-training call that does not fit the segment's state (unknown or expired step id,
    a step applied before with another gradient)."""


def digest(t: torch.Tensor) -> str:
    """A short hash of a tensor's bytes: how a retried backward is recognised as the same one."""
    data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass
class Applied:
    """What one applied backward answered."""

    digest: str
    seconds: float


@dataclass
class ProviderTraining:
    """One provider's split training of one segment."""

    optimizer: torch.optim.Optimizer
    pending: OrderedDict[int, tuple[int, torch.Tensor]] = field(default_factory=OrderedDict)
    """step -> (links version it ran on, its output with the autograd graph)"""
    applied: OrderedDict[int, Applied] = field(default_factory=OrderedDict)
    steps: int = 0
    last_step: int | None = None

    def remember(self, step: int, record: Applied) -> None:
        self.applied[step] = record
        self.steps += 1
        self.last_step = step
        while len(self.applied) > LEDGER_SIZE:
            self.applied.popitem(last=False)

    def public(self) -> dict[str, Any]:
        """What the provider itself may learn about its training (never another's)."""
        return {"steps_trained": self.steps, "last_step": self.last_step,
                "next_step": 0 if self.last_step is None else self.last_step + 1,
                "pending_steps": list(self.pending)}


def finite_count(t: torch.Tensor) -> int:
    """How many values of ``t`` are NaN or infinite (0 for integer tensors)."""
    if not (t.is_floating_point() or t.is_complex()):
        return 0
    return int((~torch.isfinite(t)).sum())


def snapshot(links: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Copies of link weights and optimizer state, to roll a refused step back."""
    import copy

    return ({k: v.detach().clone() for k, v in links.state_dict().items()}, copy.deepcopy(optimizer.state_dict()))


# -- the checkpoint file ---------------------------------------------------------------------------
def checkpoint_tensors(link_state: Mapping[str, torch.Tensor], trainers: Mapping[str, ProviderTraining]
                       ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, per-provider metadata) of a checkpoint."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in link_state.items()}
    providers: dict[str, Any] = {}
    for index, (name, tr) in enumerate(sorted(trainers.items())):
        state = tr.optimizer.state_dict()
        for param, values in state["state"].items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optimizer/{index}/{param}/{key}"] = value.detach().cpu().contiguous()
        providers[name] = {
            "index": index, "steps": tr.steps, "last_step": tr.last_step,
            "param_groups": state["param_groups"],
            "ledger": [[step, a.digest, a.seconds] for step, a in tr.applied.items()],
        }
    return tensors, providers


def write_checkpoint(file: FsPath, link_state: Mapping[str, torch.Tensor], trainers: Mapping[str, ProviderTraining],
                     *, spec: str, side: str, fingerprint: str) -> None:
    """Write atomically (temporary file, fsync, rename, fsync of the folder)."""
    from codenn.fileio import atomic_tensors

    tensors, providers = checkpoint_tensors(link_state, trainers)
    atomic_tensors(file, tensors, metadata={"format": FORMAT, "spec": spec, "side": side, "fingerprint": fingerprint,
                                            "providers": json.dumps(providers)})


def read_checkpoint(file: FsPath, *, spec: str, fingerprint: str
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor]]:
    """(link state, per-provider metadata, optimizer tensors) of a checkpoint written for this path
    on these host blocks; :class:`ConfigError` for any other."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (OSError, SafetensorError) as exc:
        raise ConfigError(f"checkpoint {str(file)!r} cannot be read as safetensors: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{str(file)!r} is not a codenn host checkpoint (format {meta.get('format')!r}, "
                          f"expected {FORMAT!r})")
    if meta.get("spec") != spec:
        raise ConfigError(f"checkpoint {str(file)!r} is of path {meta.get('spec')!r}, not {spec!r}")
    if meta.get("fingerprint") != fingerprint:
        raise ConfigError(f"checkpoint {str(file)!r} was trained on host blocks with fingerprint "
                          f"{meta.get('fingerprint')!r}, but the blocks served now have {fingerprint!r}: the host "
                          "model changed, the links do not fit it")
    links = {k: v for k, v in tensors.items() if not k.startswith("optimizer/")}
    bad = [k for k, v in links.items() if finite_count(v)]
    if bad:
        raise ConfigError(f"checkpoint {str(file)!r} holds non-finite link weights in {bad}; refusing to serve them")
    optim = {k: v for k, v in tensors.items() if k.startswith("optimizer/")}
    return links, json.loads(meta.get("providers", "{}")), optim


def restore_trainer(meta: Mapping[str, Any], optim: Mapping[str, torch.Tensor], params: Iterable[nn.Parameter],
                    make: Any) -> ProviderTraining:
    """One provider's state from a checkpoint: a fresh optimizer loaded with the saved moments."""
    optimizer: torch.optim.Optimizer = make(params)
    prefix = f"optimizer/{meta['index']}/"
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in optim.items():
        if key.startswith(prefix):
            param, name = key[len(prefix):].split("/", 1)
            state.setdefault(int(param), {})[name] = value
    groups = [{**g, **({"betas": tuple(g["betas"])} if "betas" in g else {})} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    tr = ProviderTraining(optimizer, steps=int(meta["steps"]), last_step=meta["last_step"])
    for step, dig, seconds in meta.get("ledger", []):
        tr.applied[int(step)] = Applied(str(dig), float(seconds) if math.isfinite(seconds) else 0.0)
    return tr
