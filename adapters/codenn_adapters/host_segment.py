"""A host provider's part of a trained cross path: entry link, frozen host blocks, exit link.

This is what a host serves for one path ``local[..lout] > host[hin:hout+1] > local[lin..]``
(the ``host-NAME`` part of :func:`codenn_adapters.onnx_export.split_path`). It is built from the
host's own :class:`codenn.Service`, the two public boundary specs of the local provider, and the
path's host-side link weights only: it never holds a local parameter, never sees a label.

Split training (paper, Section III-C: back-propagation stops after the entry link) keeps the
autograd graph of each forward step under its step id until the local provider sends the
gradient of its loss with respect to this segment's output; the segment then back-propagates
into its own links and steps its own AdamW. AdamW is per parameter, so this gives the same
update as in-process training of the whole path.

Errors: :class:`SegmentStateError` (a ``CodennError``) for a split-training call that does not
fit the segment's state; a tensor that does not fit the boundary is
:class:`codenn.errors.BoundaryMismatchError`.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from codenn.blocks import BoundarySpec
from codenn.errors import BoundaryMismatchError, CodennError, ConfigError
from codenn.pathspec import PathSpec
from codenn.runstore import slug
from codenn.served import Served
from codenn.service import Service

if TYPE_CHECKING:
    from codenn.paths import Path


class SegmentStateError(CodennError):
    """A split-training call that does not fit the segment's state (unknown or expired step id)."""


