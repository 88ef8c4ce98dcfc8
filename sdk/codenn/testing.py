"""Conformance kit for plugin authors: run it on your own splitter and link factory.

Each ``check_*`` function raises :class:`ConformanceError` (a CodennError) describing the first
violation, so it works in pytest, in a notebook or in CI. ``conformance_cases`` is meant for
``pytest.mark.parametrize``.

    from codenn.testing import check_splitter, check_link_factory
    check_splitter(MySplitter(), build_my_model, input_shape=(3, 64, 64), block_counts=[2, 4])
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from codenn.contracts.plugins import Plugins, create_plugins
from codenn.contracts.splitters import BlockSplitter
from codenn.errors import CodennError
from codenn.model.blocks import BoundarySpec, run_blocks
from codenn.model.service import Service
from codenn.paths.links import build_link

RECOMPOSITION_TOLERANCE = 1e-5

LINK_CHECK_BATCH = 3
"""The batch :func:`check_link_factory` trains a link on: more than one sample, so batch norm in
a link has batch statistics to compute in train mode (at batch 1 on a 1x1 map, or on flat
features, ``BatchNorm`` raises "Expected more than 1 value per channel when training")."""


class ConformanceError(CodennError, AssertionError):
    """A plugin violates codenn's contract."""


def recomposition_error(
    model: nn.Module,
    blocks: Sequence[nn.Module],
    input_spec: BoundarySpec,
    *,
    train: bool = False,
    batch: int = 2,
    seed: int = 0,
) -> float:
    """Max abs difference between ``model(x)`` and the blocks composed in order, in fp32.

    In train mode the RNG is reseeded before each forward so dropout draws the same masks, and
    the model is deep-copied so batch-norm statistics of the caller's model do not move.
    """
    original, blocks = copy.deepcopy((model, list(blocks))) if train else (model, list(blocks))
    modes = [(m, m.training) for m in [original, *blocks]]
    try:
        for m, _ in modes:
            m.train(train)
        x = input_spec.example(batch=batch, seed=seed)
        with torch.no_grad():
            torch.manual_seed(seed)
            expected = original(x)
            torch.manual_seed(seed)
            got = run_blocks(blocks, x)
    finally:
        for m, was in modes:
            m.train(was)
    if expected.shape != got.shape:
        raise ConformanceError(f"composed blocks return shape {tuple(got.shape)}, the model {tuple(expected.shape)}")
    return float((expected - got).abs().max())


def check_splitter(
    splitter: BlockSplitter,
    make_model: Callable[[], nn.Module],
    *,
    input_shape: Sequence[int] = (3, 64, 64),
    block_counts: Iterable[int] | None = None,
    tolerance: float = RECOMPOSITION_TOLERANCE,
) -> dict[int, float]:
    """Check a splitter: it handles the model, every block count recomposes the model exactly
    (eval and train mode), blocks share the model's parameters, and boundaries are single tensors.

    Returns the worst recomposition error per block count.
    """
    model = make_model()
    if not splitter.handles(model):
        raise ConformanceError(f"splitter {splitter.name!r} does not handle {type(model).__name__}")
    top = splitter.max_blocks(model)
    counts = list(block_counts) if block_counts is not None else sorted({1, 2, min(top, splitter.default_blocks), top})
    spec = BoundarySpec.for_input(tuple(input_shape))
    model_params = {p.data_ptr() for p in model.parameters()}
    worst: dict[int, float] = {}
    for count in counts:
        parts = splitter.split(model, count)
        if len(parts) != count:
            raise ConformanceError(f"splitter {splitter.name!r} returned {len(parts)} blocks for block count {count}")
        names = [n for n, _ in parts]
        if len(set(names)) != len(names):
            raise ConformanceError(f"splitter {splitter.name!r}: block names are not unique: {names}")
        for name, block in parts:
            foreign = [n for n, p in block.named_parameters() if p.data_ptr() not in model_params]
            if foreign:
                raise ConformanceError(
                    f"splitter {splitter.name!r}: block {name!r} has parameters the model does not own "
                    f"(copies?): {foreign[:3]}"
                )
        blocks = [m for _, m in parts]
        errs = [recomposition_error(model, blocks, spec, train=t) for t in (False, True)]
        if max(errs) > tolerance:
            raise ConformanceError(
                f"splitter {splitter.name!r} with {count} blocks: composed blocks differ from the model by "
                f"{max(errs):.3e} (eval {errs[0]:.3e}, train {errs[1]:.3e}); tolerance {tolerance:.0e}"
            )
        worst[count] = max(errs)
    return worst


