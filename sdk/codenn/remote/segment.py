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

Split-training state is kept per calling provider (:mod:`codenn.remote.split_state`): its own
pending graphs, AdamW moments and ledger of applied steps, so a backward retried after a timeout
is answered again instead of applied twice. A step whose gradients or resulting link weights
are not finite is rolled back and refused: one careless peer cannot poison what every other
peer is served. :meth:`HostSegment.save_checkpoint` / :meth:`HostSegment.load_checkpoint` make
the training survive a crash.

Errors: :class:`SegmentStateError` (a ``CodennError``) for a split-training call that does not
fit the segment's state; a tensor that does not fit the boundary is
:class:`codenn.errors.BoundaryMismatchError`, one with NaN or inf values
:class:`codenn.errors.NonFiniteError`.
"""
from __future__ import annotations

import copy
import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from codenn.errors import BoundaryMismatchError, ConfigError, NonFiniteError
from codenn.model.blocks import BoundarySpec
from codenn.model.service import Service
from codenn.paths.spec import PathSpec, slug
from codenn.remote.served_model import Served, tensor_metadata
from codenn.remote.split_state import (
    Applied,
    ProviderTraining,
    SegmentStateError,
    digest,
    finite_count,
    read_checkpoint,
    restore_trainer,
    snapshot,
    write_checkpoint,
)

if TYPE_CHECKING:
    from codenn.paths.composed import ComposedPath

__all__ = ["HostSegment", "SegmentStateError"]


class HostSegment:
    """One served cross path on the host: ``exit_link(host[hin:hout+1](entry_link(x)))``; a
    :class:`codenn.remote.served_model.ServedModel`."""

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
        max_pending: int = 4,
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
        self._trainers: dict[str, ProviderTraining] = {}
        self._lock = threading.Lock()
        self.steps_trained = 0
        self._version = 0  # bumped by every applied step: a pending graph of an older version is stale
        # the shapes the links produce must be what the host blocks and the local suffix take
        with torch.no_grad():
            probe = self._forward(input_spec.example(batch=2).to(self.device))
        output_spec.check(probe, f"output of host segment {self.name!r}")

    def __getstate__(self) -> dict[str, Any]:
        """What a copy in another process (a Ray Serve replica) gets: links, blocks, specs and
        ``steps_trained``; not the lock nor any provider's split-training state (pending graphs,
        optimizer: a copy starts split training afresh)."""
        state = dict(self.__dict__)
        for key in ("_lock", "_trainers"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock, self._trainers, self._version = threading.Lock(), {}, 0

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_path(cls, path: ComposedPath, **options: Any) -> HostSegment:
        """The host part of an in-process :class:`codenn.paths.ComposedPath` (links are copied)."""
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
        out: torch.Tensor = self.links[1](h)
        return out

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() == 0 or x.shape[0] < 1:
            raise BoundaryMismatchError(f"input to {self.name!r} has shape {tuple(x.shape)}; expected a batch "
                                        f"of shape [-1, {', '.join(map(str, self.input_spec.shape))}]")
        self.input_spec.check(x, f"input to host segment {self.name!r}")
        _refuse_non_finite(x, "input", self.name)

    def serve(self, x: torch.Tensor) -> Served:
        """The segment's output (on CPU) and the compute seconds it took."""
        self.check_input(x)
        with self._lock:
            t0 = time.perf_counter()
            self.links.eval()
            with torch.inference_mode():
                y = self._forward(x.to(self.device)).cpu()
            seconds = time.perf_counter() - t0
        _refuse_non_finite(y, "output", self.name, " for this input (values too large for the model?)")
        return Served(y, seconds)

    def infer(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """:meth:`serve` as ``(output, seconds)``, for callers that unpack a pair."""
        served = self.serve(x)
        return served.output, served.seconds

    def _trainer(self, provider: str) -> ProviderTraining:
        tr = self._trainers.get(provider)
        if tr is None:
            tr = self._trainers[provider] = ProviderTraining(self._new_optimizer(self.links.parameters()))
        return tr

    def _new_optimizer(self, params: Any) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def train_forward(self, x: torch.Tensor, step: int, provider: str = "default") -> tuple[torch.Tensor, float]:
        """Forward with autograd into the links; the graph waits under (``provider``, ``step``)
        for its gradient. A forward for a step already applied is refused (the ledger answers
        its backward), so a retried step can never be trained twice."""
        self.check_input(x)
        with self._lock:
            t0 = time.perf_counter()
            tr = self._trainer(provider)
            if step in tr.applied:
                raise SegmentStateError(f"step {step} of {self.name!r} was already applied; your next step is "
                                        f"{tr.public()['next_step']}")
            self.links.train()
            out = self._forward(x.to(self.device))
            y = out.detach().cpu()
            if finite_count(y):
                raise NonFiniteError(f"output of {self.name!r} for step {step} has {finite_count(y)} non-finite "
                                     "values; the step is refused")
            for stale in [s for s, (version, _) in tr.pending.items() if version != self._version]:
                del tr.pending[stale]  # computed on links that have changed since: never back-propagated
            tr.pending.pop(step, None)
            tr.pending[step] = (self._version, out)
            while len(tr.pending) > self.max_pending:
                tr.pending.popitem(last=False)
            return y, time.perf_counter() - t0

    def train_backward(self, step: int, grad: torch.Tensor, provider: str = "default") -> float:
        """Back-propagate dL/d(output) of ``step`` into the links and step ``provider``'s optimizer.

        The same gradient sent again for an applied step (a retry after a timeout) answers what
        it answered first and changes nothing; a step whose gradients or new link weights are not
        finite is rolled back and refused (:class:`NonFiniteError`)."""
        _refuse_non_finite(grad, "grad", self.name)
        with self._lock:
            t0 = time.perf_counter()
            tr = self._trainer(provider)
            done = tr.applied.get(step)
            if done is not None:
                if done.digest != digest(grad):
                    raise SegmentStateError(f"step {step} of {self.name!r} was already applied with another "
                                            "gradient; a retry must send the same one")
                return done.seconds
            version, out = tr.pending.get(step, (self._version, None))
            if out is not None and version != self._version:
                del tr.pending[step]
                raise SegmentStateError(
                    f"the forward of step {step} ran on links that another step has changed since; its gradient "
                    "no longer applies: send train/forward for it again (one step at a time per path)")
            if out is None:
                raise SegmentStateError(
                    f"segment {self.name!r} has no pending forward for step {step} from {provider!r}; your pending steps: "
                    f"{list(tr.pending) or 'none'} (call train/forward first; at most {self.max_pending} are kept)")
            if tuple(grad.shape) != tuple(out.shape) or grad.dtype != out.dtype:
                raise BoundaryMismatchError(
                    f"gradient for step {step} has shape {list(grad.shape)} and dtype {grad.dtype}; expected shape "
                    f"{list(out.shape)} and dtype {out.dtype} (the output of that step)")
            del tr.pending[step]
            tr.optimizer.zero_grad(set_to_none=True)
            out.backward(grad.to(self.device))
            bad = sum(finite_count(p.grad) for p in self.links.parameters() if p.grad is not None)
            if bad:  # nothing was changed yet: drop the gradients, keep the links as they are
                tr.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteError(f"step {step} of {self.name!r} gives {bad} non-finite link gradients; it was "
                                     "refused and not applied")
            weights, moments = snapshot(self.links, tr.optimizer)
            tr.optimizer.step()
            bad = sum(finite_count(p.detach()) for p in self.links.parameters()) +\
                sum(finite_count(v) for st in tr.optimizer.state.values() for v in st.values()
                    if isinstance(v, torch.Tensor))  # an inf moment would stall every later step
            if bad:
                self.links.load_state_dict(weights)
                tr.optimizer.load_state_dict(moments)
                tr.optimizer.zero_grad(set_to_none=True)
                self._version += 1  # restored in place: graphs saved before are stale, as after any change
                raise NonFiniteError(f"step {step} of {self.name!r} would make {bad} link weights or optimizer "
                                     "moments non-finite; it was rolled back and not applied")
            seconds = time.perf_counter() - t0
            tr.remember(step, Applied(digest(grad), seconds))
            self.steps_trained += 1
            self._version += 1
            return seconds

    def train_state(self, provider: str = "default") -> dict[str, Any]:
        """``provider``'s own split-training counters (what a resuming trainer needs), nobody else's."""
        with self._lock:
            tr = self._trainers.get(provider)
            return tr.public() if tr is not None else\
                {"steps_trained": 0, "last_step": None, "next_step": 0, "pending_steps": []}

    # -- durability ---------------------------------------------------------------------------
    def save_checkpoint(self, file: str | os.PathLike[str]) -> None:
        """Links and every provider's optimizer and counters, atomically and durably (safetensors)."""
        with self._lock:
            write_checkpoint(Path(file), self.link_state(), self._trainers, spec=str(self.spec),
                             side=self.service.name, fingerprint=self.service.fingerprint())

    def load_checkpoint(self, file: str | os.PathLike[str]) -> int:
        """Resume from :meth:`save_checkpoint`'s file after checking it is of this path on these very
        host blocks (fingerprint); returns the steps it holds."""
        links, providers, optim = read_checkpoint(Path(file), spec=str(self.spec),
                                                  fingerprint=self.service.fingerprint())
        with self._lock:
            self.load_link_state(links)
            self._trainers = {name: restore_trainer(meta, optim, self.links.parameters(), self._new_optimizer)
                              for name, meta in providers.items()}
            self.steps_trained = sum(tr.steps for tr in self._trainers.values())
            self._version += 1
            return self.steps_trained

    # -- what may be published ----------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """OIP model metadata: input/output tensors and, as JSON strings in ``parameters``, the
        host's service card, the path and the boundary specs. Never parameters."""
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": "codenn",
            "inputs": [tensor_metadata("input", self.input_spec)],
            "outputs": [tensor_metadata("output", self.output_spec)],
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

        atomic_tensors(Path(file), self.link_state(), metadata={"spec": str(self.spec), "side": self.service.name})

    def load_link_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load host-side link weights keyed as :meth:`link_state` gives them (other keys ignored)."""
        exit_index = len(self.spec.segments) - 2
        for i, link in ((0, self.links[0]), (exit_index, self.links[1])):
            prefix = f"{i}."
            link.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def _refuse_non_finite(t: torch.Tensor, name: str, model: str, why: str = "") -> None:
    bad = finite_count(t)
    if bad:
        raise NonFiniteError(f"tensor {name!r} of model {model!r} has {bad} non-finite values (NaN or inf) of "
                             f"{t.numel()}{why}; only finite values are accepted")


def _json(spec: BoundarySpec) -> str:
    return json.dumps(spec.to_dict())
