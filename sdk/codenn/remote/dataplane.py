"""What a codenn server does with a request once it has been read off the wire: who is calling,
may they, does the tensor fit, run it, keep training durable. No HTTP here (kserve's DataPlane
behind thin REST endpoints): :mod:`codenn_adapters.host_server` reads bodies, decodes the Open
Inference Protocol and maps each :class:`~codenn.errors.RequestError` to its status.

A peer is not trusted: every refusal is a RequestError (or a
:class:`~codenn.errors.BoundaryMismatchError` for a tensor that does not fit, or a
:class:`~codenn.remote.split_state.SegmentStateError`) whose message names what was wrong, the
value received and what is valid; nothing a caller sends reaches a model unchecked.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from codenn.config.server import ServerConfig
from codenn.errors import (
    BoundaryMismatchError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    ModelNotFoundError,
    NonFiniteError,
    PayloadTooLargeError,
    UnauthenticatedError,
)
from codenn.model.blocks import BoundarySpec
from codenn.remote.access import AccessList, Action, Provider, access_from
from codenn.remote.host import checkpoint_file
from codenn.remote.served_model import Served, ServedModel, TrainableModel, oip_datatype
from codenn.remote.split_state import finite_count

log = logging.getLogger("codenn.host")

ServerRole = Literal["host", "local"]


def _models(served: Sequence[ServedModel] | Mapping[str, ServedModel]) -> dict[str, ServedModel]:
    models: dict[str, ServedModel] = {}
    for key, model in (served.items() if isinstance(served, Mapping) else ((m.name, m) for m in served)):
        if key in models:
            raise ConfigError(f"two served models are both named {key!r}; serve each path once")
        models[key] = model
    if not models:
        raise ConfigError("a server needs at least one model to serve")
    return models


class DataPlane:
    """The served models, who may use them, and the checks every request passes."""

    def __init__(self, served: Sequence[ServedModel] | Mapping[str, ServedModel], *,
                 tokens: Mapping[str, Any] | AccessList, config: ServerConfig | None = None,
                 training_refused: str | None = None, role: ServerRole = "host") -> None:
        self.models = _models(served)
        self.access = access_from(tokens)
        self.config = config or ServerConfig()
        self.training_refused = training_refused
        self.role = role
        self._save_lock = threading.Lock()
        for line in self.access.unmatched(self.models.values()):
            log.warning("token file right grants nothing served here: %s", line)

    # -- who, and may they ----------------------------------------------------------------------
    def authenticate(self, authorization: str) -> Provider:
        """The provider whose bearer token ``authorization`` (an HTTP Authorization value) carries."""
        scheme, _, given = authorization.partition(" ")
        provider = self.access.caller(given) if scheme.lower() == "bearer" and given else None
        if provider is None:
            raise UnauthenticatedError("missing or invalid bearer token: send 'Authorization: Bearer TOKEN' with the "
                                       "token this server registered for your provider", {"WWW-Authenticate": "Bearer"})
        return provider

    def model(self, name: str, provider: Provider, action: Action) -> ServedModel:
        """The model, if ``provider`` may ``action`` it; the 404 lists only what the caller may use."""
        if name not in self.models:
            mine = sorted(n for n, m in self.models.items() if provider.may("infer", m) or provider.may("train", m))
            raise ModelNotFoundError(f"model {name!r} not found; models you may use here: {mine or 'none'}")
        model = self.models[name]
        if not provider.may(action, model):
            raise ForbiddenError(f"provider {provider.name!r} may not {action} model {name!r} on this server "
                                 "(its rights in the server's token file do not include it)")
        return model

    def trainable(self, name: str, provider: Provider) -> TrainableModel:
        model = self.model(name, provider, "train")
        if not isinstance(model, TrainableModel):
            raise ModelNotFoundError(f"model {name!r} serves inference only: it offers no split training")
        if self.training_refused is not None:
            raise ConflictError(f"split training of {name!r} is off on this {self.role if self.role == 'host' else 'server'}: "
                                f"{self.training_refused}")
        return model

    # -- what a request must be -----------------------------------------------------------------
    def check_tensor(self, model: ServedModel, x: torch.Tensor, spec: BoundarySpec, what: str) -> None:
        """``x`` is a batch of ``spec`` (shape, dtype) holding only finite values."""
        expected = [-1, *spec.shape]
        if x.dim() != len(expected) or x.shape[0] < 1 or list(x.shape[1:]) != list(spec.shape) \
                or str(x.dtype).removeprefix("torch.") != spec.dtype:
            raise BoundaryMismatchError(
                f"{what} of model {model.name!r} must have shape {expected} and datatype {oip_datatype(spec.dtype)}; "
                f"received shape {list(x.shape)} and datatype {_datatype(x.dtype)}")
        bad = finite_count(x)
        if bad:
            raise NonFiniteError(f"{what} of model {model.name!r} has {bad} non-finite values (NaN or inf) of "
                                 f"{x.numel()}; only finite values are accepted")

    def check_answer_size(self, model: ServedModel, batch: int) -> None:
        """Refuse, before any compute, a batch whose answer would be over the answer cap."""
        spec, cap = model.output_spec, self.config.max_response_bytes
        size = batch * int(torch.Size(spec.shape).numel()) * torch.empty((), dtype=getattr(torch, spec.dtype)).element_size()
        if size > cap:
            raise PayloadTooLargeError(f"the answer to a batch of {batch} would be {size} bytes, over this server's "
                                       f"limit of {cap} bytes; send at most {max(1, batch * cap // size)} samples per "
                                       "request")

    def check_output(self, model: ServedModel, y: torch.Tensor) -> None:
        bad = finite_count(y)
        if bad:
            raise NonFiniteError(f"model {model.name!r} produced {bad} non-finite values for this input; refused")

    @staticmethod
    def step_of(parameters: Mapping[str, Any] | None) -> int:
        step = (parameters or {}).get("step")
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < 2**63:
            raise BoundaryMismatchError(f"split training needs an integer parameters.step >= 0; got {str(step)[:40]!r}")
        return step

    # -- running --------------------------------------------------------------------------------
    def infer(self, model: ServedModel, x: torch.Tensor) -> Served:
        self.check_tensor(model, x, model.input_spec, "input 'input'")
        self.check_answer_size(model, int(x.shape[0]))
        return model.serve(x)

    def train_forward(self, model: TrainableModel, provider: Provider, x: torch.Tensor, step: int
                      ) -> tuple[torch.Tensor, float]:
        self.check_tensor(model, x, model.input_spec, "input 'input'")
        self.check_answer_size(model, int(x.shape[0]))
        return model.train_forward(x, step, provider.name)

    def train_backward(self, model: TrainableModel, provider: Provider, grad: torch.Tensor, step: int) -> float:
        """Apply one step; every ``checkpoint_every`` applied steps the model is checkpointed."""
        self.check_tensor(model, grad, model.output_spec, "input 'grad'")
        seconds = model.train_backward(step, grad, provider.name)
        if model.steps_trained % self.config.checkpoint_every == 0:
            self.save(model)
        return seconds

    # -- what the server publishes --------------------------------------------------------------
    def server_metadata(self, version: str) -> dict[str, Any]:
        """OIP server metadata: the extensions it really offers."""
        trains = self.training_refused is None and any(isinstance(m, TrainableModel) for m in self.models.values())
        return {"name": f"codenn-{self.role}", "version": version,
                "extensions": ["binary_tensor_data", *(["codenn_split_training"] if trains else [])]}

    # -- durability -----------------------------------------------------------------------------
    def save(self, model: ServedModel) -> None:
        """Checkpoint a model split training changed (atomically; no-op without ``save_dir``)."""
        if self.config.save_dir is None or not isinstance(model, TrainableModel) or not model.steps_trained:
            return
        with self._save_lock:
            model.save_checkpoint(checkpoint_file(self.config.save_dir, model.name))

    def save_all(self) -> None:
        for model in self.models.values():
            self.save(model)
            if self.config.save_dir is not None and isinstance(model, TrainableModel) and model.steps_trained:
                log.info("saved %s after %d split-training steps", model.name, model.steps_trained)


def _datatype(dtype: torch.dtype) -> str:
    try:
        return oip_datatype(dtype)
    except BoundaryMismatchError:
        return str(dtype).removeprefix("torch.")
