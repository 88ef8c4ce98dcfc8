"""The Python snippets of the docs run as written, and the helpers they document behave as said.

A snippet runs when the line before its fence is ``<!-- runs: tests/test_docs_snippets.py -->``
(``... (slow) -->`` for the slow ones). The snippets of one page run in order in one namespace,
as a reader would paste them; the slow test runs the fast ones first, then the slow ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from codenn import BoundarySpec, hookimpl
from codenn.contracts.plugins import create_plugins
from codenn.contracts.splitters import UnitSplitter, stage_cuts
from codenn.testing import LINK_CHECK_BATCH, ConformanceError, check_link_factory

DOCS = Path(__file__).parents[1] / "docs"
PAGES = ["paths.md", "writing-plugins.md"]
_SNIPPET = re.compile(r"<!-- runs: tests/test_docs_snippets\.py( \(slow\))? -->\n```python\n(.*?)```", re.S)


def snippets(page: str, *, slow: bool) -> list[str]:
    """The marked snippets of ``page``: the fast ones, then (``slow``) the slow ones."""
    found = [(bool(m.group(1)), m.group(2)) for m in _SNIPPET.finditer((DOCS / page).read_text())]
    return [code for is_slow, code in found if not is_slow] + ([code for is_slow, code in found if is_slow] if slow else [])


def run(page: str, codes: list[str]) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.replace('.', '_').replace('-', '_')}"}
    for i, code in enumerate(codes):
        try:
            exec(compile(code, f"{page} snippet {i + 1}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{page}, snippet {i + 1} failed: {type(exc).__name__}: {exc}\n{code}") from exc


@pytest.mark.parametrize("page", PAGES)
def test_fast_snippets_run(page: str) -> None:
    codes = snippets(page, slow=False)
    assert codes, f"no marked snippet in docs/{page}"
    run(page, codes)


@pytest.mark.slow
@pytest.mark.onnx
def test_slow_snippets_run() -> None:
    """paths.md's export_path example: a real ONNX export (about 20 s on 2 cores)."""
    codes = snippets("paths.md", slow=True)
    assert len(codes) > len(snippets("paths.md", slow=False))
    run("paths.md", codes)


def test_every_python_snippet_of_paths_md_is_run() -> None:
    """paths.md promises that all its snippets run; only the export_path signature is exempt."""
    text = (DOCS / "paths.md").read_text()
    total = text.count("```python")
    signature = text.count("```python\nfrom codenn_adapters.onnx_export import export_path\n\nresult = export_path(\n")
    assert len(snippets("paths.md", slow=True)) == total - signature


# -- codenn.contracts.splitters.stage_cuts --------------------------------------------------------------
def test_stage_cuts_order() -> None:
    assert stage_cuts([False, False, True, False, True, False, False]) == [5, 3, 1]
    assert stage_cuts([True, False, True, False], head_cut=False) == [1]  # unit 0's flag is ignored
    assert stage_cuts([False, True, False, True]) == [2, 0]  # a stage start just before the head: no repeat
    assert stage_cuts([]) == [] and stage_cuts([True]) == []


def test_builtin_splitters_keep_their_cuts() -> None:
    """MobileNetV2 and ResNet18 (which use codenn.contracts.splitters.stage_cuts) cut where they always did."""
    import torchvision

    from codenn_plugins.mobilenet import MobileNetV2Splitter
    from codenn_plugins.resnet import ResNetSplitter

    mnv2, rn = torchvision.models.mobilenet_v2(), torchvision.models.resnet18()
    assert MobileNetV2Splitter().preferred_cuts(mnv2) == [18, 13, 6, 3, 1]
    assert ResNetSplitter().preferred_cuts(rn) == [8, 6, 4, 2, 0]
    assert [n for n, _ in ResNetSplitter().split(rn, 6)] == [
        "stem", "layer1.0..layer1.1", "layer2.0..layer2.1", "layer3.0..layer3.1", "layer4.0..layer4.1", "head"]


def test_stage_cuts_in_a_unit_splitter() -> None:
    class Chain(UnitSplitter):
        name = "chain"

        def handles(self, model: nn.Module) -> bool:
            return True

        def units(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
            return [(f"u{i}", m) for i, m in enumerate(model.children())]

        def preferred_cuts(self, model: nn.Module) -> list[int]:
            return stage_cuts([False, False, True, False, False])

    model = nn.Sequential(*(nn.Identity() for _ in range(5)))
    assert [n for n, _ in Chain().split(model, 2)] == ["u0..u3", "u4"]
    assert [n for n, _ in Chain().split(model, 3)] == ["u0..u1", "u2..u3", "u4"]


# -- check_link_factory: batch and mode ----------------------------------------------------------
class _BatchNormLinks:
    @hookimpl
    def codenn_register_link_factories(self, register: Callable[..., None]) -> None:
        register("bn_flat", lambda src, dst, **o: nn.Sequential(nn.Linear(src.numel, dst.numel), nn.BatchNorm1d(dst.numel)))
        register("bn_1x1", lambda src, dst, **o: nn.Sequential(nn.Conv2d(src.channels, dst.channels, 1),
                                                               nn.BatchNorm2d(dst.channels)))
        register("needs_batch", lambda src, dst, **o: _NeedsBatch(src, dst, o.get("batch")))


class _NeedsBatch(nn.Module):
    """A link that takes a factory option called ``batch``: it must reach the factory."""

    def __init__(self, src: BoundarySpec, dst: BoundarySpec, batch: object) -> None:
        super().__init__()
        if batch != "kept":
            raise ValueError(f"option batch={batch!r} did not reach the factory")
        self.fc = nn.Linear(src.numel, dst.numel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_check_link_factory_trains_batch_norm_links_on_a_real_batch() -> None:
    plugins = create_plugins(load_entry_points=False, extra=[_BatchNormLinks()])
    assert LINK_CHECK_BATCH >= 2
    flat = (BoundarySpec((32,), layout="NC"), BoundarySpec((10,), layout="NC"))
    one = (BoundarySpec((16, 1, 1)), BoundarySpec((8, 1, 1)))
    check_link_factory("bn_flat", [flat], plugins=plugins)
    check_link_factory("bn_1x1", [one], plugins=plugins)
    check_link_factory("needs_batch", [flat], plugins=plugins, batch="kept")
    # what the fixed batch avoids: batch norm in train mode on a batch of one
    link = nn.Sequential(nn.Linear(32, 10), nn.BatchNorm1d(10)).train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        link(torch.randn(1, 32))


def test_check_link_factory_still_fails_a_dead_parameter() -> None:
    class Dead:
        @hookimpl
        def codenn_register_link_factories(self, register: Callable[..., None]) -> None:
            register("dead", lambda src, dst, **o: _DeadLink(src.numel, dst.numel))

    with pytest.raises(ConformanceError, match="no gradient"):
        check_link_factory("dead", [(BoundarySpec((4,), layout="NC"), BoundarySpec((3,), layout="NC"))],
                           plugins=create_plugins(load_entry_points=False, extra=[Dead()]))


class _DeadLink(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.used, self.unused = nn.Linear(n_in, n_out), nn.Linear(n_in, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)
