"""A generic splitter over the torch.fx graph of any traceable model (torchvision, timm, your own).

A cut is valid where, in the graph's execution order, exactly one activation tensor is live:
everything else still needed later is a parameter, a buffer or something computed from them
alone (copied into the block that needs it). So residual adds, dense concatenations, inception
branches and class tokens never straddle a cut. Cuts are taken only right after a module's
output (a name that is the same in the train-mode and eval-mode graphs), and only where they are
valid in both.

Which of the valid cuts N blocks use: the model's own stage boundaries first (timm
``feature_info`` modules, then modules named like stages: ``blocks.N``, ``layers.N``,
``stages.N``, ``features.N``, ``layer1``, ``denseblock2``, ``inception4a``, ``Mixed_6b``,
shallowest first), each new cut placed in the block of most FLOPs, nearest its FLOP midpoint;
when stages run out, any other valid cut the same way. FLOPs come from one probe forward in eval
mode (torch.utils.flop_counter) at the model's configured input size.

It is a fallback splitter: :func:`codenn.contracts.splitters.find_splitter` asks it only when no other
splitter handles the model, so the hand-written partitions (AlexNet's 7 blocks, ...) win.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from codenn import hookimpl
from codenn.contracts.splitters import BlockSplitter, NamedModule
from codenn.errors import SplitError
from codenn_plugins._fx import (
    Root,
    TracedBlock,
    Tracer,
    block_names,
    extract,
    probe_size,
    restore_modes,
    trace,
    training_modes,
)

SUPPORTED = "any nn.Module that torch.fx can trace, whose forward takes one tensor"
HEAD = "head"
#: module names that mark a model's own stages (torchvision and timm conventions)
STAGE_NAME = re.compile(
    r"(?:^|\.)(?:(?:blocks|layers|stages|features|stage|layer|block)\.\d+"
    r"|(?:layer|stage|block|denseblock|transition|inception|mixed_|encoder_layer_)\w*\d\w*)$",
    re.IGNORECASE,
)
#: probe input sizes tried after the model's configured one (a user model may need a small one)
PROBE_SIZES = ((3, 224, 224), (3, 64, 64), (3, 32, 32))


@dataclass(frozen=True)
class Cut:
    """One valid cut: right after the output of module ``path``.

    ``cost`` is the share of the model's FLOPs (plus a small share of its nodes, so zero-FLOP
    stretches still spread) that runs before it, in [0, 1]; ``tier`` orders preference: 0 for a
    timm feature stage, 1 + depth for a stage-named module, a large number for any other."""

    path: str
    cost: float
    tier: int


OTHER_TIER = 1000


class FxSplitter(BlockSplitter):
    """Cuts any torch.fx-traceable model where exactly one activation tensor is live."""

    name = "fx"
    architectures = ("any torch.fx-traceable model",)
    default_blocks = 5
    fallback = True
    description = (
        "any torch.fx-traceable model (torchvision, timm, your own): cut where one activation "
        "tensor is live, at stage boundaries first, spread by FLOPs"
    )

    def __init__(self, leaf_modules: Sequence[type[nn.Module]] = (),
                 input_size: Sequence[int] | None = None) -> None:
        """``leaf_modules``: module types torch.fx must not trace into (their calls stay whole);
        ``input_size`` (C, H, W): the probe input, if the model's own configuration lacks it."""
        self.leaf_modules = tuple(leaf_modules)
        self.input_size = tuple(int(s) for s in input_size) if input_size is not None else None
        self._cache: weakref.WeakKeyDictionary[nn.Module, tuple[Cut, ...]] = weakref.WeakKeyDictionary()

    def handles(self, model: nn.Module) -> bool:
        """Every module: whether torch.fx can trace it is found out (and explained) by split."""
        return isinstance(model, nn.Module)

    def family(self, model: nn.Module) -> str:
        return type(model).__name__.lower()

    def max_blocks(self, model: nn.Module) -> int:
        """One more than the valid cuts: every cut point of the graph can be used."""
        return len(self.cuts(model)) + 1

    def cuts(self, model: nn.Module) -> tuple[Cut, ...]:
        """The valid cuts of ``model`` in execution order (traced once per model, then cached)."""
        if model not in self._cache:
            self._cache[model] = self._analyse(model)
        return self._cache[model]

    def choose(self, model: nn.Module, num_blocks: int) -> list[Cut]:
        """The ``num_blocks - 1`` cuts N blocks use, in execution order."""
        self.check_count(model, num_blocks)
        return choose_spread(self.cuts(model), num_blocks - 1)

    def split(self, model: nn.Module, num_blocks: int) -> list[NamedModule]:
        chosen = [c.path for c in self.choose(model, num_blocks)]
        # blocks are named after the model's own stages, not after the cuts chosen: the last block of
        # a ViT cut after blocks.8 is blocks.9..head, not head
        stages = [c.path for c in self.cuts(model) if c.tier < OTHER_TIER] or chosen
        modes = training_modes(model)
        try:
            parts = {mode: self._partition(model, mode, chosen, stages) for mode in (True, False)}
        finally:
            restore_modes(modes)
        names = _unique(parts[False][0])
        return [(name, TracedBlock(name, train_gm, eval_gm))
                for name, train_gm, eval_gm in zip(names, parts[True][1], parts[False][1])]

    # -- analysis -------------------------------------------------------------------------------
    def _trace(self, model: nn.Module, training: bool) -> tuple[Root, fx.Graph, Tracer]:
        root = Root(model)
        graph, tracer = trace(root, training, splitter=self.name, supported=SUPPORTED, leaf_types=self.leaf_modules)
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise SplitError(
                f"{type(model).__name__} takes {len(placeholders)} inputs when traced; splitter "
                f"{self.name!r} supports {SUPPORTED}"
            )
        return root, graph, tracer

    def _analyse(self, model: nn.Module) -> tuple[Cut, ...]:
        modes = training_modes(model)
        try:
            valid: dict[bool, dict[str, fx.Node]] = {}
            for training in (True, False):
                root, graph, tracer = self._trace(model, training)
                valid[training] = _valid_cuts(graph, tracer)
            costs, is_tensor = self._probe(model, root, graph)
        finally:
            restore_modes(modes)
        features = _feature_modules(model)

        def tier(path: str) -> int:
            return 0 if path in features else 1 + path.count(".") if STAGE_NAME.search(path) else OTHER_TIER

        # a node that is the output of nested modules: named by the most preferred, then outermost
        best: dict[fx.Node, str] = {}
        for path, node in valid[False].items():
            if path in valid[True] and is_tensor.get(node, False):
                known = best.get(node)
                if known is None or _rank(path, tier) < _rank(known, tier):
                    best[node] = path
        train_nodes = list(valid[True].values())
        cuts: list[Cut] = []
        last = -1
        for node, path in sorted(best.items(), key=lambda item: costs[item[0]]):
            position = train_nodes.index(valid[True][path])
            if position > last:  # same order in the train graph (always, unless forward reorders by mode)
                last = position
                cuts.append(Cut(path, costs[node], tier(path)))
        return tuple(cuts)

    def _probe(self, model: nn.Module, root: Root, graph: fx.Graph) -> tuple[dict[fx.Node, float], dict[fx.Node, bool]]:
        """Run the eval graph once: which nodes hold a tensor, and the FLOPs run before each."""
        gm = fx.GraphModule(root, graph)
        param = next(model.parameters(), None)
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        device = param.device if param is not None else torch.device("cpu")
        sizes = [self.input_size] if self.input_size else list(dict.fromkeys([probe_size(model), *PROBE_SIZES]))
        failures = []
        for size in sizes:
            recorder = _Recorder(gm)
            try:
                with torch.no_grad(), FlopCounterMode(display=False) as counter:
                    recorder.counter = counter
                    recorder.run(torch.randn((1, *size), dtype=dtype, device=device))
            except Exception as exc:
                failures.append(f"{tuple(size)}: {type(exc).__name__}: {exc}")
                continue
            return recorder.costs(), recorder.is_tensor
        raise SplitError(
            f"splitter {self.name!r} could not run {type(model).__name__} on a probe input of any "
            f"size it tried ({'; '.join(failures)}). Hint: FxSplitter(input_size=(C, H, W)) with "
            "the size the model takes"
        )

    def _partition(self, model: nn.Module, training: bool, chosen: list[str], stages: list[str]
                   ) -> tuple[list[str], list[fx.GraphModule]]:
        """Cut the graph traced in one mode after each of ``chosen``'s outputs; name the blocks by
        the ``stages`` they hold."""
        root, graph, tracer = self._trace(model, training)
        valid = _valid_cuts(graph, tracer)
        missing = [p for p in chosen if p not in valid]
        if missing:  # the model changed since it was analysed
            raise SplitError(
                f"splitter {self.name!r}: the cuts after {missing} of {type(model).__name__} are no "
                f"longer valid in {'train' if training else 'eval'} mode; was the model changed after it was split?"
            )
        nodes = list(graph.nodes)
        active = _activations(nodes)
        start = nodes[0]
        ends = [valid[p] for p in chosen]
        output = next(n for n in nodes if n.op == "output")
        members: list[list[fx.Node]] = [[] for _ in range(len(ends) + 1)]
        part = 0
        for n in nodes:
            if n.op not in ("placeholder", "output") and n in active:
                members[part].append(n)
            if part < len(ends) and n is ends[part]:
                part += 1
        inputs = [start, *ends]
        outs = [*ends, output.args[0]]
        modules = [extract(root, members[i], inputs[i], outs[i]) for i in range(len(inputs))]
        names = block_names(members, tracer.node_paths, stages, HEAD)
        return names, modules


