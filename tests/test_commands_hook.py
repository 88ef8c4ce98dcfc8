"""codenn_register_commands: plugins add CLI commands; the core's CLI never imports an adapter."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from codenn import DuplicateNameError, PluginError, hookimpl
from codenn.cli import PluginCommands, cli, friendly
from codenn.errors import ConfigError


def _group(plugins) -> PluginCommands:
    @click.group(cls=PluginCommands, plugins=plugins)
    def root() -> None:
        """test root"""

    @root.command("search")
    def search() -> None:
        click.echo("core search")

    return root


class Hello:
    @hookimpl
    def codenn_register_commands(self, cli):
        @cli.command("hello")
        @click.argument("name")
        @friendly
        def hello(name: str) -> None:
            """Say hello."""
            if name == "bad":
                raise ConfigError(f"name {name!r} is not allowed; use any other")
            click.echo(f"hello {name}")


def test_builtin_adapter_commands_come_from_the_commands_plugin(plugins) -> None:
    registry = plugins.commands
    assert {"export", "serve-host", "serve"} <= set(registry.names())
    assert {registry.owner(n) for n in ("export", "serve-host", "serve")} == {"commands"}
    out = CliRunner().invoke(cli, ["--help"])
    assert out.exit_code == 0
    for name in ("export", "serve-host", "serve", "search", "train"):
        assert f"  {name} " in out.output
    info = {i.name: i for i in plugins.info()}
    assert info["commands"].registered == {"commands": ("export", "serve-host", "serve")}


def test_a_plugin_command_runs_and_its_errors_are_friendly(bare_plugins) -> None:
    bare_plugins.register(Hello(), name="hello-plugin")
    root = _group(bare_plugins)
    runner = CliRunner()
    assert runner.invoke(root, ["hello", "ada"]).output == "hello ada\n"
    bad = runner.invoke(root, ["hello", "bad"])
    assert bad.exit_code == 1 and "name 'bad' is not allowed" in bad.output and "Traceback" not in bad.output
    assert "hello" in runner.invoke(root, ["--help"]).output
    assert runner.invoke(root, ["search"]).output == "core search\n"
    assert bare_plugins.commands.owner("hello") == "hello-plugin"


def test_two_plugins_with_one_command_name_are_refused(bare_plugins) -> None:
    class Again:
        @hookimpl
        def codenn_register_commands(self, cli):
            @cli.command("hello")
            def hello() -> None:
                pass

    bare_plugins.register(Hello(), name="first")
    bare_plugins.register(Again(), name="second")
    with pytest.raises(DuplicateNameError, match="'second' registered the command 'hello'.*'first'"):
        bare_plugins.commands


def test_a_plugin_cannot_replace_a_core_command(bare_plugins) -> None:
    class Hijack:
        @hookimpl
        def codenn_register_commands(self, cli):
            @cli.command("search")
            def search() -> None:
                click.echo("hijacked")

    bare_plugins.register(Hijack(), name="hijack")
    root = _group(bare_plugins)
    with pytest.raises(PluginError, match="'hijack' registered the command 'search', which codenn itself provides"):
        root.list_commands(click.Context(root))


def test_a_failing_commands_hook_names_the_plugin(bare_plugins) -> None:
    class Broken:
        @hookimpl
        def codenn_register_commands(self, cli):
            raise RuntimeError("no click for you")

    bare_plugins.register(Broken(), name="broken")
    with pytest.raises(PluginError, match="'broken' failed in codenn_register_commands: RuntimeError: no click"):
        bare_plugins.commands
