"""A provider's service: its model frozen, split into blocks, fingerprinted, and its public card."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from codenn.contracts.splitters import find_splitter, split_model
from codenn.errors import ConfigError, FrozenParameterError, SplitError
from codenn.model.blocks import BoundarySpec, FrozenBlock, LayoutHints, count_flops, parameter_count, run_blocks
from codenn.model.fingerprint import fingerprint
from codenn.model.loading import load_model
from codenn.model.typed_modules import ModuleSequence

if TYPE_CHECKING:
    from codenn.contracts.plugins import Plugins

FLOPS_UNIT = "FLOPs per sample, torch.utils.flop_counter (1 multiply-add = 2 FLOPs)"


@dataclass(frozen=True)
class BlockCard:
    """The public cost of one block."""

    index: int
    name: str
    params: int
    flops: int
    latency_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "params": self.params,
                "flops": self.flops, "latency_ms": self.latency_ms}


@dataclass(frozen=True)
class ServiceCard:
    """What a provider publishes about a service. Never parameters."""

    name: str
    family: str
    architecture: str
    modality: str
    input: BoundarySpec
    boundaries: tuple[BoundarySpec, ...]
    blocks: tuple[BlockCard, ...]
    fingerprint: str
    flops_unit: str = FLOPS_UNIT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def input_of(self, block: int) -> BoundarySpec:
        """The spec of the tensor block ``block`` consumes."""
        return self.input if block == 0 else self.boundaries[block - 1]

    def output_of(self, block: int) -> BoundarySpec:
        return self.boundaries[block]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "architecture": self.architecture,
            "modality": self.modality,
            "input": self.input.to_dict(),
            "boundaries": [b.to_dict() for b in self.boundaries],
            "blocks": [b.to_dict() for b in self.blocks],
            "total_params": sum(b.params for b in self.blocks),
            "total_flops": sum(b.flops for b in self.blocks),
            "flops_unit": self.flops_unit,
            "fingerprint": self.fingerprint,
            "extra": dict(self.extra),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServiceCard:
        return cls(
            name=d["name"],
            family=d["family"],
            architecture=d["architecture"],
            modality=d["modality"],
            input=BoundarySpec.from_dict(d["input"]),
            boundaries=tuple(BoundarySpec.from_dict(b) for b in d["boundaries"]),
            blocks=tuple(BlockCard(b["index"], b["name"], b["params"], b["flops"], b.get("latency_ms"))
                         for b in d["blocks"]),
            fingerprint=d["fingerprint"],
            flops_unit=d.get("flops_unit", FLOPS_UNIT),
            extra=dict(d.get("extra", {})),
        )

    @classmethod
    def from_json(cls, text: str) -> ServiceCard:
        return cls.from_dict(json.loads(text))


class Service(nn.Module):
    """A provider's pretrained model, frozen (eval, no grad) and split into blocks.

    The blocks share the model's tensors; nothing is copied. ``card`` is the public description,
    ``fingerprint()`` the SHA-256 of every frozen parameter and buffer.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        *,
        input_shape: Sequence[int] = (3, 224, 224),
        num_blocks: int | None = None,
        splitter: str | None = None,
        modality: str | None = None,
        architecture: str | None = None,
        plugins: Plugins | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(
                f"service name {name!r} is invalid: use letters, digits, '_' or '-' (it appears in "
                "path specs such as 'alexnet[:1] > mobilenet_v2[1:4] > alexnet[5:]')"
            )
        if not isinstance(model, nn.Module):
            raise ConfigError(f"service {name!r}: model must be a torch.nn.Module, got {type(model).__name__}")
        if plugins is None:
            from codenn.contracts.plugins import get_plugins

            plugins = get_plugins()
        chosen = plugins.splitters.get(splitter) if splitter else find_splitter(model, list(plugins.splitters))
        if splitter and not chosen.handles(model):
            raise SplitError(
                f"splitter {splitter!r} does not handle {type(model).__name__}; it handles "
                f"{', '.join(chosen.architectures) or 'its own models'}"
            )
        model.requires_grad_(False)
        # no count: the default, capped by the model's maximum; a named splitter gets no fallback
        chosen, parts = split_model(model, chosen, num_blocks, [] if splitter else list(plugins.splitters))
        self.name = name
        self.splitter_name = chosen.name
        self.model = model
        self.blocks: ModuleSequence[FrozenBlock] = ModuleSequence(FrozenBlock(n, m) for n, m in parts)
        self._family = chosen.family(model)
        self._architecture = architecture or type(model).__name__
        self._modality = modality or chosen.modality
        self._input = BoundarySpec.for_input(tuple(input_shape))
        self.train(False)
        self._boundaries, self._block_cards = self._probe()
        self._fingerprint = fingerprint(self.model)

    # -- construction helpers -----------------------------------------------------------------
    @classmethod
    def from_name(
        cls,
        model_name: str,
        *,
        name: str | None = None,
        weights: str | os.PathLike[str] | None = None,
        num_classes: int | None = None,
        **kwargs: Any,
    ) -> Service:
        """A service from a torchvision or timm model name, optional weights (enum name or file); a
        timm model whose input size is fixed at construction is built for ``input_shape``."""
        shape = kwargs.get("input_shape")
        size = int(shape[-1]) if isinstance(shape, (tuple, list)) and len(shape) == 3 and shape[-1] == shape[-2] else None
        model = load_model(model_name, weights=weights, num_classes=num_classes, input_size=size)
        return cls(name or model_name, model, architecture=model_name, **kwargs)

    def _probe(self) -> tuple[tuple[BoundarySpec, ...], tuple[BlockCard, ...]]:
        x = self._input.example(batch=2)
        specs: list[BoundarySpec] = []
        cards: list[BlockCard] = []
        hints = LayoutHints.of_model(self.model, self._input)  # NHWC maps, ViT grid and prefix tokens
        with torch.no_grad():
            for i, block in enumerate(self.blocks):
                try:
                    y = block(x)
                except Exception as exc:
                    raise SplitError(
                        f"service {self.name!r}: block {i} ({block.name!r}) fails on an input of "
                        f"shape {tuple(x.shape[1:])}: {type(exc).__name__}: {exc}. Is input_shape "
                        f"{self._input.shape} right for this model?"
                    ) from exc
                if not isinstance(y, torch.Tensor):
                    raise SplitError(
                        f"service {self.name!r}: block {i} ({block.name!r}) returns "
                        f"{type(y).__name__}; a boundary must be a single tensor"
                    )
                cards.append(BlockCard(i, block.name, parameter_count(block), count_flops(block, x)))
                specs.append(hints.spec(y, name=f"{self.name}.{i}"))
                x = y
        return tuple(specs), tuple(cards)

    # -- public API ---------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def input_spec(self) -> BoundarySpec:
        return self._input

    @property
    def boundaries(self) -> tuple[BoundarySpec, ...]:
        return self._boundaries

    @property
    def card(self) -> ServiceCard:
        return ServiceCard(
            name=self.name,
            family=self._family,
            architecture=self._architecture,
            modality=self._modality,
            input=self._input,
            boundaries=self._boundaries,
            blocks=self._block_cards,
            fingerprint=self._fingerprint,
            extra={"splitter": self.splitter_name},
        )

    def with_latencies(self, latencies_ms: Sequence[float]) -> None:
        """Record measured per-block latencies on the card."""
        if len(latencies_ms) != self.num_blocks:
            raise ConfigError(f"{len(latencies_ms)} latencies given for {self.num_blocks} blocks")
        self._block_cards = tuple(
            BlockCard(c.index, c.name, c.params, c.flops, float(t)) for c, t in zip(self._block_cards, latencies_ms)
        )

    def fingerprint(self) -> str:
        """SHA-256 of the frozen parameters and buffers, recomputed now."""
        return fingerprint(self.model)

    def verify_frozen(self) -> None:
        """Raise if any frozen parameter or buffer changed since the service was built."""
        now = self.fingerprint()
        if now != self._fingerprint:
            raise FrozenParameterError(
                f"service {self.name!r}: frozen parameters changed (fingerprint {self._fingerprint[:12]}… "
                f"is now {now[:12]}…)"
            )

    def run(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run blocks ``start..stop-1`` (Python slice semantics)."""
        stop = self.num_blocks if stop is None else stop
        if not 0 <= start < stop <= self.num_blocks:
            raise ConfigError(
                f"service {self.name!r} has blocks 0..{self.num_blocks - 1}; cannot run [{start}:{stop}]"
            )
        self.input_of(start).check(x, f"input to {self.name}[{start}:{stop}]")
        return run_blocks(self.blocks[start:stop], x)

    def input_of(self, block: int) -> BoundarySpec:
        return self._input if block == 0 else self._boundaries[block - 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)

    def train(self, mode: bool = True) -> Service:
        """A service never leaves eval mode: its blocks are frozen."""
        return super().train(False)

    def __repr__(self) -> str:
        return f"Service({self.name!r}, {self._architecture}, blocks={self.num_blocks})"


def services_by_name(services: Mapping[str, Service] | Iterable[Service]) -> dict[str, Service]:
    """Services by name, from a mapping or a sequence; ConfigError for a non-Service or two of one name."""
    if isinstance(services, Mapping):
        items = dict(services)
        for key, s in items.items():
            if not isinstance(s, Service):
                raise ConfigError(f"services[{key!r}] is a {type(s).__name__}, not a codenn.Service")
        return items
    out: dict[str, Service] = {}
    for s in services:
        if not isinstance(s, Service):
            raise ConfigError(f"{s!r} is a {type(s).__name__}, not a codenn.Service")
        if s.name in out:
            raise ConfigError(f"two services are named {s.name!r}; service names must be unique")
        out[s.name] = s
    return out
