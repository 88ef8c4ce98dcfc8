"""Shared pieces of the transport / host-server / split-training tests.

The tiny scenario is built once per pytest process (every test file that needs it shares it),
and a real host server runs as a uvicorn subprocess on 127.0.0.1 only.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from codenn.config.train import TrainConfig
from codenn.paths.composed import ComposedPath
from codenn.remote.segment import HostSegment
from codenn.train.data import tensors
from codenn.train.features import FeatureCache
from tiny import tiny_scenario

SPEC = "local[:1] > host[1:3] > local[3:]"
TOKENS = {"local": "local-provider-token-0123", "other": "other-provider-token-4567"}
LR, WD = 3e-3, 1e-2
CONFIG = TrainConfig(epochs=1, batch_size=32, lr=LR, weight_decay=WD, progress=False, seed=3)
SAMPLES = 160  # 5 steps per epoch


@dataclass
class Tiny:
    local: object
    host: object
    plugins: object
    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor

    @property
    def services(self) -> dict[str, object]:
        return {"local": self.local, "host": self.host}

    def path(self, spec: str = SPEC) -> ComposedPath:
        torch.manual_seed(7)
        return ComposedPath(spec, self.services, link="conv1x1", plugins=self.plugins)

    def segment(self, path: ComposedPath) -> HostSegment:
        return HostSegment.from_path(path, lr=LR, weight_decay=WD)

    def local_cache(self) -> FeatureCache:
        return FeatureCache({"local": self.local}, self.x)

    def full_cache(self) -> FeatureCache:
        return FeatureCache(self.services, self.x)


@functools.lru_cache(maxsize=1)
def tiny() -> Tiny:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one thread is several times faster here
    try:
        local, host, splits, plugins = tiny_scenario()
    finally:
        torch.set_num_threads(threads)
    x, y = tensors(splits.train)
    xt, _ = tensors(splits.test)
    return Tiny(local, host, plugins, x[:SAMPLES], y[:SAMPLES], xt[:8])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HostProcess:
    """``tests/host_proc.py`` in a subprocess on 127.0.0.1, serving one segment of ``path``."""

    def __init__(self, t: Tiny, path: ComposedPath, folder: Path, *, max_bytes: int = 1 << 20,
                 save_dir: Path | None = None, checkpoint_every: int = 20, tokens: dict | None = None,
                 server: dict | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.t, self.path, self.max_bytes = t, path, max_bytes
        seg = t.segment(path)
        save_file({k: v.contiguous() for k, v in t.host.model.state_dict().items()}, str(folder / "host.safetensors"))
        save_file(seg.link_state(), str(folder / "links.safetensors"))
        (folder / "tokens.json").write_text(json.dumps(TOKENS if tokens is None else tokens))
        head = t.host.model[-1][-1]
        (folder / "segment.json").write_text(json.dumps({
            "spec": str(path.spec), "num_classes": head.out_features, "width": head.in_features // 4,
            "input_spec": path.link_specs[0][0].to_dict(), "output_spec": path.link_specs[1][1].to_dict(),
            "lr": LR, "weight_decay": WD, "max_bytes": max_bytes,
            "save_dir": None if save_dir is None else str(save_dir), "checkpoint_every": checkpoint_every,
            "server": server or {},
        }))
        self.name = seg.name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = folder
        self._start()

    def _start(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
        self.log = open(self.folder / "server.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "host_proc.py"), str(self.folder), str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is saved beyond the last checkpoint."""
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def restart(self, *, resume: bool = True) -> None:
        """Start again on the same port (from the original links, plus the checkpoints with ``resume``)."""
        cfg = json.loads((self.folder / "segment.json").read_text())
        (self.folder / "segment.json").write_text(json.dumps({**cfg, "resume": resume}))
        self._start()

    def wait_ready(self, timeout: float = 90.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"host server exited: {(self.folder / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"host server not ready in {timeout} s: {(self.folder / 'server.log').read_text()[-3000:]}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def clone_links(src: ComposedPath, dst: ComposedPath) -> None:
    dst.links.load_state_dict(copy.deepcopy(src.links.state_dict()))
