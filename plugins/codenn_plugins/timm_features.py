"""Splitter for timm CNNs, generic over architectures through timm's feature metadata.

timm describes every CNN's natural cut points in ``model.feature_info``: the module whose
output is each feature stage (with its channels and reduction). This splitter traces the model
with torch.fx, honouring timm's own leaf modules and no-trace functions, and cuts the graph
right after those modules' outputs. Blocks are GraphModules that reference the model's own
submodules and parameters (nothing is copied).

Because tracing bakes ``self.training`` branches (drop-path, batch-norm-act) into the graph,
every block holds one graph traced in train mode and one traced in eval mode, and runs the one
matching the mode of the model's modules it shares: ``model.train()``, ``block.train()`` and
``FrozenBlock``'s eval all select the right graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import fx, nn

from codenn import hookimpl
from codenn.contracts.splitters import BlockSplitter, NamedModule, choose_cuts
from codenn.errors import SplitError
from codenn_plugins._fx import (
    Root,
    TracedBlock,
    block_names,
    extract,
    probe_size,
    restore_modes,
    trace,
    training_modes,
)

SUPPORTED = (
    "timm CNNs with NCHW feature maps: resnet, efficientnet, mobilenetv3, regnet, convnext, "
    "and other timm models whose feature_info stages are chained 4-d feature maps"
)
HEAD = "head"


class TimmFeatureSplitter(BlockSplitter):
    """Cuts timm CNNs after their ``feature_info`` stages, with the classifier head last.

    Candidate cuts are the outputs of the feature stages, so ``max_blocks`` is the number of
    stages plus one (the head). N blocks always cut before the head first, then spread the
    other N-2 cuts evenly over the stages.
    """

    name = "timm"
    architectures = ("timm-cnn",)
    default_blocks = 5
    description = (
        "timm CNNs (resnet, efficientnet, mobilenetv3, regnet, convnext, ...): cut after the "
        "feature_info stages, head last"
    )

    def handles(self, model: nn.Module) -> bool:
        """timm models with per-stage feature metadata and no token (ViT-like) features.

        Kept cheap (no tracing): ``find_splitter`` calls it on every model. Anything this lets
        through that still is not a chain of NCHW stages is refused by :meth:`split`.
        """
        if not type(model).__module__.startswith("timm."):
            return False
        return bool(_feature_dicts(model)) and not _is_token_model(model)

    def max_blocks(self, model: nn.Module) -> int:
        """One block per feature stage plus the head: finer cuts would land inside stages."""
        return len(_feature_dicts(model)) + 1

    def split(self, model: nn.Module, num_blocks: int) -> list[NamedModule]:
        if not self.handles(model):
            raise SplitError(
                f"splitter {self.name!r} cannot cut a {type(model).__name__} "
                f"({type(model).__module__}); it supports {SUPPORTED}. Token models (ViT, Swin, ...) "
                "are not supported"
            )
        self.check_count(model, num_blocks)
        features = _feature_dicts(model)
        cut_stages = choose_cuts(len(features) + 1, num_blocks, [len(features) - 1])
        cut_modules = [features[i]["module"] for i in cut_stages]

        modes = training_modes(model)
        try:
            parts = {mode: _partition(model, mode, cut_modules, features) for mode in (True, False)}
        finally:
            restore_modes(modes)
        names = parts[False].names
        blocks = [
            TracedBlock(name, train_gm, eval_gm)
            for name, train_gm, eval_gm in zip(names, parts[True].modules, parts[False].modules)
        ]
        _check_boundaries(model, blocks, [features[i] for i in cut_stages])
        return [(b.block_name, b) for b in blocks]


class _Parts(NamedTuple):
    """The blocks cut from one traced graph (one mode)."""

    names: list[str]
    modules: list[fx.GraphModule]


def _feature_dicts(model: nn.Module) -> list[dict[str, Any]]:
    """``model.feature_info`` as a list of dicts, or [] if the model has none usable.

    A ``features_only`` wrapper holds a ``FeatureInfo`` object instead of a list and returns a
    list of maps, so it is not a chain of blocks: it gets [] too.
    """
    info = getattr(model, "feature_info", None)
    if not isinstance(info, list) or not info:
        return []
    if not all(isinstance(d, dict) and isinstance(d.get("module"), str) and d["module"] for d in info):
        return []
    return info


def _is_token_model(model: nn.Module) -> bool:
    """ViT-like models: position embeddings / class tokens, or non-NCHW feature output."""
    if any(hasattr(model, a) for a in ("pos_embed", "cls_token", "reg_token")):
        return True
    fmt = getattr(model, "output_fmt", "NCHW")
    return str(getattr(fmt, "value", fmt)) != "NCHW"


def _partition(model: nn.Module, training: bool, cut_modules: list[str],
               features: list[dict[str, Any]]) -> _Parts:
    """Cut the graph traced in one mode after each of ``cut_modules``' outputs."""
    root = Root(model)
    graph, tracer = trace(root, training, splitter="timm", supported=SUPPORTED)
    mode = "train" if training else "eval"
    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    outputs = [n for n in nodes if n.op == "output"]
    if len(placeholders) != 1:
        raise SplitError(
            f"{type(model).__name__} takes {len(placeholders)} inputs when traced; splitter 'timm' "
            "supports models whose forward takes one image tensor"
        )
    result = outputs[0].args[0]
    if not isinstance(result, fx.Node):
        raise SplitError(
            f"{type(model).__name__} returns {type(result).__name__} in {mode} mode; splitter "
            "'timm' supports models that return one tensor"
        )

    cut_nodes: list[fx.Node] = []
    for name in cut_modules:
        calls = tracer.module_outputs.get(name, [])
        if len(calls) != 1 or not isinstance(calls[0], fx.Proxy):
            got = (f"is called {len(calls)} times by forward()" if len(calls) != 1
                   else f"returns a {type(calls[0]).__name__}, not one tensor")
            raise SplitError(
                f"cannot cut {type(model).__name__} after its feature module {name!r}: the module "
                f"{got} ({mode} mode); a cut needs a module called once that returns one tensor. "
                f"Splitter 'timm' supports {SUPPORTED}"
            )
        cut_nodes.append(calls[0].node)

    position = {n: i for i, n in enumerate(nodes)}
    if any(position[a] >= position[b] for a, b in zip(cut_nodes, cut_nodes[1:])):
        raise SplitError(
            f"the feature modules {cut_modules} of {type(model).__name__} do not run in order; "
            "splitter 'timm' cuts only a chain of stages"
        )
    part_of: dict[fx.Node, int] = {}
    part = 0
    for n in nodes:
        part_of[n] = part
        if part < len(cut_nodes) and n is cut_nodes[part]:
            part += 1
    inputs = [placeholders[0], *cut_nodes]
    _check_chain(model, mode, nodes, part_of, inputs, cut_modules)

    members: list[list[fx.Node]] = [[] for _ in inputs]
    for n in nodes:
        if n.op not in ("placeholder", "output", "get_attr"):
            members[part_of[n]].append(n)
    ends = [*cut_nodes, result]
    modules = [extract(root, members[i], inputs[i], ends[i]) for i in range(len(inputs))]
    names = block_names(members, tracer.node_paths, [d["module"] for d in features], HEAD)
    return _Parts(names, modules)


