"""One remote leg: the local provider's frozen prefix here, a host's served segment there, the
local suffix here again. The coordinator's cross routes and :class:`RemotePath` both run through
it, so every reply a local provider uses is checked the same way
(:func:`codenn.remote.transport.check_host_reply`) before anything of it is measured or used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from codenn.contracts.protocols import HostReply, Transport
from codenn.errors import ConfigError
from codenn.model.blocks import BoundarySpec
from codenn.model.service import Service, ServiceCard
from codenn.paths.spec import PathSpec
from codenn.remote.transport import check_host_reply


@dataclass(frozen=True)
class RemoteLeg:
    """``local[:lout+1]`` here, model ``model`` on host ``host`` through ``transport``, ``local[lin:]``
    here; the local provider holds no link of it (they live on the host)."""

    local: Service
    lout: int
    lin: int
    transport: Transport
    model: str
    host: str

    @classmethod
    def of(cls, local: Service, spec: PathSpec | str, transport: Transport, model: str) -> RemoteLeg:
        """The leg of a cross path ``local > host > local`` (PathShapeError for any other shape)."""
        parsed = PathSpec.parse(spec) if isinstance(spec, str) else spec
        visit = parsed.one_host_visit({local.name: local.num_blocks}, local=local.name)
        return cls(local, visit.lout, visit.lin, transport, model, visit.host)

    @property
    def expected(self) -> BoundarySpec:
        """The boundary every reply must fit (batch excluded): the input of local block ``lin``."""
        return self.local.card.input_of(self.lin)

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.local.run(x, 0, self.lout + 1)

    def suffix(self, h: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.local.run(h, self.lin, None)

    def check(self, reply: HostReply, batch: int) -> HostReply:
        """``reply`` if it fits :attr:`expected` for ``batch`` samples; else BadHostReplyError."""
        return check_host_reply(reply, self.expected, batch, host=self.host, model=self.model)

    def call(self, h: torch.Tensor, timeout: float | None = None) -> HostReply:
        """The host's checked answer for prefix outputs ``h``: HostUnavailableError when it is down,
        slow, or answers what the suffix cannot take (BadHostReplyError)."""
        return self.check(self.transport.infer(self.model, h, timeout=timeout), int(h.shape[0]))

    def __call__(self, x: torch.Tensor, timeout: float | None = None) -> torch.Tensor:
        return self.suffix(self.call(self.prefix(x), timeout).output.to(x.device))


@dataclass(frozen=True)
class RemoteSegment:
    """What the local side knows about a host's served segment, all from its public metadata."""

    model: str
    spec: PathSpec
    host_card: ServiceCard
    lout: int
    lin: int
    lr: float | None
    weight_decay: float | None

    @classmethod
    def discover(cls, transport: Transport, model: str, local: Service, spec: PathSpec | str | None = None
                 ) -> RemoteSegment:
        """Read ``model``'s metadata from the host and check it is a path through ``local``."""
        meta = transport.metadata(model)
        params = meta.get("parameters") or {}
        try:
            card = ServiceCard.from_json(params["service_card"])
            served = PathSpec.parse(params["path"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"host model {model!r} did not publish a codenn path and service card "
                              f"(parameters.path, parameters.service_card): {exc}") from exc
        sizes = {local.name: local.num_blocks, card.name: card.num_blocks}
        served = served.resolve(sizes)  # PathSpecError names a service that is neither local nor this host
        wanted = served if spec is None else (PathSpec.parse(spec) if isinstance(spec, str) else spec).resolve(sizes)
        if str(wanted) != str(served):
            raise ConfigError(f"host model {model!r} serves {str(served)!r}, not {str(wanted)!r}")
        visit = served.one_host_visit(sizes, local=local.name, host=card.name)
        for key, got in (("input", local.card.output_of(visit.lout)), ("output", local.card.input_of(visit.lin))):
            published = (meta.get(f"{key}s") or [{}])[0].get("shape")
            if published != [-1, *got.shape]:
                raise ConfigError(f"host model {model!r} publishes {key} shape {published}, but {local.name}'s "
                                  f"boundary there is {[-1, *got.shape]}")
        return cls(model, served, card, visit.lout, visit.lin, _float(params.get("lr")),
                   _float(params.get("weight_decay")))


def _float(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


class RemotePath:
    """Inference through a host, set up from what the host publishes about its segment."""

    def __init__(self, local: Service, transport: Transport, model: str, spec: PathSpec | str | None = None) -> None:
        self.local, self.transport = local, transport
        self.segment = RemoteSegment.discover(transport, model, local, spec)
        self.leg = RemoteLeg(local, self.segment.lout, self.segment.lin, transport, model, self.segment.host_card.name)
        self.last_reply: HostReply | None = None

    @property
    def spec(self) -> PathSpec:
        return self.segment.spec

    def run_prefix(self, x: torch.Tensor) -> torch.Tensor:
        return self.leg.prefix(x)

    def forward_after_prefix(self, h: torch.Tensor, timeout: float | None = None) -> torch.Tensor:
        """Send ``h`` to the host and finish locally (:meth:`RemoteLeg.call`)."""
        reply = self.leg.call(h, timeout)
        self.last_reply = reply
        return self.leg.suffix(reply.output.to(h.device))

    def __call__(self, x: torch.Tensor, timeout: float | None = None) -> torch.Tensor:
        return self.forward_after_prefix(self.run_prefix(x), timeout=timeout)