class _Recorder(fx.Interpreter):
    """Runs a graph, noting for each node whether it is a tensor and the FLOPs counted so far."""

    counter: FlopCounterMode | None = None

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.is_tensor: dict[fx.Node, bool] = {}
        self.flops: dict[fx.Node, int] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.is_tensor[n] = isinstance(out, torch.Tensor)
        self.flops[n] = self.counter.get_total_flops() if self.counter is not None else 0
        return out

    def costs(self) -> dict[fx.Node, float]:
        """FLOPs share before each node, plus a 1/1000 share of the node count as tie-breaker."""
        total = max(max(self.flops.values(), default=0), 1)
        count = max(len(self.flops), 1)
        return {n: (f / total + 1e-3 * i / count) / (1 + 1e-3) for i, (n, f) in enumerate(self.flops.items())}


def _activations(nodes: list[fx.Node]) -> set[fx.Node]:
    """Nodes that depend on the model's input (the others are parameters, buffers, constants)."""
    active: set[fx.Node] = set()
    for n in nodes:
        if n.op == "placeholder" or any(u in active for u in n.all_input_nodes):
            active.add(n)
    return active


def _rank(path: str, tier: Callable[[str], int]) -> tuple[int, int, str]:
    return tier(path), path.count("."), path


def _valid_cuts(graph: fx.Graph, tracer: Tracer) -> dict[str, fx.Node]:
    """Module path -> output node, for every module output where exactly that one activation is
    live (nested modules with the same output node each appear)."""
    nodes = list(graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    active = _activations(nodes)
    # live[i]: activations defined at or before i that a node after i still reads
    delta = [0] * (len(nodes) + 1)
    last_use: dict[fx.Node, int] = {}
    for n in active:
        last = max((index[u] for u in n.users), default=index[n])
        last_use[n] = last
        if last > index[n]:
            delta[index[n]] += 1
            delta[last] -= 1
    live, running = [], 0
    for d in delta:
        running += d
        live.append(running)
    # the last node that computes something from the input: no cut at or after it
    final = max((index[n] for n in active if n.op not in ("placeholder", "output")), default=0)
    valid: dict[str, fx.Node] = {}
    for path, calls in tracer.module_outputs.items():
        if len(calls) != 1 or not isinstance(calls[0], fx.Proxy) or path == "model" or path.startswith("<"):
            continue
        node = calls[0].node
        if node.op in ("placeholder", "output") or node not in active or index[node] >= final:
            continue
        i = index[node]
        if live[i] == 1 and last_use[node] > i:
            valid[path] = node
    return valid


def _feature_modules(model: nn.Module) -> set[str]:
    info = getattr(model, "feature_info", None)
    if not isinstance(info, list):
        return set()
    return {d["module"] for d in info if isinstance(d, dict) and isinstance(d.get("module"), str)}


def choose_spread(cuts: Sequence[Cut], count: int) -> list[Cut]:
    """``count`` cuts: by tier, each placed in the costliest block that has a candidate of that
    tier, nearest the block's cost midpoint."""
    chosen: list[Cut] = []
    for tier in sorted({c.tier for c in cuts}):
        pool = [c for c in cuts if c.tier == tier]
        while len(chosen) < count and pool:
            bounds = [0.0, *sorted(c.cost for c in chosen), 1.0]
            spans = [(hi - lo, lo, hi) for lo, hi in zip(bounds, bounds[1:])
                     if any(lo < c.cost <= hi for c in pool)]
            _, lo, hi = max(spans)
            inside = [c for c in pool if lo < c.cost <= hi]
            best = min(inside, key=lambda c: abs(c.cost - (lo + hi) / 2))
            chosen.append(best)
            pool.remove(best)
        if len(chosen) == count:
            break
    return sorted(chosen, key=lambda c: c.cost)


def _unique(names: list[str]) -> list[str]:
    """Block names made unique (two blocks of bare functional ops would both be 'ops')."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


@hookimpl
def codenn_register_splitters(register: Callable[[BlockSplitter], None]) -> None:
    register(FxSplitter())
