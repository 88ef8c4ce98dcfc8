"""The example plugin passes codenn's conformance kit (codenn.testing).

These tests use a plugin set holding only this plugin, so they run from a source checkout
(``python -m pytest`` in the project root puts the package on sys.path) as well as installed.
One test checks the entry point and is skipped when the distribution is not installed.
"""

from __future__ import annotations

from importlib import metadata

import codenn_example_plugin as plugin
import pytest
import torch

from codenn import (
    BoundaryMismatchError,
    BoundarySpec,
    ComposedPath,
    ConfigError,
    Plugins,
    Service,
    build_link,
    create_plugins,
)
from codenn.testing import (
    check_link_factory,
    check_path_trains_links_only,
    check_service_frozen,
    check_splitter,
)

INPUT = (3, 32, 32)


@pytest.fixture
def plugins() -> Plugins:
    """Only this plugin: no dependence on what else is installed."""
    return create_plugins(load_entry_points=False, extra=[plugin])


@pytest.fixture
def service(plugins: Plugins) -> Service:
    torch.manual_seed(0)
    return Service("tiny", plugin.TinyConvNet(num_classes=10), input_shape=INPUT, plugins=plugins)


def test_splitter_conformance() -> None:
    splitter = plugin.TinyConvNetSplitter()
    worst = check_splitter(splitter, lambda: plugin.TinyConvNet(num_classes=10), input_shape=INPUT,
                           block_counts=range(1, 8))
    assert max(worst.values()) <= 1e-5


def test_splitter_conformance_other_widths() -> None:
    check_splitter(plugin.TinyConvNetSplitter(),
                   lambda: plugin.TinyConvNet(num_classes=3, widths=(8, 12), convs_per_stage=3),
                   input_shape=(3, 24, 24))


def test_default_split_is_stages_and_head(service: Service) -> None:
    assert service.splitter_name == "tiny_convnet"
    assert [b.name for b in service.blocks] == [
        "stage1.conv1..stage1.conv2", "stage2.conv1..stage2.conv2", "stage3.conv1..stage3.conv2", "head",
    ]
    assert [b.shape for b in service.boundaries] == [(16, 32, 32), (32, 16, 16), (64, 8, 8), (10,)]
    # codenn.contracts.splitters.stage_cuts: before the head (after unit 5), then the stage ends, deepest first
    assert plugin.TinyConvNetSplitter().preferred_cuts(service.model) == [5, 3, 1]
    check_service_frozen(service)


def test_link_factory_conformance(plugins: Plugins) -> None:
    pairs = [
        (BoundarySpec((16, 32, 32)), BoundarySpec((32, 16, 16))),  # shrink: adaptive avg pool
        (BoundarySpec((32, 16, 16)), BoundarySpec((16, 32, 32))),  # grow: bilinear
        (BoundarySpec((24, 14, 14)), BoundarySpec((40, 6, 6))),  # non-integer ratio
        (BoundarySpec((8, 7, 7)), BoundarySpec((8, 7, 7))),  # same size
    ]
    check_link_factory("depthwise_separable", pairs, plugins=plugins)
    check_link_factory("depthwise_separable", pairs[:1], plugins=plugins, kernel=5, norm=True,
                       activation="none", resample="interpolate")


def test_link_factory_rejects_other_layouts_and_bad_options(plugins: Plugins) -> None:
    with pytest.raises(BoundaryMismatchError, match="NCHW boundaries only"):
        build_link(BoundarySpec((64, 8, 8)), BoundarySpec((10,), layout="NC"), "depthwise_separable",
                   plugins=plugins)
    with pytest.raises(ConfigError, match="unknown option"):
        build_link(BoundarySpec((8, 4, 4)), BoundarySpec((8, 4, 4)), "depthwise_separable",
                   plugins=plugins, width=3)
    with pytest.raises(ConfigError, match="upsampling"):
        build_link(BoundarySpec((8, 4, 4)), BoundarySpec((8, 8, 8)), "depthwise_separable",
                   plugins=plugins, resample="pool")


def test_skip_path_trains_links_only(service: Service, plugins: Plugins) -> None:
    before = service.fingerprint()
    path = ComposedPath("tiny[:1] > tiny[2:]", [service], link="depthwise_separable", plugins=plugins)
    assert isinstance(path.links[0], plugin.DepthwiseSeparableLink)
    check_path_trains_links_only(path)
    assert service.fingerprint() == before


def test_entry_point_registers_both() -> None:
    try:
        dist = metadata.distribution("codenn-example-plugin")
    except metadata.PackageNotFoundError:
        pytest.skip("codenn-example-plugin is not installed (pip install -e .)")
    eps = [ep for ep in dist.entry_points if ep.group == "codenn"]
    assert [(ep.name, ep.value) for ep in eps] == [("example", "codenn_example_plugin")]
    everything = create_plugins()
    assert everything.splitters.owner("tiny_convnet") == "example"
    assert everything.link_factories.owner("depthwise_separable") == "example"
