"""One registry type for every named contribution: entries, owners, and Registry.build's checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from codenn import BoundarySpec, ConfigError, Entry, PluginError, Registry, UnknownNameError, build_link, hookimpl


def test_entries_record_name_object_description_and_owner() -> None:
    registry: Registry[object] = Registry("widget", returns=nn.Module)
    registry.add("lin", nn.Linear, "p1", "a linear layer")
    assert registry.entry("lin") == Entry("lin", nn.Linear, "a linear layer", "p1")
    assert registry.get("lin") is nn.Linear and registry.owner("lin") == "p1"
    assert registry.names() == ["lin"] and registry.by_owner("p1") == ["lin"] and "lin" in registry
    with pytest.raises(UnknownNameError, match="widget 'conv' not found. Available names: 'lin'"):
        registry.get("conv")


def test_build_checks_options_against_the_signature() -> None:
    registry: Registry[object] = Registry("widget", returns=nn.Module)
    registry.add("lin", lambda n_in, n_out, bias=True: nn.Linear(n_in, n_out, bias=bias), "p1")
    layer = registry.build("lin", 3, 2, bias=False)
    assert isinstance(layer, nn.Linear) and layer.bias is None
    assert layer(torch.randn(4, 3)).shape == (4, 2)
    wanted = r"widget 'lin' \(plugin 'p1'\) rejected options \['baias'\].*lin\(n_in, n_out, bias=True\)"
    with pytest.raises(ConfigError, match=wanted):
        registry.build("lin", 3, 2, baias=False)


def test_build_refuses_the_wrong_product_naming_the_plugin() -> None:
    registry: Registry[object] = Registry("widget", returns=nn.Module, returns_hint="a torch.nn.Module")
    registry.add("none", lambda: None, "sloppy")
    wanted = r"widget 'none' \(plugin 'sloppy'\) returned NoneType; it must return a torch.nn.Module"
    with pytest.raises(PluginError, match=wanted):
        registry.build("none")


def test_the_same_mistake_is_a_plugin_error_for_links_runtimes_and_transports(bare_plugins) -> None:
    class Sloppy:
        @hookimpl
        def codenn_register_link_factories(self, register):
            register("numbers", lambda src, dst: 42)

        @hookimpl
        def codenn_register_runtimes(self, register):
            register("nothing", lambda model: "not a runtime")

        @hookimpl
        def codenn_register_transports(self, register):
            register("nowhere", lambda **options: object())

    bare_plugins.register(Sloppy(), name="sloppy")
    spec = BoundarySpec((4, 8, 8))
    with pytest.raises(PluginError, match="link factory 'numbers' .plugin 'sloppy'. returned int"):
        build_link(spec, spec, "numbers", plugins=bare_plugins)
    with pytest.raises(PluginError, match="runtime 'nothing' .plugin 'sloppy'. returned str"):
        bare_plugins.runtimes.build("nothing", nn.Identity())
    with pytest.raises(PluginError, match="transport 'nowhere' .plugin 'sloppy'. returned object"):
        bare_plugins.transports.build("nowhere")


def test_register_with_a_non_string_description_is_refused(bare_plugins) -> None:
    class Odd:
        @hookimpl
        def codenn_register_objectives(self, register):
            register("odd", lambda m, la, model: 0.0, description=3)

    bare_plugins.register(Odd(), name="odd")
    with pytest.raises(PluginError, match="'odd' registered the objective 'odd' with description 3"):
        bare_plugins.objectives
