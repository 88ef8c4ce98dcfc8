"""Every configuration dataclass of codenn, in one leaf package: it imports nothing of codenn but
its errors (and no torch), validates in ``__post_init__``, and reads and writes the TOML file.

=====================  ==========================================================
:class:`RunConfig`      a run: local and host services, search, executor (``load``, ``from_dict``)
:class:`SearchConfig`   strategy, link factory, training, cost, network, space, fast
:class:`TrainConfig`    how links are trained
:class:`CostModel`      eq. (1) coefficients, the bound L_T, the objective
:class:`Network`        bandwidth and round trip between providers, before a connection exists
:class:`SpaceConfig`    which candidate paths to enumerate
:class:`FastConfig`     the fast strategy's knobs
:class:`ExecutorConfig` where path jobs run
:class:`BaseModelSpec`  how a provider's base model is obtained
:class:`RoutingConfig`  how ``codenn serve`` routes requests
:class:`ServerConfig`   what both servers listen on and give each peer
=====================  ==========================================================

"""

from __future__ import annotations

from codenn.config.base_model import DEFAULT_HOST, DEFAULT_LOCAL, BaseModelSpec
from codenn.config.cost import COMPUTE_UNITS, CostModel
from codenn.config.executor import ExecutorConfig
from codenn.config.flags import HOST_FLAGS, SEARCH_FLAGS, SERVER_FLAGS, Flag, apply_flags
from codenn.config.network import Network
from codenn.config.routing import RoutingConfig
from codenn.config.run import RunConfig, ServiceConfig, build, from_dict, load
from codenn.config.search import (
    BOUND_ACCURACIES,
    DEFAULT_LINK,
    DEFAULT_SPACE,
    STRATEGIES,
    FastConfig,
    SearchConfig,
    SpaceConfig,
)
from codenn.config.server import ServerConfig
from codenn.config.train import TrainConfig

__all__ = [
    "BOUND_ACCURACIES", "COMPUTE_UNITS", "DEFAULT_HOST", "DEFAULT_LINK", "DEFAULT_LOCAL", "DEFAULT_SPACE", "HOST_FLAGS",
    "SEARCH_FLAGS", "SERVER_FLAGS", "STRATEGIES", "BaseModelSpec", "CostModel", "ExecutorConfig", "FastConfig", "Flag",
    "Network", "RoutingConfig", "RunConfig", "SearchConfig", "ServerConfig", "ServiceConfig", "SpaceConfig",
    "TrainConfig", "apply_flags", "build", "from_dict", "load",
]
