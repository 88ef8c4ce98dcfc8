"""A host provider's server for the tests: ``python host_proc.py FOLDER PORT`` (127.0.0.1 only).

Builds the host's tiny service from ``FOLDER/host.safetensors``, one HostSegment from
``FOLDER/segment.json`` and ``FOLDER/links.safetensors`` (host-side links only), and serves it
with ``codenn_adapters.host_server`` under uvicorn. Not a test module (pytest collects test_*).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path as FsPath

import torch
from safetensors.torch import load_file

from codenn import Service
from codenn.config.server import ServerConfig
from codenn.model.blocks import BoundarySpec
from codenn.paths.links import build_link
from codenn.paths.spec import PathSpec
from codenn.remote.access import load_access
from codenn.remote.host import resume_checkpoints
from codenn.remote.segment import HostSegment
from codenn_adapters.host_server import create_app, serve
from tiny import TinyCNN, tiny_plugins


def main(folder: str, port: int) -> None:
    torch.set_num_threads(1)
    root = FsPath(folder)
    cfg = json.loads((root / "segment.json").read_text())
    plugins = tiny_plugins()
    model = TinyCNN(cfg["num_classes"], width=cfg["width"])
    model.load_state_dict(load_file(str(root / "host.safetensors")))
    host = Service("host", model.eval(), input_shape=(3, 16, 16), plugins=plugins)
    src, dst = BoundarySpec.from_dict(cfg["input_spec"]), BoundarySpec.from_dict(cfg["output_spec"])
    seg_spec = PathSpec.parse(cfg["spec"]).segments[1]
    hin, stop = seg_spec.start, seg_spec.end(host.num_blocks)
    entry = build_link(src, host.card.input_of(hin), "conv1x1", plugins=plugins)
    exit_ = build_link(host.card.output_of(stop - 1), dst, "conv1x1", plugins=plugins)
    seg = HostSegment(cfg["spec"], host, entry, exit_, input_spec=src, output_spec=dst,
                      lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    seg.load_link_state(load_file(str(root / "links.safetensors")))
    save_dir = cfg.get("save_dir")
    if save_dir and cfg.get("resume"):
        resume_checkpoints([seg], save_dir)
    config = ServerConfig(port=port, max_bytes=cfg["max_bytes"], save_dir=save_dir,
                          checkpoint_every=cfg.get("checkpoint_every", 20), **cfg.get("server", {}))
    serve(create_app([seg], tokens=load_access(root / "tokens.json"), config=config), config, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
