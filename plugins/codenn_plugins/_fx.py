"""torch.fx tracing shared by the graph splitters (``timm_features`` and ``fx_splitter``).

One tracer honours timm's leaf modules and no-trace functions (and torchvision.ops), records
for every module call the node its output came from and for every node its module path, and
remembers where tracing stopped when it fails. Blocks cut from a traced graph are
:class:`TracedBlock`s: a train-mode and an eval-mode graph that reference the model's own
submodules and parameters (nothing is copied), because tracing bakes ``self.training`` branches
(drop-path, batch-norm-act) into the graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import fx, nn

from codenn.errors import SplitError

ROOT = "model."


class Root(nn.Module):
    """Calls the model with its forward's defaults, so optional arguments (``attn_mask=None``)
    do not become extra graph inputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)


class Tracer(fx.Tracer):
    """An fx tracer that respects leaf modules / no-trace functions and records, for every
    module call, the node its output came from and, for every node, its module path (relative
    to the model, not to the :class:`Root` that wraps it). On failure, ``failed_in`` holds the
    innermost module being traced and ``last_node`` the last node created."""

    def __init__(self, leaf_types: Sequence[type], autowrap_functions: Sequence[Callable[..., Any]]) -> None:
        super().__init__(autowrap_modules=_autowrap_modules(), autowrap_functions=tuple(autowrap_functions))
        self._leaf_types = tuple(leaf_types)
        self.module_outputs: dict[str, list[Any]] = {}
        self.node_paths: dict[fx.Node, str] = {}
        self.failed_in: tuple[str, str] | None = None
        self.last_node = ""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if self._leaf_types and isinstance(m, self._leaf_types):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        try:
            out = super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:  # the innermost module sees the exception first
                self.failed_in = (self._relative(m), type(m).__name__)
            raise
        self.module_outputs.setdefault(self._relative(m), []).append(out)
        return out

    def create_proxy(self, kind: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                     *rest: Any, **options: Any) -> fx.Proxy:
        proxy = super().create_proxy(kind, target, args, kwargs, *rest, **options)
        path = target if kind == "call_module" else self.scope.module_path
        self.node_paths[proxy.node] = path.removeprefix(ROOT) if path != "model" else ""
        self.last_node = proxy.node.name
        return proxy

    def _relative(self, m: nn.Module) -> str:
        try:
            return self.path_of_module(m).removeprefix(ROOT)
        except NameError:  # a module that is not an attribute of the model
            return f"<{type(m).__name__}>"


def _autowrap_modules() -> tuple[ModuleType, ...]:
    """math always; torchvision.ops too (stochastic depth, box ops), as torchvision's own
    feature extraction does."""
    try:
        import torchvision.ops
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return (math,)
    return (math, torchvision.ops)


def _timm_rules() -> tuple[list[type], list[Callable[..., Any]]]:
    """timm's registered leaf modules and no-trace functions, or none without timm."""
    try:
        from timm.layers import get_notrace_functions, get_notrace_modules
    except ImportError:  # pragma: no cover - timm is a dependency
        return [], []
    return list(get_notrace_modules()), list(get_notrace_functions())


def trace(root: Root, training: bool, *, splitter: str, supported: str,
          leaf_types: Iterable[type] = ()) -> tuple[fx.Graph, Tracer]:
    """Trace the model in one mode; a failure is a SplitError naming where tracing stopped."""
    model = root.model
    model.train(training)
    leaves, functions = _timm_rules()
    tracer = Tracer([*leaves, *leaf_types], functions)
    try:
        graph = tracer.trace(root)
    except Exception as exc:
        where = f" in module {tracer.failed_in[0]!r} ({tracer.failed_in[1]})" if tracer.failed_in else ""
        after = f" after node {tracer.last_node!r}" if tracer.last_node else ""
        raise SplitError(
            f"splitter {splitter!r} could not trace {type(model).__name__} with torch.fx "
            f"({'train' if training else 'eval'} mode): tracing stopped{where}{after}: "
            f"{type(exc).__name__}: {exc}. It supports {supported}. Hint: make that module a leaf "
            "(timm.layers.register_notrace_module, or FxSplitter(leaf_modules=...)), or write a "
            "splitter plugin for this model (docs/writing-plugins.md)"
        ) from exc
    return graph, tracer


