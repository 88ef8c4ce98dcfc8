"""The adapters' commands, added to ``codenn`` through the ``codenn_register_commands`` hook.

The core's command line never imports an adapter: ``codenn export``, ``codenn serve-host`` and
``codenn serve`` reach it the way a third-party plugin's commands would (entry point
``commands`` in codenn's own pyproject). Each command imports its heavy dependencies (onnx,
fastapi, uvicorn, ray) only when it runs.
"""

from __future__ import annotations

import click

from codenn import hookimpl
from codenn_adapters.commands.export import export_cmd
from codenn_adapters.commands.serve import serve_cmd, serve_host_cmd


@hookimpl
def codenn_register_commands(cli: click.Group) -> None:
    for command in (export_cmd, serve_host_cmd, serve_cmd):
        cli.add_command(command)