def _check_chain(model: nn.Module, mode: str, nodes: list[fx.Node], part_of: dict[fx.Node, int],
                 inputs: list[fx.Node], cut_modules: list[str]) -> None:
    """Raise unless each block reads only its own nodes, parameters and its one input tensor."""
    for n in nodes:
        if n.op in ("placeholder", "get_attr"):
            continue
        p = part_of[n]
        for u in n.all_input_nodes:
            if u.op == "get_attr" or part_of[u] == p or u is inputs[p]:
                continue
            where = "the model input" if p == 0 else f"the output of {cut_modules[p - 1]!r}"
            raise SplitError(
                f"cannot cut {type(model).__name__} into these blocks ({mode} mode): block {p} "
                f"needs {u.name.removeprefix('model_')!r} from an earlier block besides {where}, so "
                "its boundary would carry more than one value. Splitter 'timm' supports "
                f"{SUPPORTED}, where each stage reads only the previous stage's output; another "
                "block count picks other cuts"
            )


def _check_boundaries(model: nn.Module, blocks: list[TracedBlock], cut_features: list[dict[str, Any]]) -> None:
    """Run the eval graphs once and refuse boundaries that are not NCHW maps of the stage's width."""
    if not cut_features:
        return
    size = probe_size(model)
    param = next(model.parameters(), None)
    x = torch.randn((1, *size), dtype=param.dtype if param is not None else torch.float32,
                    device=param.device if param is not None else "cpu")
    modes = training_modes(model)
    model.eval()
    try:
        with torch.no_grad():
            for block, feature in zip(blocks, cut_features):
                try:
                    x = block.eval_graph(x)
                except Exception as exc:
                    raise SplitError(
                        f"splitter 'timm': block {block.block_name!r} of {type(model).__name__} fails "
                        f"on a probe input of shape {size} (the model's configured input size): "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                channels = feature.get("num_chs")
                if not _is_nchw(x, channels):
                    raise SplitError(
                        f"splitter 'timm': the boundary after {feature['module']!r} of "
                        f"{type(model).__name__} is {_describe(x, channels)}; it needs an NCHW feature map "
                        f"with {channels} channels. It supports {SUPPORTED}. Token models (ViT, "
                        "Swin, ...) are not supported"
                    )
    finally:
        restore_modes(modes)


def _is_nchw(x: Any, channels: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.dim() == 4 and (channels is None or x.shape[1] == channels)


def _describe(x: Any, channels: Any) -> str:
    if not isinstance(x, torch.Tensor):
        return f"a {type(x).__name__}, not one tensor"
    layout = {2: " (flat NC)", 3: " (tokens, NLC)"}.get(x.dim(), "")
    if x.dim() == 4 and x.shape[-1] == channels:
        layout = " (NHWC)"
    return f"a tensor of shape {tuple(x.shape)}{layout}"


@hookimpl
def codenn_register_splitters(register: Callable[[BlockSplitter], None]) -> None:
    register(TimmFeatureSplitter())
