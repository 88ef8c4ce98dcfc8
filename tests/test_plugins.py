"""The plugin system: entry points, every hook, load errors, duplicates, misspelled hooks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from codenn import BlockSplitter, PluginError, UnitSplitter, UnknownNameError, build_link, hookimpl
from codenn.contracts.plugins import create_plugins
from codenn.errors import DuplicateNameError
from codenn.model.blocks import BoundarySpec

BUILTIN = {"alexnet", "mobilenet", "resnet", "timm", "links"}


def _fake_dist(root: Path, name: str, entry_points: str, module: str | None = None, code: str = "") -> None:
    """A minimal installed distribution on sys.path: dist-info with entry points (+ a module)."""
    info = root / f"{name}-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(entry_points)
    if module:
        (root / f"{module}.py").write_text(code)


class TinySplitter(UnitSplitter):
    name = "tiny"
    architectures = ("tiny",)
    default_blocks = 2

    def handles(self, model: nn.Module) -> bool:
        return isinstance(model, nn.Sequential) and getattr(model, "is_tiny", False)

    def units(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        return [(f"layer{i}", m) for i, m in enumerate(model)]


def test_builtin_plugins_load_through_entry_points(plugins) -> None:
    infos = {i.name: i for i in plugins.info()}
    assert BUILTIN <= set(infos)
    assert infos["alexnet"].distribution == "codenn"
    assert infos["alexnet"].version
    assert {"alexnet", "mobilenet_v2", "mobilenet_v3", "resnet", "timm"} <= set(plugins.splitters.names())
    assert {"conv1x1", "conv3x3", "bottleneck", "reduced5", "reduced25", "paper"} <= set(plugins.link_factories.names())
    assert infos["links"].registered["link_factories"]
    assert plugins.splitters.owner("alexnet") == "alexnet"


def test_register_splitters_hook(bare_plugins) -> None:
    class Plugin:
        @hookimpl
        def codenn_register_splitters(self, register):
            register(TinySplitter())

    bare_plugins.register(Plugin(), name="tiny-plugin")
    splitter = bare_plugins.splitters.get("tiny")
    assert bare_plugins.splitters.owner("tiny") == "tiny-plugin"
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    model.is_tiny = True
    blocks = splitter.split(model, 2)
    x = torch.randn(2, 3, 8, 8)
    y = x
    for _, b in blocks:
        y = b(y)
    assert torch.equal(y, model(x))


def test_register_link_factories_hook(bare_plugins) -> None:
    class Plugin:
        @hookimpl
        def codenn_register_link_factories(self, register):
            register("pool1x1", lambda src, dst: nn.Sequential(
                nn.AdaptiveAvgPool2d(dst.shape[1:]), nn.Conv2d(src.channels, dst.channels, 1)),
                description="pool then 1x1 conv")

    bare_plugins.register(Plugin(), name="pool-links")
    assert bare_plugins.link_factories.entry("pool1x1").description == "pool then 1x1 conv"
    link = build_link(BoundarySpec((8, 8, 8)), BoundarySpec((4, 2, 2)), "pool1x1", plugins=bare_plugins)
    assert link(torch.randn(3, 8, 8, 8)).shape == (3, 4, 2, 2)


def test_misspelled_hook_names_the_plugin(bare_plugins) -> None:
    class Plugin:
        @hookimpl
        def codenn_register_spliters(self, register):  # sic
            pass

    with pytest.raises(PluginError, match="typo-plugin.*unknown hook"):
        bare_plugins.register(Plugin(), name="typo-plugin")


def test_duplicate_names_are_rejected_naming_both_plugins(bare_plugins) -> None:
    class A:
        @hookimpl
        def codenn_register_splitters(self, register):
            register(TinySplitter())

    bare_plugins.register(A(), name="first")
    bare_plugins.register(A(), name="second")
    with pytest.raises(DuplicateNameError, match="second.*'tiny'.*first"):
        bare_plugins.splitters


def test_registering_a_non_splitter_is_an_error(bare_plugins) -> None:
    class Plugin:
        @hookimpl
        def codenn_register_splitters(self, register):
            register("not a splitter")

    bare_plugins.register(Plugin(), name="bad")
    with pytest.raises(PluginError, match="'bad'.*BlockSplitter"):
        bare_plugins.splitters


def test_hook_that_raises_names_the_plugin(bare_plugins) -> None:
    class Plugin:
        @hookimpl
        def codenn_register_link_factories(self, register):
            raise RuntimeError("boom")

    bare_plugins.register(Plugin(), name="explodes")
    with pytest.raises(PluginError, match="'explodes'.*boom"):
        bare_plugins.link_factories


def test_plugin_that_fails_to_import_is_named(tmp_path, monkeypatch) -> None:
    _fake_dist(tmp_path, "broken_plugin", "[codenn]\nbroken = broken_plugin_mod\n", "broken_plugin_mod",
               "raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match="'broken'.*failed to import.*missing dependency xyz"):
        create_plugins()
    monkeypatch.setenv("CODENN_DISABLE_PLUGINS", "broken")
    assert "broken" not in {i.name for i in create_plugins().info()}


def test_third_party_entry_point_is_found_with_version(tmp_path, monkeypatch) -> None:
    code = (
        "from codenn import hookimpl\n"
        "from torch import nn\n"
        "@hookimpl\n"
        "def codenn_register_link_factories(register):\n"
        "    register('identity_pool', lambda s, d: nn.Sequential(nn.AdaptiveAvgPool2d(d.shape[1:]),"
        " nn.Conv2d(s.channels, d.channels, 1)))\n"
    )
    _fake_dist(tmp_path, "thirdparty", "[codenn]\nthirdparty = thirdparty_mod\n", "thirdparty_mod", code)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = create_plugins()
    info = {i.name: i for i in plugins.info()}["thirdparty"]
    assert (info.distribution, info.version) == ("thirdparty", "1.2.3")
    assert info.registered == {"link_factories": ("identity_pool",)}


def test_load_plugins_env_limits_what_loads(monkeypatch) -> None:
    monkeypatch.setenv("CODENN_LOAD_PLUGINS", "alexnet,links")
    plugins = create_plugins()
    assert {i.name for i in plugins.info()} == {"alexnet", "links"}
    with pytest.raises(UnknownNameError, match="'resnet' not found. Available names: 'alexnet'"):
        plugins.splitters.get("resnet")


def test_every_hookspec_is_documented() -> None:
    from codenn.contracts import hookspecs

    doc = (Path(__file__).parents[1] / "docs" / "plugin-hooks.md").read_text()
    hooks = [n for n in dir(hookspecs) if n.startswith("codenn_")]
    assert hooks
    for hook in hooks:
        assert f"## `{hook}" in doc, f"{hook} is not documented in docs/plugin-hooks.md"


def test_blocksplitter_is_abstract() -> None:
    with pytest.raises(TypeError):
        BlockSplitter()  # type: ignore[abstract]  # instantiating the ABC is the point


def test_register_objectives_hook(bare_plugins) -> None:
    from codenn.config.cost import CostModel
    from codenn.paths.cost import PathMeasures

    class Plugin:
        @hookimpl
        def codenn_register_objectives(self, register):
            register("latency_only", lambda m, la, model: m.latency_us, description="fastest path wins")

    bare_plugins.register(Plugin(), name="latency-objective")
    entry = bare_plugins.objectives.entry("latency_only")
    m = PathMeasures("p", 0.9, 10.0, 100.0, 50.0, 0.1, 0.1, 1.0, 1.0)
    assert entry.obj(m, 0.9, CostModel()) == 160.0
    assert entry.description == "fastest path wins"
    assert bare_plugins.objectives.owner("latency_only") == "latency-objective"