class TracedBlock(nn.Module):
    """One contiguous piece of a traced model, as a train-mode and an eval-mode graph."""

    def __init__(self, name: str, train_graph: fx.GraphModule, eval_graph: fx.GraphModule) -> None:
        super().__init__()
        self.block_name = name
        self.train_graph = train_graph
        self.eval_graph = eval_graph
        # not registered as a submodule: only read for its mode (see module docstring)
        self._mode_ref: list[nn.Module] = first_submodule(eval_graph)

    def _is_training(self) -> bool:
        return self._mode_ref[0].training if self._mode_ref else self.training

    def forward(self, x: torch.Tensor) -> Any:
        return (self.train_graph if self._is_training() else self.eval_graph)(x)

    def extra_repr(self) -> str:
        return f"name={self.block_name!r}"


def first_submodule(gm: fx.GraphModule) -> list[nn.Module]:
    for n in gm.graph.nodes:
        if n.op == "call_module":
            return [gm.get_submodule(n.target)]
    return []


def training_modes(model: nn.Module) -> dict[nn.Module, bool]:
    return {m: m.training for m in model.modules()}


def restore_modes(modes: dict[nn.Module, bool]) -> None:
    for m, mode in modes.items():
        m.training = mode


def extract(root: Root, members: list[fx.Node], start: fx.Node, end: Any) -> fx.GraphModule:
    """A GraphModule running ``members`` on one tensor; parameters are the model's own.

    Nodes the members read that are neither members nor ``start`` must not depend on the
    model's input (parameters, buffers and what is computed from them alone): they are copied
    in, so a block recomputes a constant an earlier block also used.
    """
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {start: graph.placeholder("x")}

    def arg(u: fx.Node) -> fx.Node:
        if u not in env:
            if u.op == "placeholder":
                raise SplitError(f"internal: node {u.name!r} of another block reached a block's graph")
            env[u] = graph.node_copy(u, arg)
        return env[u]

    for n in members:
        env[n] = graph.node_copy(n, arg)
    graph.output(fx.node.map_arg(end, arg))
    # GraphModule copies references to the submodules / parameters the graph names
    return fx.GraphModule(root, graph, class_name=type(root.model).__name__ + "Block")


def unit_of(path: str, feature_modules: Sequence[str]) -> str:
    """The display unit of a module path: its feature stage, or the shallowest name that is not
    a parent of a feature stage (``blocks.2`` rather than ``blocks``)."""
    for f in feature_modules:
        if path == f or path.startswith(f + "."):
            return f
    parts = path.split(".")
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        if not any(f.startswith(name + ".") for f in feature_modules):
            return name
    return path


def block_names(members: list[list[fx.Node]], paths: dict[fx.Node, str], feature_modules: Sequence[str],
                head: str) -> list[str]:
    """Names like ``conv1..layer2``, ``layer3..layer4``, ``head``: what each block contains;
    everything after the last of ``feature_modules`` is called ``head``."""
    last_feature = feature_modules[-1] if feature_modules else None
    seen_last = False
    names = []
    for nodes in members:
        units: list[str] = []
        for n in nodes:
            path = paths.get(n, "")
            if not path:
                continue
            unit = unit_of(path, feature_modules)
            if unit == last_feature:
                seen_last = True
            elif seen_last:  # everything after the last stage is the head
                unit = head
            if not units or units[-1] != unit:
                units.append(unit)
        if not units:
            names.append(head if seen_last else "ops")
        elif len(units) == 1:
            names.append(units[0])
        else:
            names.append(f"{units[0]}..{units[-1]}")
    return names


def probe_size(model: nn.Module) -> tuple[int, ...]:
    """The input size the model is configured for: a fixed patch grid wins over pretrained_cfg."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    chans, height, width = tuple(cfg.get("input_size", (3, 224, 224)))
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if isinstance(img_size, (tuple, list)) and len(img_size) == 2:
        height, width = int(img_size[0]), int(img_size[1])
    return (int(chans), height, width)