class HostSegment:
    """One served cross path on the host: ``exit_link(host[hin:hout+1](entry_link(x)))``; a
    :class:`codenn.served.ServedModel`."""

    def __init__(
        self,
        spec: PathSpec | str,
        service: Service,
        entry_link: nn.Module,
        exit_link: nn.Module,
        *,
        input_spec: BoundarySpec,
        output_spec: BoundarySpec,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        max_pending: int = 16,
        device: str = "cpu",
    ) -> None:
        self.spec = PathSpec.parse(spec) if isinstance(spec, str) else spec
        # the service given must be the path's host (PathShapeError, a ConfigError, otherwise)
        visit = self.spec.one_host_visit({service.name: service.num_blocks}, host=service.name)
        if lr <= 0 or weight_decay < 0 or max_pending < 1:
            raise ConfigError(f"lr={lr!r} must be > 0, weight_decay={weight_decay!r} >= 0, max_pending={max_pending!r} >= 1")
        self.local_name = visit.local
        self.service = service
        self.hin, self.stop = visit.hin, visit.hout + 1
        self.input_spec, self.output_spec = input_spec, output_spec
        self.device = torch.device(device)
        self.links = nn.ModuleList([entry_link, exit_link]).to(self.device)
        self.lr, self.weight_decay, self.max_pending = lr, weight_decay, max_pending
        self._optimizer: torch.optim.Optimizer | None = None
        self._pending: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.steps_trained = 0
        # the shapes the links produce must be what the host blocks and the local suffix take
        with torch.no_grad():
            probe = self._forward(input_spec.example(batch=2).to(self.device))
        output_spec.check(probe, f"output of host segment {self.name!r}")

    def __getstate__(self) -> dict[str, Any]:
        """What a copy in another process (a Ray Serve replica) gets: links, blocks, specs and
        ``steps_trained``; not the lock, the pending split-training graphs or the optimizer
        state (a copy starts split training afresh)."""
        state = dict(self.__dict__)
        for key in ("_lock", "_pending", "_optimizer"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock, self._pending, self._optimizer = threading.Lock(), OrderedDict(), None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_path(cls, path: Path, **options: Any) -> HostSegment:
        """The host part of an in-process :class:`codenn.paths.Path` (links are copied)."""
        services = cast(Mapping[str, Service], path.services)  # a Path holds Services in an nn.ModuleDict
        host = path.spec.one_host_visit({name: s.num_blocks for name, s in services.items()}).host
        if path.link_sides != (host, host):
            raise ConfigError(f"path {path.spec}: both links must live on host {host!r}, sides are {path.link_sides}")
        return cls(path.spec, services[host], copy.deepcopy(path.links[0]),
                   copy.deepcopy(path.links[1]), input_spec=path.link_specs[0][0],
                   output_spec=path.link_specs[1][1], **options)

    @property
    def name(self) -> str:
        """The model name it is served under: a URL-safe slug of the path spec."""
        return slug(str(self.spec))

    # -- running ------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.links[0](x)
        h = self.service.run(h, self.hin, self.stop)
        return self.links[1](h)

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() == 0 or x.shape[0] < 1:
            raise BoundaryMismatchError(f"input to {self.name!r} has shape {tuple(x.shape)}; expected a batch "
                                        f"of shape [-1, {', '.join(map(str, self.input_spec.shape))}]")
        self.input_spec.check(x, f"input to host segment {self.name!r}")

    def serve(self, x: torch.Tensor) -> Served:
        """The segment's output (on CPU) and the compute seconds it took."""
        self.check_input(x)
        with self._lock:
            t0 = time.perf_counter()
            self.links.eval()
            with torch.inference_mode():
                y = self._forward(x.to(self.device)).cpu()
            return Served(y, time.perf_counter() - t0)

    def infer(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """:meth:`serve` as ``(output, seconds)``, for callers that unpack a pair."""
        served = self.serve(x)
        return served.output, served.seconds

    def train_forward(self, x: torch.Tensor, step: int) -> tuple[torch.Tensor, float]:
        """Forward with autograd into the links; the graph waits under ``step`` for its gradient."""
        self.check_input(x)
        with self._lock:
            t0 = time.perf_counter()
            if self._optimizer is None:
                self._optimizer = torch.optim.AdamW(self.links.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            self.links.train()
            out = self._forward(x.to(self.device))
            self._pending.pop(step, None)
            self._pending[step] = out
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
            return out.detach().cpu(), time.perf_counter() - t0

    def train_backward(self, step: int, grad: torch.Tensor) -> float:
        """Back-propagate dL/d(output) of ``step`` into the links and step the optimizer."""
        with self._lock:
            t0 = time.perf_counter()
            out = self._pending.get(step)
            if out is None:
                raise SegmentStateError(
                    f"segment {self.name!r} has no pending forward for step {step}; pending steps: "
                    f"{list(self._pending) or 'none'} (call train/forward first; at most {self.max_pending} are kept)")
            if tuple(grad.shape) != tuple(out.shape) or grad.dtype != out.dtype:
                raise BoundaryMismatchError(
                    f"gradient for step {step} has shape {list(grad.shape)} and dtype {grad.dtype}; expected shape "
                    f"{list(out.shape)} and dtype {out.dtype} (the output of that step)")
            del self._pending[step]
            if self._optimizer is None:  # unreachable: train_forward created the pending step
                raise SegmentStateError(f"segment {self.name!r} has no optimizer")
            self._optimizer.zero_grad(set_to_none=True)
            out.backward(grad.to(self.device))
            self._optimizer.step()
            self.steps_trained += 1
            return time.perf_counter() - t0

    # -- what may be published ----------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """OIP model metadata: input/output tensors and, as JSON strings in ``parameters``, the
        host's service card, the path and the boundary specs. Never parameters."""
        from codenn_adapters.oip import datatype_of

        def tensor(name: str, spec: BoundarySpec) -> dict[str, Any]:
            return {"name": name, "datatype": datatype_of(spec.dtype), "shape": [-1, *spec.shape]}

        return {
            "name": self.name,
            "versions": ["1"],
            "platform": "codenn",
            "inputs": [tensor("input", self.input_spec)],
            "outputs": [tensor("output", self.output_spec)],
            "parameters": {
                "path": str(self.spec),
                "host": self.service.name,
                "local": self.local_name,
                "service_card": self.service.card.to_json(indent=None),
                "input_spec": _json(self.input_spec),
                "output_spec": _json(self.output_spec),
                "fingerprint_now": self.service.fingerprint(),
                "lr": self.lr,
                "weight_decay": self.weight_decay,
                "steps_trained": self.steps_trained,
            },
        }

    def link_state(self) -> dict[str, torch.Tensor]:
        """The host-side link weights keyed as in the whole path's ``links`` (``0.*`` entry, ``N.*`` exit)."""
        exit_index = len(self.spec.segments) - 2
        out = {f"0.{k}": v.detach().cpu().clone() for k, v in self.links[0].state_dict().items()}
        out.update({f"{exit_index}.{k}": v.detach().cpu().clone() for k, v in self.links[1].state_dict().items()})
        return out

    def save_links(self, file: str | os.PathLike[str]) -> None:
        """Write the host-side link weights as safetensors (atomically), keyed as :meth:`link_state`."""
        from codenn.fileio import atomic_tensors

        atomic_tensors(FsPath(file), self.link_state(), metadata={"spec": str(self.spec), "side": self.service.name})

    def load_link_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load host-side link weights keyed as :meth:`link_state` gives them (other keys ignored)."""
        exit_index = len(self.spec.segments) - 2
        for i, link in ((0, self.links[0]), (exit_index, self.links[1])):
            prefix = f"{i}."
            link.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def _json(spec: BoundarySpec) -> str:
    return json.dumps(spec.to_dict())


def segments_from_run(run_dir: str | os.PathLike[str], service: str, *, specs: Sequence[str] = (),
                      lr: float | None = None, weight_decay: float | None = None, device: str = "cpu",
                      log: Callable[[str], None] = print, **options: Any) -> list[HostSegment]:
    """Every trained cross path of a ``codenn search`` run that visits host ``service`` (or only
    ``specs``), as segments built from the host's own service (rebuilt from the run's config),
    the local provider's public card (from run.json) and only the host-side link tensors of each
    path. ``lr``/``weight_decay`` for split training default to the run's training config."""
    from dataclasses import replace

    from codenn.links import build_link
    from codenn.runstore import RunStore
    from codenn.scenario import base_model

    store = RunStore.open(run_dir)
    run = store.run_config()
    hosts = {h.name: h for h in run.hosts}
    if service not in hosts:
        raise ConfigError(f"run {os.fspath(run_dir)!r} has no host service {service!r}; its hosts: {sorted(hosts)}")
    local_card = store.service_card(run.local.name)
    lr = run.search.train.lr if lr is None else lr
    weight_decay = run.search.train.weight_decay if weight_decay is None else weight_decay
    size = run.local.base.size
    base = replace(hosts[service].base, size=size)
    model, _ = base_model(base, log=log)
    svc = Service(service, model, input_shape=(3, size, size), architecture=base.model)
    sizes = {run.local.name: local_card.num_blocks, service: svc.num_blocks}
    wanted = {str(PathSpec.parse(s).resolve(sizes)) for s in specs}
    fingerprint = svc.fingerprint()
    out = []
    for trained in store.trained():
        spec = PathSpec.parse(trained)
        if len(spec.segments) != 3 or spec.segments[1].service != service or spec.segments[0].service != run.local.name:
            continue
        if wanted and trained not in wanted:
            continue
        store.check_trained_on(trained, {service: fingerprint})
        manifest = store.manifest(trained)
        visit = spec.one_host_visit(sizes)
        lout, lin, hin, stop = visit.lout, visit.lin, visit.hin, visit.hout + 1
        src, dst = local_card.output_of(lout), local_card.input_of(lin)
        factories, opts = manifest["link_factories"], manifest.get("link_options", {})
        entry = build_link(src, svc.card.input_of(hin), factories[0], **opts)
        exit_ = build_link(svc.card.output_of(stop - 1), dst, factories[1], **opts)
        state = store.load_links(trained, prefixes=("0.", "1."))  # host-side links only
        seg = HostSegment(spec, svc, entry, exit_, input_spec=src, output_spec=dst, device=device, lr=lr,
                          weight_decay=weight_decay, **options)
        seg.load_link_state(state)
        out.append(seg)
        log(f"serving {seg.name}: {spec}")
    missing = wanted - {str(seg.spec) for seg in out}
    if missing:
        raise ConfigError(f"run {os.fspath(run_dir)!r} has no trained cross path {sorted(missing)} through {service!r}; "
                          f"trained ones: {[str(seg.spec) for seg in out] or 'none'}")
    if not out:
        raise ConfigError(f"run {os.fspath(run_dir)!r} has no trained cross path "
                          f"{run.local.name} > {service} > {run.local.name}")
    return out