def check_boundary_specs(service: Service, batch: int = 3) -> None:
    """Every published BoundarySpec matches the tensor really flowing at that boundary."""
    x = service.input_spec.example(batch=batch, seed=1)
    with torch.no_grad():
        for i, block in enumerate(service.blocks):
            x = block(x)
            try:
                service.boundaries[i].check(x, f"boundary {i} of {service.name!r}")
            except CodennError as exc:
                raise ConformanceError(str(exc)) from exc


def check_service_frozen(service: Service) -> None:
    """A service's parameters are all frozen and its blocks stay in eval mode after train()."""
    service.train(True)
    trainable = [n for n, p in service.named_parameters() if p.requires_grad]
    if trainable:
        raise ConformanceError(f"service {service.name!r} has trainable parameters: {trainable[:3]}")
    training = [n for n, m in service.named_modules() if m.training]
    if training:
        raise ConformanceError(f"service {service.name!r} has modules in training mode: {training[:3]}")


def check_link_factory(
    factory: str,
    pairs: Iterable[tuple[BoundarySpec, BoundarySpec]],
    *,
    plugins: Plugins | None = None,
    **options: object,
) -> None:
    """A link factory builds, for each (src, dst) pair, a module that maps src to dst shape, whose
    parameters are all trainable and receive gradients on a real batch.

    Each link runs twice, on random ``src`` inputs: :func:`codenn.paths.links.build_link`'s shape check
    in **eval** mode at batch 2 (no gradient), then one forward and backward pass in **train** mode
    at batch :data:`LINK_CHECK_BATCH` (3). Batch norm in a link therefore works here; the batch is
    fixed (not an option) so that every factory option can pass through ``options``.
    """
    plugins = plugins or create_plugins()
    for src, dst in pairs:
        link = build_link(src, dst, factory, plugins=plugins, **options)
        link.train()
        out = link(src.example(batch=LINK_CHECK_BATCH))
        if tuple(out.shape[1:]) != dst.shape:
            raise ConformanceError(f"link {factory!r}: {src.shape} -> {tuple(out.shape[1:])}, expected {dst.shape}")
        params = list(link.parameters())
        if not params:
            raise ConformanceError(f"link {factory!r} from {src.shape} to {dst.shape} has no trainable parameters")
        out.square().mean().backward()
        dead = [n for n, p in link.named_parameters() if p.grad is None]
        if dead:
            raise ConformanceError(f"link {factory!r}: parameters receive no gradient: {dead[:3]}")


def check_path_trains_links_only(path: nn.Module, batch: int = 2) -> None:
    """Forward and backward through a path: only link parameters get gradients, and every
    service's fingerprint is unchanged afterwards."""
    from codenn.paths.composed import ComposedPath

    if not isinstance(path, ComposedPath):
        raise ConformanceError(f"expected a codenn Path, got {type(path).__name__}")
    before = {n: s.fingerprint() for n, s in path.services.items()}
    path.train()
    x = path.local.input_spec.example(batch=batch)
    path(x).square().mean().backward()
    link_ids = {id(p) for p in path.trainable_parameters()}
    for name, p in path.named_parameters():
        if id(p) in link_ids:
            continue
        if p.requires_grad or p.grad is not None:
            raise ConformanceError(f"frozen parameter {name!r} is trainable or got a gradient")
    if not any(p.grad is not None for p in path.trainable_parameters()):
        raise ConformanceError(f"no link of path {path.spec} received a gradient")
    after = {n: s.fingerprint() for n, s in path.services.items()}
    changed = [n for n in before if before[n] != after[n]]
    if changed:
        raise ConformanceError(f"services {changed} changed during a training step: frozen means frozen")
